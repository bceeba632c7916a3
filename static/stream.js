// `#/stream/{s}[/{start}/{direction}/{count}]`: a stream page by page,
// with the feed's own first/previous/next/last links.

import { call, streamPath, pathOf, ATOM_JSON } from "./api.js";
import { h, show, route, time } from "./dom.js";

const PAGER = [["first", "First"], ["previous", "Previous"], ["next", "Next"], ["last", "Last"]];

/** A feed link's URL → this view's hash for the same page. */
function pageHash(uri) {
  const [, , name, ...rest] = new URL(uri, location.href).pathname.split("/");
  return "#/stream/" + [name, ...rest].join("/");
}

export async function stream(name, ...page) {
  const path = streamPath(name, page.map(encodeURIComponent).join("/")) + "?embed=body";
  const feed = await call(path, { accept: ATOM_JSON });
  const rows = feed.entries.map((entry) => h("tr", {},
    h("td", {}, h("a", { href: route("event", entry.streamId, entry.eventNumber) }, entry.eventNumber)),
    h("td", {}, entry.eventType),
    h("td", {}, time(entry.updated)),
    h("td", { class: "mono" }, entry.eventId)));
  const links = Object.fromEntries((feed.links || []).map((link) => [link.relation, link.uri]));
  const pager = h("nav", { class: "pager", id: "pager" }, PAGER.map(([relation, label]) =>
    links[relation] ? h("a", { rel: relation, href: pageHash(links[relation]) }, label) : h("span", { class: "muted" }, label)));
  const raw = h("pre", { id: "page-json", hidden: true }, JSON.stringify(feed, null, 2));
  show(
    h("h1", {}, name),
    h("p", {},
      h("a", { href: route("tail", name) }, "Live tail"), " · ",
      h("a", { href: route("append", name) }, "Append"), " · ",
      h("button", { type: "button", onclick: () => { raw.hidden = !raw.hidden; } }, "Page JSON"), " · ",
      h("a", { href: pathOf(path.replace("embed=body", "format=atom")) }, "Atom")),
    pager,
    h("table", { id: "events" },
      h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Type"), h("th", {}, "Time"), h("th", {}, "Id"))),
      h("tbody", {}, rows)),
    rows.length ? null : h("p", { class: "muted" }, "No events on this page."),
    raw);
}
