"""Opt-in (`bench/run startup`): start-up of a 10M-event store (about 7 GB
and five minutes to write): after a clean stop, again, from a cold page
cache, and after a kill -9."""

import json
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import targets
from ..common import SERVER_LOG, event_data, http_request, log, logged_number
from ..fmt import fmt, table, verdict
from ..servers import Eventfeed

TITLE = "Start-up with a large store"
LABELS = {"first": "first start after the store was written and the server stopped",
          "next": "next start",
          "cold": "same, page cache dropped first"}


def measure(ctx, result):
    """Opt-in: a store of startup_streams x 1,000 events (10M), written in
    100-event appends (durability none, projections on) by a server that
    then stops cleanly (timed: the stop checkpoints the store), then
    three starts, each timed to the first answered /ping: the first
    after the filling server stopped, the next, and one from a cold page
    cache when this runs as root. Then two crashes: a server appends
    another startup_streams x 100 events and is killed with SIGKILL (no
    checkpoint), first in the default mode, then with durability none,
    and the start after each is timed (sled replays what the
    killed server wrote)."""
    streams, per_stream = ctx.settings.startup_streams, 1000
    data_dir = ctx.workdir / "startup"
    log(f"filling the start-up store: {streams} streams x {per_stream} events")

    def fill(server, prefix, count):
        def fill_stream(stream_index):
            for first in range(0, count, 100):
                events = [{"eventId": str(uuid.uuid4()), "eventType": f"Type{n % 7}",
                           "data": event_data(stream_index, n)} for n in range(first, first + 100)]
                status, _, body = http_request(server.port, "POST", f"/streams/{prefix}-{stream_index}",
                                               {"Content-Type": "application/vnd.eventstore.events+json"},
                                               json.dumps(events).encode())
                if status != 201:
                    raise RuntimeError(f"fill append answered {status}: {body[:200]!r}")

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(fill_stream, range(streams)))

    # The store's own log lines too: the checkpoint's size is one of them.
    filler = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "none", log_filter=f"{SERVER_LOG},eventfeed::store=info")
    started = time.monotonic()
    try:
        fill(filler, "startup", per_stream)
    finally:
        fill_seconds = time.monotonic() - started
        stopping = time.monotonic()
        filler.stop()
        stop_seconds = time.monotonic() - stopping
    figures = result
    figures.update({"events": streams * per_stream, "fill_seconds": fill_seconds, "stop_seconds": stop_seconds,
               "checkpoint_ms": checkpoint_ms(filler.log),
               "written_mb": logged_number(filler.log, "written_mb"),
               "bytes": sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())})
    log(f"filled {figures['events']} events in {fill_seconds:.0f} s; stopped in {stop_seconds:.2f} s")
    for start in ("first", "next", "cold"):
        if start == "cold":
            if os.geteuid() != 0:
                break
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync")
        figures[start] = server.startup_seconds
        log(f"{start} start: ready after {server.startup_seconds:.2f} s")
        server.stop()

    # Two crashes, each after streams x 100 more events: first of a server
    # in the default mode, whose acknowledged writes are on disk when it is
    # killed (the target's case); then of one with durability none, whose
    # writes the kernel still holds, so the start's first fsync (sled syncs
    # its file when it recovers) writes them out.
    figures["crash_events"] = streams * 100
    for key, durability, prefix in (("after_kill", "fsync", "crash"), ("after_kill_none", "none", "unsynced")):
        crasher = Eventfeed(ctx.workdir, ctx.pinning, data_dir, durability)
        started = time.monotonic()
        try:
            fill(crasher, prefix, 100)
        finally:
            figures[f"{key}_fill_seconds"] = time.monotonic() - started
            figures[f"{key}_dirty_mb"] = dirty_mb()
            crasher.kill()
        server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync")
        figures[key] = server.startup_seconds
        log(f"start after a kill -9 of a server with durability {durability}: ready after "
            f"{server.startup_seconds:.2f} s")
        server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)

def checkpoint_ms(path):
    """How long the stop's checkpoint took, as the server logged it."""
    found = re.findall(r'what="checkpoint[^"]*" took_ms=(\d+)', Path(path).read_text(errors="replace"))
    return int(found[-1]) if found else None


