// `#/stream/{s}[/{start}/{direction}/{count}]`: a stream page by page,
// with the feed's own first/previous/next/last links, a jump to an event
// number, the page's raw JSON and Atom, the stream's metadata (editable)
// and its deletion. `$all`, `$ce-…` and `$et-…` are streams here too.

import { call, streamPath, pathOf, ATOM_JSON } from "./api.js";
import { h, show, route, time, bytes } from "./dom.js";
import { metadataPanel, deletePanel } from "./stream-admin.js";

const PAGER = [["first", "First"], ["previous", "Previous"], ["next", "Next"], ["last", "Last"]];
const encoder = new TextEncoder();

/** A feed link's URL → this view's hash for the same page. */
function pageHash(uri) {
  const [, , name, ...rest] = new URL(uri, location.href).pathname.split("/");
  return "#/stream/" + [name, ...rest].join("/");
}

function size(entry) {
  const data = entry.data ?? "";
  return bytes(encoder.encode(typeof data === "string" ? data : JSON.stringify(data)).length);
}

export async function stream(name, ...page) {
  const path = streamPath(name, page.map(encodeURIComponent).join("/")) + "?embed=body";
  const feed = await call(path, { accept: ATOM_JSON });
  const rows = feed.entries.map((entry) => h("tr", {},
    h("td", {}, h("a", { href: route("event", entry.streamId, entry.eventNumber) }, entry.eventNumber)),
    name.startsWith("$") ? h("td", {}, h("a", { href: route("stream", entry.streamId) }, entry.streamId)) : null,
    h("td", {}, entry.eventType),
    h("td", {}, time(entry.updated)),
    h("td", { class: "number" }, size(entry)),
    h("td", { class: "mono" }, entry.eventId)));
  const links = Object.fromEntries((feed.links || []).map((link) => [link.relation, link.uri]));
  const pager = h("nav", { class: "pager", id: "pager", "aria-label": "Pages" }, PAGER.map(([relation, label]) =>
    links[relation] ? h("a", { rel: relation, href: pageHash(links[relation]) }, label) : h("span", { class: "muted" }, label)));
  const raw = h("pre", { id: "page-json", hidden: true }, JSON.stringify(feed, null, 2));
  const jump = h("input", { name: "number", inputmode: "numeric", pattern: "[0-9]+", size: 8, "aria-label": "Event number", placeholder: "event #" });
  const jumpTo = (submit) => {
    submit.preventDefault();
    if (jump.value.trim()) location.hash = route("stream", name, jump.value.trim(), "forward", "20");
  };
  const user = !name.startsWith("$");
  show(
    h("h1", {}, name),
    /^\$(all|ce-|et-)/.test(name) ? allFilter(name) : null,
    h("p", { class: "toolbar" },
      h("a", { href: route("tail", name) }, "Live tail"),
      user ? h("a", { href: route("append", name) }, "Append") : null,
      h("button", { type: "button", id: "show-page-json", onclick: () => { raw.hidden = !raw.hidden; } }, "Page JSON"),
      h("a", { href: pathOf(path.replace("embed=body", "format=atom")) }, "Atom"),
      h("a", { href: pathOf(path.replace("embed=body", "format=json")) }, "JSON")),
    h("div", { class: "toolbar" }, pager,
      name === "$all" ? null : h("form", { id: "jump", onsubmit: jumpTo }, jump, " ", h("button", { type: "submit" }, "Go"))),
    h("table", { id: "events" },
      h("thead", {}, h("tr", {}, h("th", {}, "#"), name.startsWith("$") ? h("th", {}, "Stream") : null,
        h("th", {}, "Type"), h("th", {}, "Time"), h("th", {}, "Size"), h("th", {}, "Id"))),
      h("tbody", {}, rows)),
    rows.length ? null : h("p", { class: "muted" }, "No events on this page."),
    raw,
    name === "$all" ? null : await metadataPanel(name),
    user ? deletePanel(name) : null);
}

/** On `$all` and its projections: open the events of one type (`$et-…`)
 * or one category (`$ce-…`), or all of them. */
function allFilter(name) {
  const type = h("input", { name: "type", placeholder: "event type", "aria-label": "Event type", value: name.startsWith("$et-") ? name.slice(4) : "" });
  const category = h("input", { name: "category", placeholder: "category, e.g. Order", "aria-label": "Category", value: name.startsWith("$ce-") ? name.slice(4) : "" });
  const submit = (event) => {
    event.preventDefault();
    const chosen = type.value.trim() ? `$et-${type.value.trim()}` : category.value.trim() ? `$ce-${category.value.trim()}` : "$all";
    location.hash = route("stream", chosen);
  };
  return h("form", { id: "all-filter", class: "toolbar", onsubmit: submit }, "Only events of type ", type, " or category ", category,
    h("button", { type: "submit" }, "Show"), name === "$all" ? null : h("a", { href: route("stream", "$all") }, "All events"));
}
