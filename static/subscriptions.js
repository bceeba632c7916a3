// `#/subscriptions`: every persistent subscription group with its figures,
// refreshed live (`GET /subscriptions`), and a form that creates a group
// (`PUT /subscriptions/{s}/{g}`). Managing groups takes `$admins` or `$ops`.

import { call } from "./api.js";
import { h, show, route } from "./dom.js";
import { poll } from "./poll.js";
import { orRefusal } from "./rights.js";
import { settingsFields } from "./settings.js";

const JSON_TYPE = "application/json";
const WHO = "$admins and $ops";
const WHAT = "manage persistent subscriptions";

/** Events the group has still to process: last known minus last processed (-1: none). */
export function lag(info) {
  const known = info.lastKnownEventNumber, processed = info.lastProcessedEventNumber;
  return known < 0 ? 0 : Math.max(0, known - processed);
}

/** The path of a group's resource: `groupPath("s", "g", "info")`. */
export function groupPath(stream, group, rest = "") {
  return `/subscriptions/${encodeURIComponent(stream)}/${encodeURIComponent(group)}${rest ? "/" + rest : ""}`;
}

const COLUMNS = ["Group", "Stream", "Status", "Processed / known", "Lag", "In flight", "Parked", "Consumers", "Rate"];

function row(info) {
  const number = (value, id) => h("td", { class: "number", "data-figure": id }, value);
  return h("tr", {},
    h("td", {}, h("a", { href: route("subscription", info.eventStreamId, info.groupName) }, info.groupName)),
    h("td", {}, h("a", { href: route("stream", info.eventStreamId) }, info.eventStreamId)),
    h("td", {}, info.status),
    number(`${info.lastProcessedEventNumber} / ${info.lastKnownEventNumber}`, "checkpoint"),
    number(lag(info), "lag"),
    number(info.totalInFlightMessages, "in-flight"),
    number(info.parkedMessageCount, "parked"),
    number(info.connectionCount, "consumers"),
    number(`${info.averageItemsPerSecond}/s`, "rate"));
}

export async function subscriptions() {
  const listed = await orRefusal(() => call("/subscriptions", { accept: JSON_TYPE }), WHO, WHAT);
  if (listed.refusal) return show(h("h1", {}, "Persistent subscriptions"), listed.refusal);
  const body = h("tbody", {});
  const empty = h("p", { class: "muted" }, "No subscription groups yet: create one below.");
  const fill = (infos) => {
    body.replaceChildren(...infos.map(row));
    empty.hidden = infos.length > 0;
  };
  fill(listed.value);
  const status = h("p", { class: "muted", id: "subscriptions-status", role: "status" }, "Live: refreshed every 2 s.");
  show(h("h1", {}, "Persistent subscriptions"), status,
    h("table", { id: "subscriptions" },
      h("thead", {}, h("tr", {}, COLUMNS.map((name, i) => h("th", { class: i > 2 ? "number" : null }, name)))), body),
    empty,
    createForm(() => call("/subscriptions", { accept: JSON_TYPE }).then(fill)));
  poll(async () => fill(await call("/subscriptions", { accept: JSON_TYPE })), status);
}

/** The form that creates a group; `created` runs after the server said yes. */
function createForm(created) {
  const stream = h("input", { name: "stream", required: true });
  const group = h("input", { name: "group", required: true });
  const settings = settingsFields();
  const result = h("p", { id: "group-result", role: "status" });
  const submit = async (event) => {
    event.preventDefault();
    try {
      await call(groupPath(stream.value, group.value), {
        method: "PUT", body: JSON.stringify(settings.read()), headers: { "Content-Type": JSON_TYPE } });
      result.className = "";
      result.replaceChildren("Created ",
        h("a", { href: route("subscription", stream.value, group.value) }, group.value), ` on ${stream.value}.`);
      await created();
    } catch (error) {
      result.className = "error";
      result.textContent = String(error.message);
    }
  };
  return h("section", {},
    h("h2", {}, "New group"),
    h("form", { id: "group-form", class: "stack", onsubmit: submit },
      h("label", {}, "Stream (or $all)", stream),
      h("label", {}, "Group", group),
      settings.fields,
      h("button", { type: "submit" }, "Create the group")),
    result);
}
