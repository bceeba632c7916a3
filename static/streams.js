// `#/streams`: the `$streams` system stream, newest first (admins only).

import { call, streamPath } from "./api.js";
import { h, show, route, time } from "./dom.js";

export async function streams() {
  const page = await call(streamPath("$streams") + "?embed=rich");
  const rows = page.entries.map((entry) => {
    const name = entry.title.slice(entry.title.indexOf("@") + 1);
    return h("tr", {}, h("td", {}, h("a", { href: route("stream", name) }, name)), h("td", {}, time(entry.updated)));
  });
  show(h("h1", {}, "Streams"),
    h("table", { id: "streams" }, h("thead", {}, h("tr", {}, h("th", {}, "Stream"), h("th", {}, "Created"))), h("tbody", {}, rows)),
    rows.length ? null : h("p", { class: "muted" }, "No streams yet."));
}
