"""Durable appends while a scavenge removes 90% of a store (expired by
$maxCount) and compacts it, against the same workload before it started and
after it finished. Writing metadata and running or watching a scavenge are
for `$admins`: those requests carry the built-in admin's credentials; the
measured appends are anonymous."""

import json
import random
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from ..common import (ADMIN, ATOM_JSON, SCAVENGE_STREAM_PREFIX, event_data, http_request, log, rfc3339_seconds)
from ..fmt import errors, fmt, fmt_share, ms, ratio, table, times
from ..servers import Eventfeed

TITLE = "Appends during a scavenge"


class ScavengeWatch(threading.Thread):
    """Polls a scavenge's report twice a second until it is no longer
    running (or `timeout`): its last report, and when it was first seen
    copying keys into the new generation, i.e. done removing (the server
    saves the report about once a second, so this is as precise as that)."""

    def __init__(self, port, scavenge_id, timeout):
        super().__init__(daemon=True)
        self.port = port
        self.scavenge_id = scavenge_id
        self.deadline = time.monotonic() + timeout
        self.last = None
        self.copying_since = None

    def run(self):
        while time.monotonic() < self.deadline:
            try:
                status, _, body = http_request(self.port, "GET", f"/admin/scavenge/{self.scavenge_id}", ADMIN,
                                               timeout=10)
                report = json.loads(body) if status == 200 else None
            except (OSError, ValueError):
                report = None
            if report:
                self.last = report
                if self.copying_since is None and report.get("keysCopied"):
                    self.copying_since = time.time()
                if report.get("status") != "running":
                    return
            time.sleep(0.5)



def measure(ctx, result):
    """A store whose streams keep only their newest events ($maxCount),
    filled quickly (--durability none), then served in the default mode:
    the append workload without a scavenge, then the same while
    `POST /admin/scavenge` runs, then (when it finished in time) after."""
    ctx.fsync_probe()
    settings = ctx.settings
    data_dir = ctx.workdir / "scavenge"
    streams, per_stream, keep = settings.scavenge_streams, settings.scavenge_events, settings.scavenge_keep
    log(f"filling the scavenge store: {streams} streams x {per_stream} events, $maxCount {keep}")
    filler = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "none")
    try:
        def fill(stream_index):
            stream = f"{SCAVENGE_STREAM_PREFIX}{stream_index}"
            for first in range(0, per_stream, 100):
                events = [{"eventId": str(uuid.uuid4()), "eventType": "OrderPlaced",
                           "data": event_data(stream_index, n)}
                          for n in range(first, min(first + 100, per_stream))]
                status, _, body = http_request(filler.port, "POST", f"/streams/{stream}",
                                               {"Content-Type": "application/vnd.eventstore.events+json"},
                                               json.dumps(events).encode())
                if status != 201:
                    raise RuntimeError(f"fill append answered {status}: {body[:200]!r}")
            status, _, body = http_request(filler.port, "POST", f"/streams/{stream}/metadata",
                                           {"Content-Type": "application/json", **ADMIN},
                                           json.dumps({"$maxCount": keep}).encode())
            if status != 201:
                raise RuntimeError(f"metadata write answered {status}: {body[:200]!r}")

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(fill, range(streams)))
    finally:
        filler.stop()
    server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync")
    figures = result
    figures.update(streams=streams, per_stream=per_stream, keep=keep, clients=settings.scavenge_clients,
                   append_streams=settings.append_streams, duration=settings.duration)
    try:
        # Retention applies at once: the oldest readable event is the first kept one.
        status, _, body = http_request(server.port, "GET", f"/streams/{SCAVENGE_STREAM_PREFIX}0/head/backward/1",
                                       {"Accept": ATOM_JSON})
        if status != 200:
            raise RuntimeError(f"the scavenge store's head read answered {status}")

        def workload(label):
            nonce = f"{random.getrandbits(32):08x}"
            result = ctx.wrk.run(server.port, "append", [nonce, settings.append_streams, 1],
                                  settings.scavenge_clients, server=server.process.pid)
            result["events_per_second"] = (result["requests"] - result["errors"]) / result["seconds"]
            log(f"appends {label}: {result['events_per_second']:.0f} events/s, "
                f"p99 {result['p99_us'] / 1000:.2f} ms, errors {result['errors']}, "
                f"others on the server CPU {fmt_share(result.get('others_cpu_share'))}")
            return result

        figures["without"] = workload("without a scavenge")
        figures["without"]["over_without"] = 1.0
        status, _, body = http_request(server.port, "POST", "/admin/scavenge", ADMIN)
        if status != 202:
            raise RuntimeError(f"POST /admin/scavenge answered {status}: {body[:200]!r}")
        scavenge_id = json.loads(body)["scavengeId"]
        # The scavenge's own end is waited for, bounded: one that outlasts
        # it is reported as such, and the server's stop interrupts it.
        watch = ScavengeWatch(server.port, scavenge_id, timeout=max(120, 15 * settings.duration))
        watch.start()
        window_start = time.time()
        figures["during"] = workload("during the scavenge")
        figures["during"]["over_without"] = ratio(figures["during"]["events_per_second"],
                                                  figures["without"]["events_per_second"])
        window_end = time.time()
        at_end = scavenge_report(server, scavenge_id)
        figures["running_at_end"] = at_end["status"] == "running"
        figures["at_end"] = at_end
        watch.join()
        final = watch.last or at_end
        figures["report"] = final
        started_at = rfc3339_seconds(final["started"])
        finished_at = rfc3339_seconds(final["finished"]) if final.get("finished") else None
        figures["duration_seconds"] = finished_at - started_at if finished_at else None
        figures["removing_seconds"] = watch.copying_since - started_at if watch.copying_since else None
        running_until = min(finished_at, window_end) if finished_at else window_end
        figures["window_share"] = max(0.0, running_until - max(started_at, window_start)) / (
            window_end - window_start)
        log(f"scavenge {final['status']}: {figures['duration_seconds'] or 0:.1f} s (copying from about "
            f"{figures['removing_seconds'] or 0:.0f} s on), {final['eventsRemoved']} events removed, bytes "
            f"{final['bytesBefore']} -> {final['bytesAfter']}; running during "
            f"{figures['window_share'] * 100:.0f}% of the measurement")
        if final["status"] != "running":
            figures["after"] = workload("after the scavenge")
            figures["after"]["over_without"] = ratio(figures["after"]["events_per_second"],
                                                     figures["without"]["events_per_second"])
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

