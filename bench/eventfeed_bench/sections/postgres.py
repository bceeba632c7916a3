"""The PostgreSQL backend against a one-transaction-per-append baseline on
the same database, and against the sled backend, in one run.

A PostgreSQL cluster of the run's own (servers.Postgres: initdb in the
run's directory on the data disk, a loopback port, its settings in the
results and below), one database `bench` in it, and:

- **Baseline**: pgbench, 64 clients (`-c 64 -j 1 -M prepared -n`), a
  custom script of one statement, so one transaction per append with
  synchronous_commit on, the cluster's default:

      INSERT INTO baseline_events (stream, number, id, event_type, created_micros, is_json,
                                   metadata_is_json, data, metadata)
      VALUES ('bench-baseline-' || :stream, :client_id, gen_random_uuid(), 'OrderPlaced',
              (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, true, false,
              convert_to('{"orderId":"order-1","amount":1.5,"currency":"EUR","note":"benchmark event"}', 'UTF8'),
              ''::bytea);

  with `:stream` random in 1..100. `baseline_events` has the columns of
  eventfeed's `events` table, a `bigserial` primary key for the position
  and a unique index on (stream, id) for idempotency, as eventfeed's
  `event_ids` keeps. It writes one row and two index entries per event,
  where an eventfeed append also writes the stream's state, its entry
  and its `$ce-`, `$et-` and `$streams` links and checks the expected
  version: the baseline is the cheapest way to store the event durably.
- **eventfeed on PostgreSQL** (the release build with the `postgres`
  feature, `--store postgres://…/bench`, default durability: its writer's
  synchronous_commit is on): durable single-event appends from 64 wrk
  connections (the same events+json bodies as the appends section, to
  100 streams), alternating with the baseline in rounds (baseline first,
  then eventfeed first, ...); then 20-event batches from 16 connections, in as many rounds;
  then uncached 20-entry Atom pages picked at random from 1,000 streams
  × 100 events written to the same database beforehand, 16 connections,
  after a warm-up (no HTTP cache; the server's rendered-page cache on,
  its default); then the same pages from a server started on the same
  database with `--page-cache-mb 0`, each page read and rendered.
- **sled**: the same append workloads on a fresh sled store (the default
  release build, default durability: fdatasync per batch), and the same
  pages from the run's read store (1,000 streams × 100 events), with and
  without the page cache.
- **The floor on this machine**: what no server here can beat, however
  it is written. PostgreSQL alone, storing 20-event batches from 16
  pgbench clients (`FLOOR_SCRIPT`: one multi-row INSERT per transaction)
  as bare rows of a table with the columns of `events` and only the
  indexes the backend's promises need (the position for `$all`; unique
  (stream, id) for idempotency; unique (stream, number) for a stream's
  pages), with nothing else written and no HTTP: its rate, and the
  database's CPU time per event; and the same rows in transactions of
  64 (every one of 64 clients' single-event appends in one commit, the
  most that group commit could gather; 4 pgbench clients), for the
  single-event appends' bound. And `GET /ping` (no store, no
  rendering) on the same eventfeed server from 64 connections: the
  server's CPU time per HTTP request. Both run on the server CPUs,
  which eventfeed and its database share, so no server can append
  faster than those CPUs' time ÷ (one request's share + one event's
  rows): the section's bounds, computed for single-event appends and
  for 20-event batches, that eventfeed's figures are divided by.
- **A projection built from the log**, on each backend's store once its
  workloads are done: the server restarted with `$ce-` turned off, then
  on again, timed from that start until `GET /info` lists no projection
  being built (so including the start): the log's events linked per
  second.

pg_stat_statements is reset before eventfeed's appends and again before its
reads: the statements that took most of the database's time in each are
recorded, to show where the time goes."""

import json
import random
import re
import shutil
import statistics
import subprocess
import time

from .. import targets
from ..common import (EVENTS_PER_READ_STREAM, READ_STREAM_PREFIX, eventfeed_postgres_binary, fill_streams,
                      http_request, log, wait_until)
from ..fmt import errors, fmt, fmt_share, ms, ratio, table, times, verdict
from ..load import group_cpu_seconds
from ..servers import Eventfeed, Postgres

