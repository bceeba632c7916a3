// A JSON value as a collapsible, highlighted tree: objects and arrays are
// `<details>` (keyboard-operable, open for the first levels), leaves are
// spans classed by type. Built with `h`, so no value is ever markup.

import { h } from "./dom.js";

/** Levels shown open; deeper ones start collapsed. */
const OPEN_LEVELS = 2;

export function jsonTree(value, depth = 0) {
  if (value === null) return h("span", { class: "j-null" }, "null");
  if (Array.isArray(value)) {
    return branch("[", "]", value.map((item, index) => [String(index), item]), depth, false);
  }
  if (typeof value === "object") return branch("{", "}", Object.entries(value), depth, true);
  if (typeof value === "string") return h("span", { class: "j-string" }, JSON.stringify(value));
  return h("span", { class: typeof value === "number" ? "j-number" : "j-bool" }, String(value));
}

function branch(open, close, members, depth, keyed) {
  if (!members.length) return h("span", {}, open + close);
  const items = members.map(([key, item]) => h("li", {},
    keyed ? [h("span", { class: "j-key" }, JSON.stringify(key)), ": "] : null,
    jsonTree(item, depth + 1)));
  return h("details", { class: "j-branch", open: depth < OPEN_LEVELS },
    h("summary", {}, open, h("span", { class: "muted" }, ` ${members.length} ${keyed ? "keys" : "items"} `)),
    h("ul", {}, items),
    close);
}

/** Bytes as a hex dump: offset, 16 bytes in hex, and their printable ASCII. */
export function hexDump(bytes) {
  const lines = [];
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const row = bytes.subarray(offset, offset + 16);
    const hex = [...row].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const text = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${text}`);
  }
  return lines.join("\n");
}
