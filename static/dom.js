// Building DOM nodes without innerHTML, so an event's text is never markup.

/** `h("a", {href: "#/"}, "text", child)`: an element with attributes and children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** Replaces the view's content (`null`, `false` and `undefined` are left out, as in `h`). */
export function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(h("div", {}, ...nodes));
}

/** Local time, with UTC on hover. */
export function time(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return h("time", { datetime: iso, title: date.toISOString() }, date.toLocaleString());
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

/** Work to undo when the next view opens (timers, connections), registered by the view that started it. */
const leaving = [];
export function onLeave(cleanup) { leaving.push(cleanup); }
/** Runs and forgets every `onLeave` cleanup: the router calls it before each view. */
export function leave() { for (const cleanup of leaving.splice(0)) cleanup(); }