TITLE = "PostgreSQL backend"
DATABASE = "bench"

# The columns of eventfeed's `events` table, for the baseline's and the
# floor's tables, with a `bigserial` position.
EVENT_COLUMNS = """
    position bigserial PRIMARY KEY,
    stream text NOT NULL,
    number bigint NOT NULL,
    id uuid NOT NULL,
    event_type text NOT NULL,
    created_micros bigint NOT NULL,
    is_json boolean NOT NULL,
    metadata_is_json boolean NOT NULL,
    data bytea NOT NULL,
    metadata bytea NOT NULL"""

# What both insert: the columns, and every value after the stream's name
# and number (the same event each time).
INSERTED = "(stream, number, id, event_type, created_micros, is_json, metadata_is_json, data, metadata)"
EVENT_VALUES = """gen_random_uuid(), 'OrderPlaced',
        (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, true, false,
        convert_to('{"orderId":"order-1","amount":1.5,"currency":"EUR","note":"benchmark event"}', 'UTF8'),
        ''::bytea"""

BASELINE_TABLE = f"CREATE TABLE baseline_events ({EVENT_COLUMNS},\n    UNIQUE (stream, id)\n)"

BASELINE_SCRIPT = f"""\\set stream random(1, 100)
INSERT INTO baseline_events {INSERTED}
VALUES ('bench-baseline-' || :stream, :client_id, {EVENT_VALUES});
"""

# The floor: the bare rows of 20-event batches, with the indexes any
# design meeting the backend's promises needs and nothing else.
FLOOR_TABLE = f"""CREATE SEQUENCE floor_numbers;
CREATE TABLE floor_events ({EVENT_COLUMNS},
    UNIQUE (stream, id),
    UNIQUE (stream, number)
)"""

FLOOR_SCRIPT = f"""\\set stream random(1, 100)
INSERT INTO floor_events {INSERTED}
SELECT 'bench-floor-' || :stream, nextval('floor_numbers'), {EVENT_VALUES}
FROM generate_series(1, :rows);
"""

# The appends' floor runs transactions as large as all the clients' appends
# from a few pgbench clients, enough to keep the database busy.
FLOOR_APPENDS_CLIENTS = 4

# pg_stat_statements' view of one workload: the statements that took the
# most time, as (share of the total, calls, mean ms, rows per call, query).
TOP_STATEMENTS = """
SELECT round((100 * total_exec_time / sum(total_exec_time) OVER ())::numeric, 1), calls,
       round(mean_exec_time::numeric, 3), round((rows::numeric / greatest(calls, 1)), 1),
       regexp_replace(left(query, 160), '\\s+', ' ', 'g')
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC LIMIT 6"""