def scavenge_report(server, scavenge_id):
    status, _, body = http_request(server.port, "GET", f"/admin/scavenge/{scavenge_id}", ADMIN)
    if status != 200:
        raise RuntimeError(f"GET /admin/scavenge/{scavenge_id} answered {status}")
    return json.loads(body)

# -- long-polls --------------------------------------------------------------


def render(figures, settings):
    rows = []
    for key, label in (("without", "without a scavenge"), ("during", "during the scavenge"),
                       ("after", "after it (compacted store)")):
        f = figures.get(key)
        if not f:
            continue
        rows.append([label, fmt(f["events_per_second"]), ms(f, "p50_us"), ms(f, "p99_us"), ms(f, "max_us", 1),
                     errors(f), times(f.get("over_without"), "without"), fmt_share(f.get("others_cpu_share"))])
    out = [table(["appends", "events/s", "p50 ms", "p99 ms", "max ms", "errors", "÷ without",
                  "others on server CPU"], rows), ""]
    report = figures.get("report") or {}
    duration = figures.get("duration_seconds")
    removing = figures.get("removing_seconds")
    out.append(f"The scavenge: {report.get('status', '—')}"
               + (f" in {fmt(duration, 1)} s" if duration is not None else "")
               + (f" (removing for about {fmt(removing, 0)} s, then compacting: as its report, saved about once "
                  "a second, showed)" if removing is not None and duration is not None else "")
               + f", {fmt(report.get('eventsRemoved'))} events and {fmt(report.get('linksRemoved'))} projection "
               f"links removed, {fmt(report.get('keysCopied'))} keys copied into the new generation; store "
               f"{fmt((report.get('bytesBefore') or 0) / 1e6, 1)} MB before, "
               + (f"{fmt(report['bytesAfter'] / 1e6, 1)} MB after" if report.get("bytesAfter") is not None
                  else "— after")
               + f". It was running for {fmt_share(figures.get('window_share'))} of the *during* measurement, and "
               + ("**still running at its end**" if figures.get("running_at_end") else "had finished before its end")
               + (f" (then at {fmt(figures['at_end'].get('eventsRemoved'))} events removed, "
                  f"{fmt(figures['at_end'].get('keysCopied'))} keys copied)" if figures.get("running_at_end") else "")
               + ".")
    if report.get("error"):
        out.append(f"Its error: {report['error']}.")
    expired = figures["streams"] * (figures["per_stream"] - figures["keep"])
    out.append(f"\nMethod: a store of {fmt(figures['streams'] * figures['per_stream'])} events ({figures['streams']} "
               f"streams × {fmt(figures['per_stream'])}, written in 100-event batches), each stream's metadata "
               f"`{{\"$maxCount\": {figures['keep']}}}`: {fmt(expired)} events expired, for a scavenge to remove. "
               f"Served in the default mode (fsync, projections on), {figures.get('clients', settings.scavenge_clients)} "
               f"anonymous clients append one event per request to {figures.get('append_streams', settings.append_streams)} other "
               f"streams for {figures.get('duration', settings.duration)} s without a scavenge, then again right after "
               "`POST /admin/scavenge` (a scavenge removes the expired events in bounded steps inside the writer, "
               "then copies the store into a new, compacted generation), then, once it has finished, a third time. "
               "No target: the figure to watch is the *during* row's share of the *without* row.")
    return out
