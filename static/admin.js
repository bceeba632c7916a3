// `#/admin[/scavenge/{id}]`: start a scavenge and follow its report live
// (`/admin/scavenge`, `$admins` and `$ops`), and the users (users.js). The
// address names the scavenge followed, so its report can be shared.

import { call } from "./api.js";
import { h, show, route, time, bytes } from "./dom.js";
import { poll } from "./poll.js";
import { answer } from "./rights.js";
import { usersSection } from "./users.js";

const JSON_TYPE = "application/json";

/** How often a running scavenge's report is read, in milliseconds. */
const SCAVENGE_EVERY = 1000;

function reportFigures(report) {
  const size = report.bytesAfter === null
    ? bytes(report.bytesBefore) : `${bytes(report.bytesBefore)} → ${bytes(report.bytesAfter)}`;
  return [
    ["Status", report.status], ["Started", time(report.started)], ["Finished", time(report.finished) || "not yet"],
    ["Streams scanned", report.streamsScanned], ["Events removed", report.eventsRemoved],
    ["Links removed", report.linksRemoved], ["Records copied", report.keysCopied], ["Size on disk", size],
    report.error ? ["Error", report.error] : null,
  ].filter(Boolean).flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]);
}

export async function admin(kind, id) {
  const users = await usersSection();
  const report = h("dl", { class: "figures", id: "scavenge-report" });
  const status = h("p", { class: "muted", id: "scavenge-status", role: "status" });
  const result = h("p", { id: "scavenge-result", role: "status" });

  const follow = async (scavengeId) => {
    history.replaceState(null, "", route("admin", "scavenge", scavengeId));
    const refresh = async () => {
      const read = await call(`/admin/scavenge/${encodeURIComponent(scavengeId)}`, { accept: JSON_TYPE });
      report.replaceChildren(...reportFigures(read));
      return read.status === "running";
    };
    if (await refresh()) poll(refresh, status, SCAVENGE_EVERY);
    return h("span", {}, "Following scavenge ", h("code", {}, scavengeId), ".");
  };
  const start = () => answer(result, async () => {
    try {
      const started = await call("/admin/scavenge", { method: "POST", accept: JSON_TYPE });
      return follow(started.scavengeId);
    } catch (error) {
      // 409: one is running already; the answer names it.
      const running = /^409\b.*"scavengeId":\s*"([^"]+)"/s.exec(String(error.message));
      if (!running) throw error;
      return follow(running[1]);
    }
  }, "$admins and $ops", "run scavenges");

  show(h("h1", {}, "Admin"),
    h("section", { id: "scavenge-section" }, h("h2", {}, "Scavenge"),
      h("p", { class: "muted" },
        "A scavenge reclaims the space of deleted, truncated and expired events; reads and appends go on meanwhile."),
      h("button", { type: "button", id: "scavenge", onclick: start }, "Start a scavenge"), result, status, report),
    users);
  if (kind === "scavenge" && id) answer(result, () => follow(id), "$admins and $ops", "run scavenges");
}
