// `#/`: the server's figures from `GET /info`.

import { call } from "./api.js";
import { h, show, bytes } from "./dom.js";

export async function dashboard() {
  const info = await call("/info", { accept: "application/json" });
  const warnings = [];
  if (info.defaultPasswords?.length) {
    warnings.push(`Default password still set for ${info.defaultPasswords.join(", ")}: change it (docs/security.md).`);
  }
  if (info.writes && !info.writes.accepting) warnings.push(`Appends refused: ${info.writes.reason}`);
  const disk = info.disk ? `${bytes(info.disk.freeBytes)} free (floor ${bytes(info.disk.minFreeBytes)})` : "unknown";
  show(
    h("h1", {}, "Dashboard"),
    ...warnings.map((text) => h("p", { class: "warning", role: "alert" }, text)),
    h("dl", { class: "figures" },
      h("dt", {}, "Head position"), h("dd", { id: "head-position" }, info.nextPosition),
      h("dt", {}, "Long-poll and SSE waiters"), h("dd", {}, `${info.waiters} of ${info.maxWaiters}`),
      h("dt", {}, "Disk"), h("dd", {}, disk),
      h("dt", {}, "Appends"), h("dd", {}, info.writes?.accepting ? "accepted" : "refused"),
      h("dt", {}, "Version"), h("dd", {}, `eventfeed ${info.eventfeedVersion} (EventStore ${info.esVersion} API)`)));
}