def pgbench(ctx, cluster, clients, duration, script=BASELINE_SCRIPT, rows=1, label="pgbench baseline"):
    """One pgbench run of a script whose transactions store `rows` events
    each (the baseline's by default); its figures, with the database's CPU
    time per event."""
    path = ctx.workdir / f"pgbench-{rows}.sql"
    path.write_text(script)
    argv = ctx.pinning.load([str(cluster.bin / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U",
                             "postgres", "-n", "-c", str(clients), "-j", "1", "-M", "prepared", "-T", str(duration),
                             "-D", f"rows={rows}", "-f", str(path), DATABASE])
    cpu_before = group_cpu_seconds(cluster.process.pid)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
    cpu = group_cpu_seconds(cluster.process.pid) - cpu_before
    output = result.stdout + result.stderr
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
    if result.returncode != 0 or not tps:
        raise RuntimeError(f"pgbench failed ({result.returncode}): {output}")
    processed = re.search(r"number of transactions actually processed: (\d+)", output)
    failed = re.search(r"number of failed transactions: (\d+)", output)
    latency = re.search(r"latency average = ([\d.]+) ms", output)
    transactions = int(processed.group(1)) if processed else None
    figures = {"events_per_second": float(tps.group(1)) * rows, "transactions": transactions,
               "failed": int(failed.group(1)) if failed else 0, "seconds": duration, "clients": clients,
               "events_per_transaction": rows, "latency_mean_ms": float(latency.group(1)) if latency else None,
               "database_cpu_us_per_event": cpu * 1e6 / (transactions * rows) if transactions else None}
    log(f"{label}, {clients} clients x{rows}: {figures['events_per_second']:.0f} events/s, "
        f"mean latency {figures['latency_mean_ms']} ms, failed {figures['failed']}, "
        f"database CPU {fmt(figures['database_cpu_us_per_event'], 1)} µs/event")
    return figures


def ping_run(ctx, server, clients):
    """`GET /ping` from `clients` connections: the server's CPU time per
    HTTP request with no store and no rendering."""
    paths = ctx.workdir / "ping-paths.txt"
    paths.write_text("/ping\n")
    args = [paths, "application/json", "-"]
    ctx.wrk.run(server.port, "read_list", args, clients, duration=ctx.settings.warmup)
    figures = ctx.wrk.run(server.port, "read_list", args, clients, server=server.process.pid)
    requests = figures["requests"]
    figures["cpu_us_per_request"] = (figures["server_cpu_seconds"] * 1e6 / requests
                                     if figures.get("server_cpu_seconds") and requests else None)
    log(f"eventfeed /ping, {clients} connections: {figures['rps']:.0f} req/s, "
        f"{fmt(figures['cpu_us_per_request'], 1)} µs of CPU per request")
    return figures


def floor_bounds(ctx, result):
    """The section's bounds (see the docstring): events/s that the server
    CPUs' time allows at the floor's costs, for one event per request and
    for the batches' size; None without pinning or CPU figures."""
    floors = result.get("floor"), result.get("floor_appends")
    ping, cpus = result.get("ping"), ctx.pinning.server_cpu_set()
    if not all(floors) or not ping or not cpus or not ping["cpu_us_per_request"]:
        return None
    if not all(floor["database_cpu_us_per_event"] for floor in floors):
        return None
    per_request = ping["cpu_us_per_request"]
    return {"cpus": len(cpus),
            "appends": len(cpus) * 1e6 / (per_request + floors[1]["database_cpu_us_per_event"]),
            "batches": len(cpus) * 1e6 / (per_request / result["batch_size"] + floors[0]["database_cpu_us_per_event"])}


def append_run(ctx, server, clients, batch, label, duration=None, database=None):
    """wrk's appends; the server's CPU time counted with its database's
    (`database`, the cluster), which shares the server CPUs."""
    nonce = f"{random.getrandbits(32):08x}"
    groups = (server.process.pid, database.process.pid) if database else server.process.pid
    figures = ctx.wrk.run(server.port, "append", [nonce, ctx.settings.append_streams, batch], clients,
                          duration=duration, server=groups)
    figures["events_per_request"] = batch
    figures["events_per_second"] = (figures["requests"] - figures["errors"]) * batch / figures["seconds"]
    if duration is None:
        log(f"{label} appends, {clients} clients x{batch}: {figures['events_per_second']:.0f} events/s, "
            f"p99 {figures['p99_us'] / 1000:.2f} ms, errors {figures['errors']}, "
            f"others on the server CPU {fmt_share(figures.get('others_cpu_share'))}")
    return figures


def combined(runs):
    """Rounds of one workload as one figure: the rate over all of them,
    the highest p50 and p99, errors summed."""
    seconds = sum(run["seconds"] for run in runs)
    out = {"events_per_second": sum(run["events_per_second"] * run["seconds"] for run in runs) / seconds,
           "rounds": [run["events_per_second"] for run in runs], "seconds": seconds}
    if "p99_us" in runs[0]:
        out.update(p50_us=max(run["p50_us"] for run in runs), p99_us=max(run["p99_us"] for run in runs),
                   errors=sum(run["errors"] for run in runs),
                   others_cpu_share=statistics.mean(run.get("others_cpu_share") or 0 for run in runs),
                   server_cpu_seconds=sum(run.get("server_cpu_seconds") or 0 for run in runs))
    else:
        out.update(failed=sum(run["failed"] for run in runs),
                   latency_mean_ms=statistics.mean(run["latency_mean_ms"] or 0 for run in runs))
    return out


def cpu_per_event(figures, per_request=1):
    """The server CPUs' time (eventfeed's, and its database's where it has
    one) per event, in µs, or None."""
    events = figures.get("events_per_second", figures.get("rps", 0) * per_request) * figures["seconds"]
    cpu = figures.get("server_cpu_seconds")
    return cpu * 1e6 / events if cpu and events else None


def top_statements(cluster):
    return [{"share_percent": float(share), "calls": int(calls), "mean_ms": float(mean), "rows_per_call": float(rows),
             "query": query}
            for share, calls, mean, rows, query in cluster.sql(DATABASE, TOP_STATEMENTS)]


def build_run(start, label):
    """Turns the `$ce-` projection off and on again and times its build from
    the log: from the start of the server with it on (its build starts as
    it opens the store) until `/info` lists nothing being built. `start`
    starts the server with extra options."""
    start(("--projection-by-category", "false")).stop()
    started = time.monotonic()
    server = start(())
    try:
        def info():
            return json.loads(http_request(server.port, "GET", "/info")[2])
        log(f"{label}: building $ce- from the log")
        wait_until(lambda: not info()["projectionsBuilding"], 1800, f"{label}: the build of $ce-")
        seconds = time.monotonic() - started
        events = info()["nextPosition"]
    finally:
        server.stop()
    return {"events": events, "seconds": seconds, "events_per_second": events / seconds}


def measure_postgres(ctx, result):
    settings = ctx.settings
    cluster = Postgres(ctx.workdir / "postgres", ctx.pinning)
    server = None
    try:
        result["postgres"] = {"version": cluster.sql("postgres", "SHOW server_version")[0][0],
                              "settings": Postgres.SETTINGS}
        cluster.sql("postgres", f"CREATE DATABASE {DATABASE}")
        cluster.sql(DATABASE, "CREATE EXTENSION pg_stat_statements")
        cluster.sql(DATABASE, BASELINE_TABLE)
        server = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / "postgres-eventfeed", "fsync",
                           ("--store", cluster.url(DATABASE)), binary=eventfeed_postgres_binary())
        clients = settings.postgres_clients
        # Unrecorded: the first seconds of a fresh table are unlike the rest.
        pgbench(ctx, cluster, clients, settings.warmup)
        append_run(ctx, server, clients, 1, "eventfeed on PostgreSQL", duration=settings.warmup, database=cluster)
        cluster.sql(DATABASE, "SELECT pg_stat_statements_reset()")
        runs = {"baseline": [], "eventfeed": []}
        for round_index in range(settings.postgres_rounds):
            order = ("baseline", "eventfeed") if round_index % 2 == 0 else ("eventfeed", "baseline")
            for kind in order:
                if kind == "baseline":
                    runs[kind].append(pgbench(ctx, cluster, clients, settings.duration))
                else:
                    runs[kind].append(append_run(ctx, server, clients, 1, "eventfeed on PostgreSQL", database=cluster))
        # In rounds too: one run of a few seconds can fall on a pause of
        # the database's own (an autovacuum of the tables the appends grew).
        batches = [append_run(ctx, server, settings.batch_clients, settings.batch_size, "eventfeed on PostgreSQL",
                              database=cluster) for _ in range(settings.postgres_rounds)]
        result["append_statements"] = top_statements(cluster)
        # The floor's CPU is the whole cluster's: no maintenance of the
        # tables the workloads above grew may fall into it (their own runs
        # paid it as it came); its own table's, it pays.
        cluster.sql(DATABASE, "VACUUM ANALYZE")
        cluster.sql(DATABASE, "CHECKPOINT")
        cluster.sql(DATABASE, FLOOR_TABLE)
        # The batches' floor: their clients and size. The appends' floor:
        # every client's event in one transaction, the most that group
        # commit could ever gather (the database's cost per event only
        # falls as transactions grow).
        for key, floor_clients, rows in (("floor", settings.batch_clients, settings.batch_size),
                                         ("floor_appends", FLOOR_APPENDS_CLIENTS, clients)):
            floor = [pgbench(ctx, cluster, floor_clients, settings.duration, FLOOR_SCRIPT, rows, "the floor: bare rows")
                     for _ in range(settings.postgres_rounds)]
            result[key] = dict(combined(floor), runs=floor, database_cpu_us_per_event=statistics.mean(
                run["database_cpu_us_per_event"] for run in floor))
        # Gone before the reads: its rows would only leave the autovacuum
        # work to do while they are measured, and the database's size.
        cluster.sql(DATABASE, "DROP TABLE floor_events; DROP SEQUENCE floor_numbers")
        result["ping"] = ping_run(ctx, server, clients)
        result["baseline"] = dict(combined(runs["baseline"]), runs=runs["baseline"])
        result["appends"] = dict(combined(runs["eventfeed"]), runs=runs["eventfeed"])
        result["batches"] = dict(combined(batches), runs=batches)

        log(f"filling PostgreSQL: {settings.read_streams} streams x {EVENTS_PER_READ_STREAM} events")
        fill_streams(server.port, READ_STREAM_PREFIX, settings.read_streams, EVENTS_PER_READ_STREAM,
                     lambda n: "OrderPlaced")
        cluster.sql(DATABASE, "VACUUM ANALYZE")
        cluster.sql(DATABASE, "SELECT pg_stat_statements_reset()")
        result["reads"] = ctx.read_run(server.port, "atom", settings.read_streams, label="eventfeed on PostgreSQL",
                                       server=(server.process.pid, cluster.process.pid))
        result["read_statements"] = top_statements(cluster)
        # The same pages with the rendered-page cache off: every page read
        # from the database and rendered.
        server.stop()
        server = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / "postgres-eventfeed", "fsync",
                           ("--store", cluster.url(DATABASE), "--page-cache-mb", "0"),
                           binary=eventfeed_postgres_binary())
        result["reads_without_page_cache"] = ctx.read_run(
            server.port, "atom", settings.read_streams, label="eventfeed on PostgreSQL without the page cache",
            server=(server.process.pid, cluster.process.pid))
        result["database_bytes"] = int(cluster.sql(DATABASE, "SELECT pg_database_size(current_database())")[0][0])
        server.stop()
        server = None
        result["build"] = build_run(
            lambda options: Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / "postgres-eventfeed", "fsync",
                                      ("--store", cluster.url(DATABASE), *options),
                                      binary=eventfeed_postgres_binary()), "eventfeed on PostgreSQL")
    finally:
        if server:
            server.stop()
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


