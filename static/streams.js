// `#/streams`: every stream, newest first, from the `$streams` feed and
// paged by its links; `#/streams/prefix/{p}[/{after}]`: the streams whose
// names start with `p` (`Order-` for a category), in name order, paged by
// name through `GET /streams?prefix=` (one range scan a page, however many
// streams there are). Both are for admins: they read `$streams`.

import { call, streamPath, ATOM_JSON } from "./api.js";
import { h, show, route, time } from "./dom.js";

const PAGE = 50;

export async function streams(mode, ...args) {
  if (mode === "prefix") return byPrefix(args[0] ?? "", args[1]);
  return newest(mode === "page" ? args : []);
}

function filterForm(prefix) {
  const input = h("input", { name: "prefix", value: prefix, placeholder: "name prefix, e.g. Order-", "aria-label": "Name prefix", id: "stream-filter" });
  const submit = (event) => {
    event.preventDefault();
    location.hash = input.value ? route("streams", "prefix", input.value) : route("streams");
  };
  return h("form", { id: "streams-filter", class: "toolbar", onsubmit: submit }, input, h("button", { type: "submit" }, "Filter"),
    prefix ? h("a", { href: route("streams") }, "Newest first") : null);
}

function table(rows, second) {
  return [
    h("table", { id: "streams" }, h("thead", {}, h("tr", {}, h("th", {}, "Stream"), h("th", {}, second))), h("tbody", {}, rows)),
    rows.length ? null : h("p", { class: "muted" }, "No streams."),
  ];
}

async function newest(page) {
  const path = streamPath("$streams", page.map(encodeURIComponent).join("/")) + "?embed=rich";
  const feed = await call(path, { accept: ATOM_JSON });
  const rows = feed.entries.map((entry) => {
    const name = entry.title.slice(entry.title.indexOf("@") + 1);
    return h("tr", {}, h("td", {}, h("a", { href: route("stream", name) }, name)), h("td", {}, time(entry.updated)));
  });
  const links = Object.fromEntries((feed.links || []).map((link) => [link.relation, link.uri]));
  const pageHash = (uri) => {
    const [, , , ...rest] = new URL(uri, location.href).pathname.split("/");
    return "#/streams/page/" + rest.join("/");
  };
  const pager = h("nav", { class: "pager", id: "pager", "aria-label": "Pages" },
    [["first", "Newest"], ["next", "Older"], ["previous", "Newer"], ["last", "Oldest"]].map(([relation, label]) =>
      links[relation] ? h("a", { rel: relation, href: pageHash(links[relation]) }, label) : h("span", { class: "muted" }, label)));
  show(h("h1", {}, "Streams"), filterForm(""), pager, table(rows, "Created"));
}

async function byPrefix(prefix, after) {
  const query = new URLSearchParams({ prefix, count: String(PAGE) });
  if (after) query.set("after", after);
  const listing = await call(`/streams?${query}`, { accept: "application/json" });
  const rows = listing.streams.map((stream) => h("tr", {},
    h("td", {}, h("a", { href: route("stream", stream.name) }, stream.name)),
    h("td", {}, stream.hardDeleted ? "hard-deleted" : stream.deleted ? "deleted"
      : stream.lastEventNumber === null ? "no events" : `#${stream.lastEventNumber}`)));
  const last = listing.streams.at(-1)?.name;
  const pager = h("nav", { class: "pager", id: "pager", "aria-label": "Pages" },
    after ? h("a", { href: route("streams", "prefix", prefix) }, "First") : h("span", { class: "muted" }, "First"),
    listing.next && last ? h("a", { rel: "next", href: route("streams", "prefix", prefix, last) }, "Next") : h("span", { class: "muted" }, "Next"));
  show(h("h1", {}, "Streams ", h("span", { class: "muted" }, prefix ? `starting “${prefix}”` : "by name")), filterForm(prefix), pager, table(rows, "Last event"));
}
