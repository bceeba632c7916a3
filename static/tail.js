// `#/tail/{s}`: new events as they are appended, over Server-Sent Events.
// EventSource cannot send an Authorization header, so the tail reads as
// anonymous: streams only admins may read cannot be tailed here.

import { streamPath } from "./api.js";
import { h, show, route, time } from "./dom.js";

/** The rows kept on screen: older ones are dropped. */
const WINDOW = 200;
let source = null;

export function stopTail() {
  if (source) source.close();
  source = null;
}

export async function tail(name) {
  const body = h("tbody", {});
  const status = h("p", { class: "muted", id: "tail-status" }, "Waiting for events…");
  show(h("h1", {}, "Live tail: ", h("a", { href: route("stream", name) }, name)), status,
    h("table", { id: "tail" }, h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Type"), h("th", {}, "Time"))), body));
  source = new EventSource(streamPath(name));
  let seen = 0;
  source.onmessage = (message) => {
    const entry = JSON.parse(message.data);
    seen++;
    status.textContent = `${seen} events since opened.`;
    body.prepend(h("tr", {},
      h("td", {}, h("a", { href: route("event", entry.streamId, entry.eventNumber) }, entry.eventNumber)),
      h("td", {}, entry.eventType), h("td", {}, time(entry.updated))));
    while (body.children.length > WINDOW) body.lastChild.remove();
  };
  source.onerror = () => {
    if (source?.readyState === EventSource.CLOSED) {
      status.textContent = "The server refused the live tail (a stream that needs a login cannot be tailed here).";
    }
  };
}