def measure_sled(ctx, result):
    settings = ctx.settings
    server = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / "postgres-sled-reference", "fsync")
    try:
        append_run(ctx, server, settings.postgres_clients, 1, "sled", duration=settings.warmup)
        result["appends"] = append_run(ctx, server, settings.postgres_clients, 1, "sled")
        result["batches"] = append_run(ctx, server, settings.batch_clients, settings.batch_size, "sled")
        server.stop()
        result["build"] = build_run(
            lambda options: Eventfeed(ctx.workdir, ctx.pinning, server.data_dir, "fsync", options), "sled")
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
    read_server = ctx.ensure_read_server()
    result["reads"] = ctx.read_run(read_server.port, "atom", settings.read_streams, label="eventfeed on sled",
                                   server=read_server.process.pid)
    result["reads_without_page_cache"] = ctx.read_runs_without_page_cache(
        ["atom"], label="eventfeed on sled without the page cache")["atom"]


def measure(ctx, result):
    settings = ctx.settings
    result.update(clients=settings.postgres_clients, batch_clients=settings.batch_clients,
                  batch_size=settings.batch_size, rounds=settings.postgres_rounds,
                  read_streams=settings.read_streams, streams=settings.append_streams)
    result["sled"] = sled = {}
    measure_postgres(ctx, result)
    measure_sled(ctx, sled)
    result["appends_over_baseline"] = ratio(result["appends"]["events_per_second"],
                                            result["baseline"]["events_per_second"])
    result["appends_over_sled"] = ratio(result["appends"]["events_per_second"], sled["appends"]["events_per_second"])
    result["batches_over_sled"] = ratio(result["batches"]["events_per_second"], sled["batches"]["events_per_second"])
    result["reads_over_sled"] = ratio(result["reads"]["rps"], sled["reads"]["rps"])
    bounds = floor_bounds(ctx, result)
    if bounds:
        result["bounds"] = bounds
        result["appends_over_bound"] = ratio(result["appends"]["events_per_second"], bounds["appends"])
        result["batches_over_bound"] = ratio(result["batches"]["events_per_second"], bounds["batches"])
        result["batches_over_floor"] = ratio(result["batches"]["events_per_second"],
                                             result["floor"]["events_per_second"])
    if "build" in result and "build" in sled:
        result["build_over_sled"] = ratio(result["build"]["events_per_second"], sled["build"]["events_per_second"])
    if "reads_without_page_cache" in result:
        result["reads_without_page_cache_over_sled"] = ratio(result["reads_without_page_cache"]["rps"],
                                                             sled["reads_without_page_cache"]["rps"])


