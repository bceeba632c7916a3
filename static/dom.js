// Building DOM nodes without innerHTML, so an event's text is never markup.

/** `h("a", {href: "#/"}, "text", child)`: an element with attributes and children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const leaving = [];

/** Runs `cleanup` when the current view is left (timers, live reads). */
export function onLeave(cleanup) { leaving.push(cleanup); }

/** Called by the router before it opens the next view. */
export function leaveView() {
  for (const cleanup of leaving.splice(0)) {
    try { cleanup(); } catch (error) { window.uiErrors?.push(String(error)); }
  }
}

/** Replaces the view's content (`null`, `false` and `undefined` are left out, as in `h`). */
export function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(h("div", {}, ...nodes));
}

/** One formatter for every time shown: `toLocaleString` builds a new one
 * per call, which a live tail of a thousand events a second notices. */
const LOCAL = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });

/** Local time, with UTC on hover. */
export function time(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return h("time", { datetime: iso, title: date.toISOString() }, LOCAL.format(date));
}

export function bytes(count) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

/** The hash of a view: `route("stream", name)` → `#/stream/name`. */
export function route(...parts) {
  return "#/" + parts.map((part) => encodeURIComponent(part)).join("/");
}

/** A version 4 UUID; `crypto.randomUUID` exists only on https or localhost. */
export function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
