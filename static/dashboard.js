// `#/`: the server's figures from `GET /info`, refreshed every 2 s while
// the view is open, with a chart of the append and read rates of the last
// ten minutes.

import { call } from "./api.js";
import { h, show, bytes, time, onLeave } from "./dom.js";
import { lineChart } from "./chart.js";

/** How often the figures are read again while the dashboard is open. */
const REFRESH_MS = 2000;
/** The time the chart spans: the server keeps ten minutes of samples. */
const CHART_SECONDS = 600;

export async function dashboard() {
  // Registered before the first call, so a view opened meanwhile stops it.
  let open = true, timer = null;
  onLeave(() => { open = false; clearTimeout(timer); });
  const figures = new Figures();
  figures.update(await info());
  if (!open) return;
  show(h("h1", {}, "Dashboard"), figures.warnings, figures.list, figures.chartBlock, figures.status);

  const refresh = async () => {
    try {
      const answer = await info();
      if (!open) return;
      figures.update(answer);
      figures.status.textContent = "";
    } catch (error) {
      if (!open) return;
      figures.status.textContent = `Could not refresh: ${error.message || error}. Retrying…`;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  };
  timer = setTimeout(refresh, REFRESH_MS);
}

function info() {
  return call("/info", { accept: "application/json" });
}

/** The dashboard's elements, built once and filled in place at each refresh. */
class Figures {
  constructor() {
    this.warnings = h("div", { id: "dashboard-warnings" });
    this.values = {};
    const figure = (label, id) => {
      this.values[id] = h("dd", { id });
      return [h("dt", {}, label), this.values[id]];
    };
    this.list = h("dl", { class: "figures" },
      figure("Head position", "head-position"),
      figure("Streams", "stream-count"),
      figure("Events", "event-count"),
      figure("Store on disk", "store-size"),
      figure("Appends", "append-rate"),
      figure("Reads", "read-rate"),
      figure("Uptime", "uptime"),
      figure("Scavenge", "scavenge-state"),
      figure("Long-poll and SSE waiters", "waiters"),
      figure("Disk", "disk"),
      figure("Version", "version"));
    this.chart = lineChart("rates-chart", "Appended events and reads per second, last ten minutes", [
      { name: "Appended events per second", className: "appends" },
      { name: "Reads per second", className: "reads" }]);
    this.chartBlock = h("figure", { class: "chart-block" }, this.chart.element,
      h("figcaption", {},
        h("span", { class: "key appends" }, "appended events/s"), " ",
        h("span", { class: "key reads" }, "reads/s"),
        h("span", { class: "muted" }, " · last ten minutes, sampled every few seconds")));
    this.status = h("p", { class: "muted", id: "dashboard-status" });
  }

  update(info) {
    this.warnings.replaceChildren(...warnings(info).map((text) => h("p", { class: "warning", role: "alert" }, text)));
    const set = (id, ...content) => this.values[id].replaceChildren(...content.map((part) => part ?? ""));
    const count = (id, value) => {
      this.values[id].dataset.value = value ?? "";
      set(id, value === null || value === undefined ? "unknown" : value.toLocaleString());
    };
    set("head-position", String(info.nextPosition));
    count("stream-count", info.streams);
    count("event-count", info.events);
    set("store-size", info.storeBytes === null || info.storeBytes === undefined ? "not measured yet" : bytes(info.storeBytes));
    const activity = info.activity || {};
    const appended = activity.appendedPerSecond || [], reads = activity.readsPerSecond || [];
    set("append-rate", `${rate(appended)} events/s over the last minute · ${(activity.appendedEvents ?? 0).toLocaleString()} since start`);
    set("read-rate", `${rate(reads)} reads/s over the last minute · ${(activity.readsServed ?? 0).toLocaleString()} since start`);
    set("uptime", duration(info.uptimeSeconds), " (since ", time(info.startedAt), ")");
    set("scavenge-state", ...scavenge(info.scavenge));
    set("waiters", `${info.waiters} of ${info.maxWaiters}`);
    set("disk", info.disk ? `${bytes(info.disk.freeBytes)} free (floor ${bytes(info.disk.minFreeBytes)}); appends ${info.writes?.accepting ? "accepted" : "refused"}` : "unknown");
    set("version", `eventfeed ${info.eventfeedVersion} (EventStore ${info.esVersion} API)`);
    const seconds = activity.sampleSeconds || 5;
    this.chart.update([appended, reads], "10 min", Math.round(CHART_SECONDS / seconds));
  }
}

/** What an operator must act on, first on the page. */
function warnings(info) {
  const found = [];
  if (info.defaultPasswords?.length) {
    found.push(`Default password still set for ${info.defaultPasswords.join(", ")}: change it (docs/security.md).`);
  }
  if (info.writes && !info.writes.accepting) found.push(`Appends refused: ${info.writes.reason}`);
  else if (info.disk && info.disk.minFreeBytes > 0 && info.disk.freeBytes < 2 * info.disk.minFreeBytes) {
    found.push(`Disk nearly full: ${bytes(info.disk.freeBytes)} free; appends are refused below ${bytes(info.disk.minFreeBytes)} (--min-free-mb).`);
  }
  if (info.projectionsBuilding?.length) {
    found.push(`Projections still being built from the log: ${info.projectionsBuilding.join(", ")}; their streams are incomplete until then.`);
  }
  return found;
}

/** The mean of the last minute's rates (the newest samples). */
function rate(values) {
  const recent = values.slice(-12);
  if (!recent.length) return "—";
  const mean = recent.reduce((sum, value) => sum + value, 0) / recent.length;
  return mean.toLocaleString(undefined, { maximumFractionDigits: mean < 10 ? 1 : 0 });
}

function duration(seconds = 0) {
  const parts = [[86400, "d"], [3600, "h"], [60, "min"]].reduce((out, [size, unit]) => {
    if (seconds >= size || out.length) { out.push(`${Math.floor(seconds / size)} ${unit}`); seconds %= size; }
    return out;
  }, []);
  return parts.length ? parts.slice(0, 2).join(" ") : `${seconds} s`;
}

function scavenge(report) {
  if (!report) return ["never run"];
  if (report.status === "running") {
    return ["running since ", time(report.started), `: ${report.eventsRemoved.toLocaleString()} events removed so far`];
  }
  const space = report.bytesAfter === null || report.bytesAfter === undefined ? "" : `, ${bytes(report.bytesBefore)} → ${bytes(report.bytesAfter)}`;
  return [`${report.status} `, time(report.finished || report.started),
    `: ${report.eventsRemoved.toLocaleString()} events removed${space}`, report.error ? ` (${report.error})` : ""];
}