def verdicts(result):
    """Whether each target is met: (appends, batches, pages)."""
    appends, batches, reads = result.get("appends"), result.get("batches"), result.get("reads")
    over = result.get("appends_over_baseline")
    return (appends is not None and appends["events_per_second"] >= targets.POSTGRES_APPENDS_PER_SECOND
            and over is not None and over >= targets.POSTGRES_APPENDS_OVER_BASELINE and appends["errors"] == 0,
            batches is not None and batches["events_per_second"] >= targets.POSTGRES_BATCH_EVENTS_PER_SECOND
            and batches["errors"] == 0,
            reads is not None and reads["rps"] >= targets.POSTGRES_PAGES_PER_SECOND and reads["errors"] == 0)


def summary(result):
    if "appends" not in result or "reads" not in result:
        return []
    appends_met, batches_met, reads_met = verdicts(result)
    sled = result["sled"]
    return [
        [f"PostgreSQL backend, {result['clients']} clients, durable single-event appends",
         f"{fmt(result['appends']['events_per_second'])} events/s",
         f"pgbench, one INSERT per transaction: {fmt(result['baseline']['events_per_second'])}/s "
         f"({times(result.get('appends_over_baseline'), 'pgbench')}); sled: "
         f"{fmt(sled['appends']['events_per_second'])} events/s ({times(result.get('appends_over_sled'), 'sled')})",
         f"{targets.target('postgres_appends')}: {verdict(appends_met)}"],
        [f"PostgreSQL backend, {result['batch_clients']} clients, durable {result['batch_size']}-event batches",
         f"{fmt(result['batches']['events_per_second'])} events/s",
         f"sled: {fmt(sled['batches']['events_per_second'])} events/s "
         f"({times(result.get('batches_over_sled'), 'sled')})"
         + (f"; the floor, PostgreSQL alone storing bare rows: {fmt(result['floor']['events_per_second'])} "
            f"events/s ({times(result.get('batches_over_floor'), 'the floor')})" if "floor" in result else ""),
         f"{targets.target('postgres_batches')}: {verdict(batches_met)}"],
        ["PostgreSQL backend, uncached 20-entry Atom page (the page cache on)", f"{fmt(result['reads']['rps'])} req/s",
         f"sled: {fmt(sled['reads']['rps'])} req/s ({times(result.get('reads_over_sled'), 'sled')})"
         + (f"; without the page cache {fmt(result['reads_without_page_cache']['rps'])} vs sled's "
            f"{fmt(sled['reads_without_page_cache']['rps'])} req/s" if "reads_without_page_cache" in result else ""),
         f"{targets.target('postgres_page')}: {verdict(reads_met)}"],
    ]


