"""AtomBus (an AtomPub event bus in Perl, on Starman with SQLite) under the
same append and read workloads as eventfeed, with eventfeed's figures for
them from the same run."""

import datetime
import json
import random
import sqlite3
import subprocess
import uuid

from ..common import ATOM_XML, EVENTS_PER_READ_STREAM, PAGE_SIZE, READ_STREAM_PREFIX, event_data, http_request, log
from ..fmt import errors, fmt, ms, ratio, table, times
from ..servers import AtomBus
from . import appends

TITLE = "AtomBus"


def version():
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libatombus-perl"], capture_output=True, text=True)
    return result.stdout.strip() or "(version unknown)"


def measure(ctx, result):
    atombus = AtomBus(ctx.workdir / "atombus", ctx.pinning, ctx.settings.atombus_workers)
    try:
        for clients in (1, 16):
            nonce = f"{random.getrandbits(32):08x}"
            figures = ctx.wrk.run(atombus.port, "atombus_post", [nonce, ctx.settings.append_streams], clients,
                                   server=atombus.process.pid)
            result.setdefault("atombus", {})[f"append_{clients}"] = figures
            log(f"AtomBus appends {clients} clients: {figures['rps']:.0f} req/s, "
                f"p99 {figures['p99_us'] / 1000:.2f} ms, errors {figures['errors']}")
        paths = fill(ctx, atombus)
        paths_file = ctx.workdir / "atombus-paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        ctx.wrk.run(atombus.port, "read_list", [paths_file, ATOM_XML], ctx.settings.read_connections,
                     duration=ctx.settings.warmup)
        figures = ctx.wrk.run(atombus.port, "read_list", [paths_file, ATOM_XML], ctx.settings.read_connections,
                               server=atombus.process.pid)
        result.setdefault("atombus", {})["read"] = figures
        log(f"AtomBus reads: {figures['rps']:.0f} req/s, p99 {figures['p99_us'] / 1000:.2f} ms, "
            f"errors {figures['errors']}")
    finally:
        atombus.stop()
        # AtomBus creates a feed on its first entry with a find-or-create
        # that is not atomic: concurrent first appends to one feed can
        # fail. Count them from its log, to say what its errors were.
        log_text = atombus.log.read_text(errors="replace") if atombus.log.exists() else ""
        result["feed_races"] = log_text.count("UNIQUE constraint failed: atombus_feed.title")
    # eventfeed under the same workloads, if not measured already.
    appends.measure_rows(ctx, modes=("fsync",), workloads=[(1, 1), (16, 1)])
    if ("read", "eventfeed", "atom") not in ctx.cache:
        server = ctx.ensure_read_server()
        ctx.cache[("read", "eventfeed", "atom")] = ctx.read_run(
            server.port, "atom", ctx.settings.read_streams, label="eventfeed uncached",
            server=server.process.pid)
    theirs = result.pop("atombus", {})
    result.update(version=version(), workers=ctx.settings.atombus_workers,
                  events=ctx.settings.read_streams * EVENTS_PER_READ_STREAM, rows=[])
    for clients in (1, 16):
        if f"append_{clients}" in theirs:
            mine = ctx.cache.get(("append", "fsync", clients, 1))
            result["rows"].append({"workload": "append", "clients": clients, "eventfeed": mine,
                                   "atombus": theirs[f"append_{clients}"],
                                   "eventfeed_over_atombus": ratio((mine or {}).get("rps"),
                                                                   theirs[f"append_{clients}"]["rps"])})
    if "read" in theirs:
        mine = ctx.cache.get(("read", "eventfeed", "atom"))
        result["rows"].append({"workload": "read", "connections": ctx.settings.read_connections, "eventfeed": mine,
                               "atombus": theirs["read"],
                               "eventfeed_over_atombus": ratio((mine or {}).get("rps"), theirs["read"]["rps"])})


def fill(ctx, atombus):
    """The same 100 entries per feed as eventfeed's read store, written
    straight into AtomBus's SQLite schema (POSTing them through AtomBus
    would take far longer than the measurement); returns the page paths:
    every 20th entry of each feed as `start_at`, a 20-entry page."""
    streams = ctx.settings.read_streams
    connection = sqlite3.connect(atombus.db, timeout=60)
    paths = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with connection:
        for stream in range(streams):
            title = f"{READ_STREAM_PREFIX}{stream}"
            connection.execute(
                "INSERT INTO atombus_feed (id, title, author_name, updated) VALUES (?, ?, 'AtomBus', ?)",
                (f"urn:uuid:{uuid.uuid4()}", title, now))
            rows = []
            for number in range(EVENTS_PER_READ_STREAM):
                entry_id = f"urn:uuid:{uuid.uuid4()}"
                rows.append((entry_id, title, "OrderPlaced", now, json.dumps(event_data(stream, number))))
                if number % PAGE_SIZE == 0:
                    paths.append(f"/feeds/{title}?start_at={entry_id}")
            connection.executemany(
                "INSERT INTO atombus_entry (id, feed_title, title, updated, content) VALUES (?, ?, ?, ?, ?)", rows)
    connection.close()
    status, _, body = http_request(atombus.port, "GET", paths[0], {"Accept": ATOM_XML})
    if status != 200 or body.count(b"<entry") != PAGE_SIZE:
        raise RuntimeError(f"AtomBus page check failed: {status}, {body.count(b'<entry')} entries")
    return paths


def render(figures, settings):
    rows = []
    for row in figures["rows"]:
        mine, theirs = row.get("eventfeed") or {}, row["atombus"]
        workload = (f"append, {row['clients']} client{'s' if row['clients'] > 1 else ''}" if row["workload"] == "append"
                    else f"read a 20-entry Atom page, {row['connections']} connections")
        rows.append([workload, fmt(mine.get("rps")), ms(mine, "p99_us"), fmt(theirs["rps"]), ms(theirs, "p99_us"),
                     errors(theirs), times(row.get("eventfeed_over_atombus"), "AtomBus", 1)])
    out = [table(["workload", "eventfeed req/s", "p99 ms", "AtomBus req/s", "AtomBus p99 ms", "AtomBus errors",
                  "eventfeed ÷ AtomBus"], rows), ""]
    if figures.get("feed_races"):
        out.append(f"{figures['feed_races']} of AtomBus's answers were 500s from a race in AtomBus itself: it creates "
                   "a feed on its first entry with a find-or-create that is not atomic, so two clients appending the "
                   "first entries of one feed at once fail on its unique feed title (`UNIQUE constraint failed: "
                   "atombus_feed.title` in its log).\n")
    out.append(f"Method: AtomBus {figures['version']} (Debian `libatombus-perl`), deployed as its documentation says: "
               f"on a Plack server (Starman, {figures['workers']} pre-forked workers), SQLite database, page size 20. "
               "Appends POST one Atom entry each (SQLite commits each one: as durable as eventfeed's fsync mode, "
               "which is what it is compared with). Reads GET `/feeds/{feed}?start_at={entry}`, a 20-entry page, "
               f"from a database holding the same {fmt(figures['events'])} events as eventfeed's read store (written "
               "straight into AtomBus's SQLite schema). eventfeed's figures are its fsync appends and uncached Atom "
               "pages of the same run.")
    return out