def dirty_mb():
    """The kernel's dirty page cache, in MiB: written, not yet on disk."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Dirty:"):
            return int(line.split()[1]) / 1024
    return None


# -- appends during a scavenge ----------------------------------------------


def summary(figures):
    """The README's row: the first start after a clean stop and the start
    after a kill -9, each against its target."""
    starts = [("first", "after a clean stop", "startup_clean", targets.STARTUP_CLEAN_SECONDS),
              ("after_kill", "after a `kill -9`", "startup_kill", targets.STARTUP_KILL_SECONDS)]
    starts = [start for start in starts if start[0] in figures]
    if not starts:
        return []
    crash = f" ({fmt(figures.get('crash_events', 0))} events after the last start)" if "after_kill" in figures else ""
    return [[f"start-up, {fmt(figures['events'] / 1e6)}M events",
             "; ".join(f"{fmt(figures[start], 2)} s {label}" for start, label, _, _ in starts) + crash, "—",
             "; ".join(f"{targets.target(key)} {label}: {verdict(figures[start] <= limit)}"
                       for start, label, key, limit in starts)]]


def render(figures, settings):
    crash = fmt(figures.get("crash_events", 0))
    labels = dict(LABELS, after_kill=f"start after {crash} more events and a kill -9 (sled replays them)",
                  after_kill_none=f"same, the {crash} events written with durability none (the start writes them out)")
    rows = []
    for start, label in labels.items():
        if start not in figures:
            continue
        if start == "after_kill_none":
            rows.append([label, f"{fmt(figures[start], 2)} s", "— (see below)"])
            continue
        key, limit = (("startup_kill", targets.STARTUP_KILL_SECONDS) if start == "after_kill"
                      else ("startup_clean", targets.STARTUP_CLEAN_SECONDS))
        rows.append([label, f"{fmt(figures[start], 2)} s", f"{targets.target(key)}: {verdict(figures[start] <= limit)}"])
    checkpoint = (f"{fmt(figures['stop_seconds'], 2)} s, of which the checkpoint "
                  f"{fmt(figures['checkpoint_ms'] / 1000, 2)} s for {fmt(figures['written_mb'])} MiB written"
                  if figures.get("checkpoint_ms") is not None else
                  f"{fmt(figures['stop_seconds'], 2)} s (it logged no checkpoint)")
    return [table(["start", "ready after", "target (10M events)"], rows), "",
            f"The store: {fmt(figures['events'])} events ({fmt(figures['events'] // 1000)} streams × 1,000, written "
            f"in 100-event appends in {fmt(figures['fill_seconds'])} s, durability none, projections on; "
            f"{fmt(figures['bytes'] / 2**30, 1)} GiB on disk); the server that wrote it then stopped cleanly "
            f"(SIGTERM) in {checkpoint}.", "",
            "Method: the server starts on the store three times, each timed from the process start to the first "
            "answered `/ping` (the cold start only when run as root). The time is sled's open: it loads its page "
            "table from its last snapshot and replays the log written since; sled 0.34 writes a snapshot only when "
            "it opens a store, so a clean stop after much was written (`--checkpoint-after-mb`, default 256) opens "
            "the store once more before the process exits, and the start after it does not replay. A crash skips "
            f"that: for the crash rows a server appends another {crash} events (16 clients, 100-event appends) and "
            "is killed with SIGKILL before the start timed. First a server in the default mode (fsync), whose "
            f"acknowledged writes are on disk when it dies (it wrote them in {fmt(figures.get('after_kill_fill_seconds', 0))} s; "
            f"the kernel held {dirty(figures.get('after_kill_dirty_mb'))} unwritten at the kill): the target's case. Then, "
            "for comparison, a server with durability none, which leaves its writes to the kernel "
            f"({dirty(figures.get('after_kill_none_dirty_mb'))} unwritten at the kill): sled syncs its file as it recovers, "
            "so that start first waits for the disk to take them."]


def dirty(mb):
    return "an unknown amount" if mb is None else f"{fmt(mb)} MiB"