def floor_paragraph(result):
    """The floor's figures and the bounds they set, against the targets."""
    floor, ping, bounds = result.get("floor"), result.get("ping"), result.get("bounds")
    floor_appends = result.get("floor_appends")
    if not floor or not floor_appends or not ping or not bounds:
        return []
    wanted = targets.POSTGRES_APPENDS_OVER_BASELINE * result["baseline"]["events_per_second"]

    def against(bound, target):
        return "out of reach on this machine" if bound < target else "within the bound"

    rounds = ", ".join(fmt(value) for value in floor["rounds"])
    return [f"**The floor on this machine.** PostgreSQL alone, storing {floor['runs'][0]['events_per_transaction']}"
            f"-event batches from {floor['runs'][0]['clients']} pgbench clients as bare rows (the columns of "
            "`events`; indexes on the position, unique (stream, id) and unique (stream, number); nothing else "
            f"written, no HTTP): **{fmt(floor['events_per_second'])} events/s** (rounds {rounds}), "
            f"{fmt(floor['database_cpu_us_per_event'], 1)} µs of the server CPUs' time per event; in transactions "
            f"of {floor_appends['runs'][0]['events_per_transaction']} rows (every client's append in one commit, "
            f"from {floor_appends['runs'][0]['clients']} pgbench clients): {fmt(floor_appends['events_per_second'])} "
            f"events/s, {fmt(floor_appends['database_cpu_us_per_event'], 1)} µs per event. `GET /ping` on "
            f"the same eventfeed server from {ping['connections']} connections: {fmt(ping['rps'])} req/s, "
            f"{fmt(ping['cpu_us_per_request'], 1)} µs per request. With both on the same {bounds['cpus']} server "
            f"CPU(s), no server can take single-event appends faster than **{fmt(bounds['appends'])} events/s** "
            f"(the 5 × pgbench target asks for {fmt(wanted)}: {against(bounds['appends'], wanted)}; eventfeed ran "
            f"at {times(result.get('appends_over_bound'), 'this bound')}), nor {result['batch_size']}-event "
            f"batches, each committed on its own, faster than **{fmt(bounds['batches'])} events/s** (the target "
            f"asks for {fmt(targets.POSTGRES_BATCH_EVENTS_PER_SECOND)}: "
            f"{'above this bound' if bounds['batches'] < targets.POSTGRES_BATCH_EVENTS_PER_SECOND else 'within it'}"
            "; a server that commits several batches together, as eventfeed's writer does, pays less per event "
            "than this floor; eventfeed ran at "
            f"{times(result.get('batches_over_bound'), 'this bound')}, "
            f"{times(result.get('batches_over_floor'), 'the floor')}'s own rate).", ""]


