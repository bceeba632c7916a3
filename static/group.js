// `#/subscription/{s}/{g}`: one persistent subscription group, live (`GET
// …/info`): its figures, consumers and parked messages (read from the
// parked stream the server names in `parkedMessageUri`), with a button to
// replay them, its settings to edit and a delete that names the group.

import { call, pathOf, ATOM_JSON } from "./api.js";
import { h, show, route, time } from "./dom.js";
import { poll } from "./poll.js";
import { answer, orRefusal, refused, refusal } from "./rights.js";
import { settingsFields } from "./settings.js";
import { groupPath, lag } from "./subscriptions.js";

const JSON_TYPE = "application/json";
const WHO = "$admins and $ops";

/** The group's figures as `dt`/`dd` pairs; each `dd` has an id (`group-parked`). */
function figures(info) {
  return [
    ["checkpoint", "Processed / last known", `${info.lastProcessedEventNumber} / ${info.lastKnownEventNumber}`],
    ["status", "Status", info.status],
    ["lag", "Lag", lag(info)],
    ["in-flight", "In flight", info.totalInFlightMessages],
    ["outstanding", "Outstanding", info.outstandingMessagesCount],
    ["buffered", "Buffered, retrying", `${info.readBufferCount}, ${info.retryBufferCount}`],
    ["parked", "Parked", info.parkedMessageCount],
    ["processed", "Processed in all", info.totalItemsProcessed],
    ["rate", "Rate", `${info.averageItemsPerSecond}/s`],
  ].flatMap(([id, name, value]) => [h("dt", {}, name), h("dd", { id: `group-${id}` }, value)]);
}

function consumerRows(info) {
  const number = (value) => h("td", { class: "number" }, value);
  return info.connections.map((consumer) => h("tr", {}, h("td", {}, consumer.from),
    number(consumer.inFlightMessages), number(consumer.totalItemsProcessed), number(consumer.waitingRequests),
    number(`${(consumer.idleMilliseconds / 1000).toFixed(1)} s`)));
}

/** The parked stream's name, from the address the server gives for it. */
function parkedStream(info) {
  return decodeURIComponent(new URL(info.parkedMessageUri, location.href).pathname.split("/")[2]);
}

/**
 * The newest page of parked messages. Each is a link event (`$>`) whose
 * metadata names the parked event and why it was parked.
 */
async function parkedRows(info) {
  // None left (also spares the console a 404 when nothing was ever parked).
  if (!info.parkedMessageCount) return [];
  const feed = await call(pathOf(info.parkedMessageUri) + "?embed=body", { accept: ATOM_JSON });
  return feed.entries.map((entry) => {
    let parked = {};
    try { parked = JSON.parse(entry.metaData ?? "{}"); } catch { /* not the server's own: shown as is */ }
    const { eventStreamId = entry.streamId, eventNumber = entry.eventNumber, reason = "" } = parked;
    const event = h("a", { href: route("event", eventStreamId, eventNumber) }, `${eventNumber}@${eventStreamId}`);
    return h("tr", {}, h("td", {}, event), h("td", {}, reason), h("td", {}, time(entry.updated)));
  });
}

/** A table whose columns after the first `text` ones hold numbers. */
function table(id, columns, body, text = columns.length) {
  const head = columns.map((name, i) => h("th", { class: i >= text ? "number" : null }, name));
  return h("table", { id }, h("thead", {}, h("tr", {}, head)), body);
}

export async function subscription(stream, group) {
  const path = groupPath(stream, group);
  const read = () => call(path + "/info", { accept: JSON_TYPE });
  const loaded = await orRefusal(read, WHO, "manage persistent subscriptions");
  const title = h("h1", {}, group, h("span", { class: "muted" }, " on "), h("a", { href: route("stream", stream) }, stream));
  if (loaded.refusal) return show(title, loaded.refusal);
  const summary = h("dl", { class: "figures", id: "group-figures" });
  const consumers = h("tbody", {});
  const parked = h("tbody", {});
  const parkedNote = h("p", { class: "muted" });
  const refresh = async (info) => {
    info ??= await read();
    summary.replaceChildren(...figures(info));
    consumers.replaceChildren(...consumerRows(info));
    try {
      parked.replaceChildren(...await parkedRows(info));
      parkedNote.replaceChildren(parked.children.length ? "" : "No parked messages.");
    } catch (error) {
      if (!refused(error)) throw error;
      parked.replaceChildren();
      parkedNote.replaceChildren(refusal("$admins", "read the parked stream", error));
    }
  };
  await refresh(loaded.value);
  const status = h("p", { class: "muted", id: "group-status", role: "status" }, "Live: refreshed every 2 s.");
  const replayResult = h("p", { id: "replay-result", role: "status" });
  const replay = () => answer(replayResult, async () => {
    const replayed = await call(path + "/replayParked", { method: "POST" });
    await refresh(loaded.value);
    return `${replayed.result}: ${replayed.messagesToReplay} parked message(s) to replay.`;
  });
  show(title, h("p", {}, h("a", { href: route("subscriptions") }, "All groups")), status, summary,
    h("h2", {}, "Consumers"),
    table("consumers", ["Consumer", "In flight", "Processed", "Waiting", "Idle"], consumers, 1),
    h("h2", {}, "Parked messages"),
    h("p", {}, h("button", { type: "button", id: "replay", onclick: replay }, "Replay parked messages"), " ",
      h("a", { href: route("stream", parkedStream(loaded.value)) }, "The parked stream")),
    replayResult, table("parked", ["Event", "Why", "Parked at"], parked), parkedNote,
    editForm(path, loaded.value.config), deleteButton(path, stream, group));
  poll(() => refresh(), status);
}

function editForm(path, config) {
  const settings = settingsFields(config);
  const result = h("p", { id: "settings-result", role: "status" });
  const submit = (event) => {
    event.preventDefault();
    answer(result, async () => {
      await call(path, { method: "POST", body: JSON.stringify(settings.read()), headers: { "Content-Type": JSON_TYPE } });
      return "Settings saved.";
    });
  };
  return h("section", {}, h("h2", {}, "Settings"),
    h("form", { id: "settings-form", class: "stack", onsubmit: submit }, settings.fields,
      h("button", { type: "submit" }, "Save settings")), result);
}

/** Delete, after a second button that names the group. */
function deleteButton(path, stream, group) {
  const result = h("p", { id: "delete-result", role: "status" });
  const remove = () => answer(result, async () => {
    await call(path, { method: "DELETE" });
    location.hash = route("subscriptions");
    return "Deleted.";
  });
  const confirmed = h("button", { type: "button", class: "danger", id: "delete-confirmed", onclick: remove },
    `Delete “${group}”`);
  const confirm = h("div", { class: "confirm", id: "delete-confirm", role: "alert", hidden: true },
    h("p", {}, `Delete the group “${group}” on “${stream}”? `,
      "Its consumers lose it, and its checkpoint and parked messages go with it."),
    confirmed, " ", h("button", { type: "button", onclick: () => { confirm.hidden = true; } }, "Cancel"));
  const ask = () => {
    confirm.hidden = false;
    confirmed.focus();
  };
  return h("section", {}, h("h2", {}, "Delete"),
    h("button", { type: "button", class: "danger", id: "delete", onclick: ask }, "Delete this group…"), confirm, result);
}
