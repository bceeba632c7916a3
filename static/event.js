// `#/event/{s}/{n}`: one event, its data and metadata as pretty JSON.

import { call, streamPath, ATOM_JSON } from "./api.js";
import { h, show, route, time } from "./dom.js";

function pretty(value) {
  if (typeof value !== "string") return JSON.stringify(value, null, 2);
  try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
}

export async function event(name, number) {
  const entry = await call(streamPath(name, encodeURIComponent(number)), { accept: ATOM_JSON });
  const content = entry.content || {};
  show(
    h("h1", {}, `${content.eventType ?? "Event"} `, h("span", { class: "muted" }, `#${content.eventNumber ?? number}`)),
    h("p", {}, "In ", h("a", { href: route("stream", name) }, name), " (",
      h("a", { href: route("stream", name, number, "backward", "20") }, "its page"), ") · ", time(entry.updated), " · ",
      h("code", {}, content.eventId ?? "")),
    h("h2", {}, "Data"),
    h("pre", { id: "event-data" }, pretty(content.data ?? "")),
    content.metadata ? [h("h2", {}, "Metadata"), h("pre", { id: "event-metadata" }, pretty(content.metadata))] : null);
}