def statements_table(statements):
    rows = [[fmt(s["share_percent"], 1) + " %", fmt(s["calls"]), fmt(s["mean_ms"], 3), fmt(s["rows_per_call"], 1),
             "`" + s["query"].replace("|", "\\|").replace("`", "'") + "`"] for s in statements]
    return table(["share of the database's time", "calls", "mean ms", "rows/call", "statement"], rows)


def render(result, settings):
    appends_met, batches_met, reads_met = verdicts(result)
    sled = result["sled"]
    baseline, appends, batches, reads = result["baseline"], result["appends"], result["batches"], result["reads"]
    per_round = ", ".join(fmt(value) for value in appends["rounds"])
    baseline_rounds = ", ".join(fmt(value) for value in baseline["rounds"])
    rows = [
        [f"durable single-event appends, {result['clients']} clients", f"{fmt(appends['events_per_second'])} events/s",
         ms(appends, "p50_us"), ms(appends, "p99_us"), errors(appends),
         f"pgbench, one INSERT per transaction, {result['clients']} clients: "
         f"{fmt(baseline['events_per_second'])}/s (mean latency {fmt(baseline['latency_mean_ms'], 2)} ms, "
         f"{baseline['failed']} failed); rounds: eventfeed {per_round}, pgbench {baseline_rounds}",
         f"**{times(result.get('appends_over_baseline'), 'pgbench')}**",
         f"{fmt(sled['appends']['events_per_second'])} events/s (p99 {ms(sled['appends'], 'p99_us')} ms)",
         f"**{times(result.get('appends_over_sled'), 'sled')}**",
         f"{targets.target('postgres_appends')}: {verdict(appends_met)}"],
        [f"durable {result['batch_size']}-event batches, {result['batch_clients']} clients",
         f"{fmt(batches['events_per_second'])} events/s", ms(batches, "p50_us"), ms(batches, "p99_us"),
         errors(batches), "—", "—",
         f"{fmt(sled['batches']['events_per_second'])} events/s (p99 {ms(sled['batches'], 'p99_us')} ms)",
         f"**{times(result.get('batches_over_sled'), 'sled')}**",
         f"{targets.target('postgres_batches')}: {verdict(batches_met)}"],
        [f"uncached 20-entry Atom pages, {settings.read_connections} connections (no HTTP cache; the server's "
         "page cache on, its default)", f"{fmt(reads['rps'])} req/s",
         ms(reads, "p50_us"), ms(reads, "p99_us"), errors(reads), "—", "—",
         f"{fmt(sled['reads']['rps'])} req/s (p99 {ms(sled['reads'], 'p99_us')} ms)",
         f"**{times(result.get('reads_over_sled'), 'sled')}**",
         f"{targets.target('postgres_page')}: {verdict(reads_met)}"],
    ]
    without = result.get("reads_without_page_cache")
    if without:
        sled_without = sled["reads_without_page_cache"]
        rows.append([f"the same pages without the page cache (`--page-cache-mb 0`): every page read from the "
                     "store and rendered", f"{fmt(without['rps'])} req/s", ms(without, "p50_us"),
                     ms(without, "p99_us"), errors(without), "—", "—",
                     f"{fmt(sled_without['rps'])} req/s (p99 {ms(sled_without, 'p99_us')} ms)",
                     f"**{times(result.get('reads_without_page_cache_over_sled'), 'sled')}**", "—"])
    build, sled_build = result.get("build"), sled.get("build")
    if build and sled_build:
        rows.append([f"`$ce-` built from the log ({fmt(build['events'])} events; sled's store "
                     f"{fmt(sled_build['events'])}), from the server's start until `/info` lists no build",
                     f"{fmt(build['events_per_second'])} events/s ({fmt(build['seconds'], 1)} s)", "—", "—", "—",
                     "—", "—", f"{fmt(sled_build['events_per_second'])} events/s ({fmt(sled_build['seconds'], 1)} s)",
                     f"**{times(result.get('build_over_sled'), 'sled')}**", "—"])
    out = [table(["workload", "eventfeed on PostgreSQL", "p50 ms", "p99 ms", "errors", "baseline, same database",
                  "÷ baseline", "eventfeed on sled, same run", "÷ sled", "target"], rows), ""]
    out += floor_paragraph(result)
    cpu = [(name, cpu_per_event(result[key]), cpu_per_event(sled[key]))
           for name, key in (("appends", "appends"), ("batches", "batches"), ("pages", "reads"),
                             ("pages without the page cache", "reads_without_page_cache")) if key in result]
    out += ["**CPU per event or page** (µs of the server CPUs' time: eventfeed's and PostgreSQL's processes, "
            "against eventfeed's on sled): " + "; ".join(f"{name} {fmt(pg, 1)} vs {fmt(own, 1)}"
                                                         for name, pg, own in cpu) + ".", ""]
    pg = result.get("postgres", {})
    if result.get("append_statements"):
        out += ["Where the database's time went during eventfeed's appends (pg_stat_statements, both append "
                "workloads, the baseline's INSERT included):", "", statements_table(result["append_statements"]), ""]
    if result.get("read_statements"):
        out += ["And during its page reads:", "", statements_table(result["read_statements"]), ""]
    configured = ", ".join(f"`{name}={value}`" for name, value in pg.get("settings", {}).items())
    size = (f" The database held {fmt(result['database_bytes'] / 2**20)} MiB at the end."
            if result.get("database_bytes") else "")
    out.append(f"Method: one PostgreSQL {pg.get('version', '?')} cluster of the run's own (initdb on the data disk, "
               f"loopback TCP, pinned with the servers), settings {configured}; the rest PostgreSQL's defaults. "
               f"*Baseline*: pgbench with 64 clients (`-j 1 -M prepared`), a script of one INSERT per transaction "
               "into a table with the columns of eventfeed's `events`, a `bigserial` position and a unique "
               "(stream, id) index (the section's docstring has the script), in the same database, alternating with "
               f"eventfeed's appends in {result['rounds']} round(s) of {settings.duration} s after an unrecorded "
               "warm-up of each. *eventfeed on PostgreSQL*: the release build with the `postgres` feature, "
               "`--store postgres://…`, default durability (synchronous_commit on): POST events+json to one of "
               f"{result['streams']} streams at random, one wrk connection per client; pages: full forward Atom "
               f"pages picked at random from {fmt(result['read_streams'] * EVENTS_PER_READ_STREAM)} events "
               f"({result['read_streams']} streams × {EVENTS_PER_READ_STREAM}) written to the same database, after "
               f"{settings.warmup} s of warm-up. *sled*: the default build on a fresh store, the same append "
               "workloads; pages from the run's read store, of the same shape." + size)
    return out
