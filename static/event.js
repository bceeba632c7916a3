// `#/event/{s}/{n}`: one event. Data and metadata as a JSON tree (raw
// text when not JSON, a hex dump when not text), copy buttons, and links
// to the event's place in its stream, `$all`, `$ce-` and `$et-`.

import { call, streamPath, headersFor, check, ATOM_JSON } from "./api.js";
import { h, show, route, time } from "./dom.js";
import { jsonTree, hexDump } from "./json-tree.js";

export async function event(name, number) {
  const path = streamPath(name, encodeURIComponent(number));
  const response = await check(await fetch(path, { headers: headersFor(ATOM_JSON), cache: "no-cache" }));
  const position = response.headers.get("ES-Position");
  const entry = await response.json();
  const content = entry.content || {};
  const stream = content.eventStreamId ?? name;
  const eventNumber = content.eventNumber ?? number;
  // JSON data comes as an object or array; anything else (v5 shows other
  // data as "") is read again as the bytes stored.
  const data = typeof content.data === "object" && content.data !== null ? { json: content.data } : await payload(path);
  const places = [
    h("a", { href: route("stream", stream, eventNumber, "backward", "20") }, `${stream} page`),
    position ? h("a", { id: "in-all", href: route("stream", "$all", position, "backward", "20") }, "$all") : null,
    category(stream) ? finder(`$ce-${category(stream)}`, position) : null,
    content.eventType ? finder(`$et-${content.eventType}`, position) : null,
  ].filter(Boolean);
  show(
    h("h1", {}, `${content.eventType ?? "Event"} `, h("span", { class: "muted" }, `#${eventNumber}`)),
    h("p", {}, "In ", h("a", { href: route("stream", stream) }, stream), " · ", time(entry.updated), " · ",
      h("code", { id: "event-id" }, content.eventId ?? ""), " ", copyButton("Copy id", () => content.eventId ?? "")),
    h("p", { class: "places" }, "Open at this event: ", places.flatMap((link, i) => (i ? [" · ", link] : [link]))),
    section("Data", "event-data", data),
    content.metadata !== undefined && content.metadata !== "" ? section("Metadata", "event-metadata", { json: parsed(content.metadata), text: typeof content.metadata === "string" ? content.metadata : JSON.stringify(content.metadata) }) : null);
}

/** A value from the feed: the JSON it holds, or `undefined` for plain text. */
function parsed(value) {
  if (typeof value !== "string") return value;
  try { return JSON.parse(value); } catch { return undefined; }
}

/** A non-JSON event's stored bytes, as text when they are UTF-8, else as hex. */
async function payload(path) {
  const response = await check(await fetch(path, { headers: headersFor("application/octet-stream") }));
  const bytes = new Uint8Array(await response.arrayBuffer());
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes) };
  } catch {
    return { text: hexDump(bytes), hex: true };
  }
}

function section(title, id, { json, text, hex }) {
  const tree = json !== undefined && typeof json === "object" && json !== null;
  const raw = h("pre", { id, hidden: tree }, tree ? JSON.stringify(json, null, 2) : text);
  const toggle = tree ? h("button", { type: "button", onclick: () => { raw.hidden = !raw.hidden; view.hidden = !raw.hidden; } }, "Raw / tree") : null;
  const view = tree ? h("div", { class: "json-tree", id: `${id}-tree` }, jsonTree(json)) : null;
  return [
    h("h2", {}, title, " ", h("span", { class: "muted" }, hex ? "(binary, hex)" : tree || json !== undefined ? "(JSON)" : "(text)")),
    h("p", { class: "toolbar" }, toggle, copyButton(`Copy ${title.toLowerCase()}`, () => (tree ? JSON.stringify(json, null, 2) : text))),
    view, raw];
}

function copyButton(label, text) {
  const button = h("button", { type: "button" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy refused by the browser";
    }
    setTimeout(() => { button.textContent = label; }, 1500);
  });
  return button;
}

/** The category of a stream, as the server's `$ce-` projection takes it. */
function category(stream) {
  if (stream.startsWith("$")) return null;
  const dash = stream.indexOf("-");
  return dash > 0 ? stream.slice(0, dash) : null;
}

/** A link to `$ce-…`/`$et-…` that, when clicked, finds this event's link in it. */
function finder(system, position) {
  const link = h("a", { href: route("stream", system), class: "finder", id: system.startsWith("$ce-") ? "in-ce" : "in-et" }, system);
  if (!position) return link;
  link.addEventListener("click", async (click) => {
    click.preventDefault();
    link.textContent = `${system} (finding…)`;
    const number = await findLink(system, position).catch(() => null);
    location.hash = number === null ? route("stream", system) : route("stream", system, number, "backward", "20");
  });
  return link;
}

/** The number of the link in `system` whose target sits at `position`:
 * links are in `$all` order, so a binary search over their numbers,
 * reading one resolved link per step (about 20 reads for a million). */
async function findLink(system, position) {
  const head = await call(streamPath(system, "head/backward/1") + "?embed=body");
  const newest = head.entries?.[0];
  if (!newest) return null;
  let low = 0, high = newest.positionEventNumber ?? newest.eventNumber;
  while (low <= high) {
    const middle = Math.floor((low + high) / 2);
    const response = await fetch(streamPath(system, String(middle)), { headers: headersFor(ATOM_JSON) });
    const at = response.ok ? response.headers.get("ES-Position") : null;
    if (at === position) return middle;
    if (at === null || at < position) low = middle + 1; else high = middle - 1;
  }
  return null;
}
