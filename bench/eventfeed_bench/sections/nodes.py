"""Several eventfeed nodes on one PostgreSQL database, and a failover
with Patroni (issue 31), in one run.

On this 2-core machine the two nodes share the server CPUs with each
other and with PostgreSQL, so the two-node figures are a ratio to one
node on the same database, not a scale-out figure: what a second node
costs (or gains) when nothing else changes.

- **Appends**: durable single-event appends, 64 wrk connections to node A
  alone, then 32 to A and 32 to B at once; the same database, the same
  streams.
- **Uncached pages**: random full 20-entry Atom pages of 1,000 streams x
  100 events written beforehand, 16 connections to A alone, then 8 to A
  and 8 to B at once.
- **Cross-node wake-up**: N long-polls on node B past the end of a stream,
  one append on node A; each waiter's latency from the arrival of A's
  `201` to the arrival of its answer (kernel timestamps, bench/longpoll.py).
  Reference: the same with the waiters and the append on node A.
- **Failover**: a Patroni cluster (servers.Patroni: etcd, a primary and a
  synchronous standby, 10 s leader-key time to live), one eventfeed node on
  the multi-host connection string, 8 threads appending one event at a
  time; the primary's Patroni and postmaster are killed with -9. The
  outage is the longest time without any acknowledged append; the
  reference is Patroni's own part of it: from the kill until the standby's
  REST API answers `/primary` with 200. Afterwards every acknowledged
  event is read back."""

import shutil
import threading
import time
import uuid
from urllib.parse import urlsplit

from .. import targets
from ..common import (ATOM_JSON, ATOM_XML, EVENTS_PER_READ_STREAM, PAGE_SIZE, PAGES_PER_READ_STREAM, READ_STREAM_PREFIX,
                      eventfeed_postgres_binary, fill_streams, http_request, log, longpoll, wait_until)
from ..fmt import errors, fmt, ms, ratio, table, times, verdict
from ..servers import Eventfeed, Patroni, Postgres

TITLE = "Several nodes on PostgreSQL"
DATABASE = "nodes"
WAKE_WAITERS = (100, 1000)
FAILOVER_CLIENTS = 8
EVENTS_JSON = "application/vnd.eventstore.events+json"


def parallel(runs):
    """Runs each thunk in its own thread; their results in order."""
    results = [None] * len(runs)
    errors_seen = []

    def run(index, thunk):
        try:
            results[index] = thunk()
        except Exception as error:  # noqa: BLE001 - re-raised below
            errors_seen.append(error)

    threads = [threading.Thread(target=run, args=(index, thunk)) for index, thunk in enumerate(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors_seen:
        raise errors_seen[0]
    return results


def sum_runs(runs, per_request=1):
    """Two nodes' simultaneous wrk runs as one figure."""
    seconds = max(run["seconds"] for run in runs)
    requests = sum(run["requests"] for run in runs)
    failed = sum(run["errors"] for run in runs)
    return {"rps": requests / seconds, "events_per_second": (requests - failed) * per_request / seconds,
            "errors": failed, "p50_us": max(run["p50_us"] for run in runs),
            "p99_us": max(run["p99_us"] for run in runs), "runs": runs}


def append_figures(ctx, port, connections, duration=None):
    nonce = uuid.uuid4().hex[:8]
    figures = ctx.wrk.run(port, "append", [nonce, ctx.settings.append_streams, 1], connections, duration=duration)
    figures["events_per_second"] = (figures["requests"] - figures["errors"]) / figures["seconds"]
    return figures


def read_figures(ctx, port, connections, duration=None):
    args = ["-", READ_STREAM_PREFIX, ctx.settings.read_streams, PAGES_PER_READ_STREAM, PAGE_SIZE, "-", ATOM_XML,
            "-", "-"]
    return ctx.wrk.run(port, "read_pages", args, connections, duration=duration)


def measure_nodes(ctx, result):
    settings = ctx.settings
    cluster = Postgres(ctx.workdir / "nodes-postgres", ctx.pinning)
    nodes = []
    try:
        cluster.sql("postgres", f"CREATE DATABASE {DATABASE}")
        for name in ("a", "b"):
            nodes.append(Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / f"nodes-{name}", "fsync",
                                   ("--store", cluster.url(DATABASE)), binary=eventfeed_postgres_binary()))
        a, b = nodes
        half = settings.postgres_clients // 2
        append_figures(ctx, a.port, settings.postgres_clients, duration=settings.warmup)
        one = append_figures(ctx, a.port, settings.postgres_clients)
        two = sum_runs(parallel([lambda: append_figures(ctx, a.port, half), lambda: append_figures(ctx, b.port, half)]))
        result["appends"] = {"one": one, "two": two,
                             "ratio": ratio(two["events_per_second"], one["events_per_second"])}
        log(f"appends, {settings.postgres_clients} clients: one node {one['events_per_second']:.0f} events/s, "
            f"two nodes {two['events_per_second']:.0f} events/s")

        log(f"filling PostgreSQL: {settings.read_streams} streams x {EVENTS_PER_READ_STREAM} events")
        fill_streams(a.port, READ_STREAM_PREFIX, settings.read_streams, EVENTS_PER_READ_STREAM,
                     lambda n: "OrderPlaced")
        cluster.sql(DATABASE, "VACUUM ANALYZE")
        connections = settings.read_connections
        read_figures(ctx, a.port, connections, duration=settings.warmup)
        one = read_figures(ctx, a.port, connections)
        two = sum_runs(parallel([lambda: read_figures(ctx, a.port, connections // 2),
                                 lambda: read_figures(ctx, b.port, connections // 2)]))
        result["reads"] = {"one": one, "two": two, "ratio": ratio(two["rps"], one["rps"])}
        log(f"pages, {connections} connections: one node {one['rps']:.0f} req/s, two nodes {two['rps']:.0f} req/s")

        longpoll.raise_open_file_limit()
        result["wakeups"] = []
        for waiters in WAKE_WAITERS:
            figures = {"waiters": waiters}
            for label, append_port in (("same", None), ("cross", a.port)):
                waiting_on = a if label == "same" else b
                stream = f"bench-nodes-{uuid.uuid4().hex[:8]}"
                status = http_request(a.port, "POST", f"/streams/{stream}", {"Content-Type": EVENTS_JSON},
                                      f'[{{"eventId": "{uuid.uuid4()}", "eventType": "Start", "data": {{}}}}]'
                                      .encode())[0]
                if status != 201:
                    raise RuntimeError(f"wake-up set-up append answered {status}")
                measured = longpoll.measure("127.0.0.1", waiting_on.port, stream, 1, waiters,
                                            event_id=str(uuid.uuid4()), append_port=append_port, timeout=180)
                measured.pop("response", None)
                figures[label] = measured
                wait_until(lambda: longpoll.http_get_json("127.0.0.1", waiting_on.port, "/info")["waiters"] == 0,
                           60, "the waiters to leave")
            figures["over_same"] = ratio(figures["cross"]["p99_ms"], figures["same"]["p99_ms"])
            log(f"wake-up, {waiters} waiters: on the appending node p99 {fmt(figures['same']['p99_ms'], 2)} ms, "
                f"on the other node p99 {fmt(figures['cross']['p99_ms'], 2)} ms "
                f"(woken {figures['cross']['woken']} of {waiters})")
            result["wakeups"].append(figures)
    finally:
        for node in nodes:
            node.stop()
            shutil.rmtree(node.data_dir, ignore_errors=True)
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


def measure_failover(ctx, result):
    cluster = Patroni(ctx.workdir / "nodes-patroni", ctx.pinning)
    node = None
    try:
        node = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / "nodes-failover", "fsync",
                         ("--store", cluster.url()), binary=eventfeed_postgres_binary())
        stop = threading.Event()
        acknowledged, refused, lock = [], {}, threading.Lock()

        def client(index):
            while not stop.is_set():
                event_id = str(uuid.uuid4())
                body = f'[{{"eventId": "{event_id}", "eventType": "Loaded", "data": {{"client": {index}}}}}]'
                try:
                    status, headers, _ = http_request(node.port, "POST", f"/streams/failover-{index}",
                                                      {"Content-Type": EVENTS_JSON}, body.encode(), timeout=10)
                except OSError:
                    status, headers = 0, {}
                location = next((value for name, value in headers.items() if name.lower() == "location"), "")
                with lock:
                    if status == 201:
                        acknowledged.append((time.monotonic(), index, event_id, urlsplit(location).path))
                    else:
                        refused[status] = refused.get(status, 0) + 1
                if status != 201:
                    time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(index,)) for index in range(FAILOVER_CLIENTS)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 200, 60, "200 acknowledged appends")
        old_primary = cluster.primary()
        killed_at = time.monotonic()
        cluster.kill_member(old_primary)
        wait_until(lambda: cluster.primary() not in (None, old_primary), 120, "the standby's promotion")
        promoted_after = time.monotonic() - killed_at
        before = len(acknowledged)
        wait_until(lambda: len(acknowledged) >= before + 200, 120, "appends acknowledged again")
        stop.set()
        for thread in threads:
            thread.join()
        times_acked = sorted(at for at, _, _, _ in acknowledged)
        gaps = [later - earlier for earlier, later in zip(times_acked, times_acked[1:])]
        outage = max(gaps)
        # Read back: every acknowledged event is where its Location said.
        missing = 0
        for _, _, event_id, path in acknowledged:
            status, _, body = http_request(node.port, "GET", path, {"Accept": ATOM_JSON})
            if status != 200 or event_id.encode() not in body:
                missing += 1
        result["failover"] = {"outage_seconds": outage, "promotion_seconds": promoted_after,
                              "eventfeed_seconds": outage - promoted_after, "acknowledged": len(acknowledged),
                              "refused": {str(status): count for status, count in refused.items()},
                              "lost": missing}
        log(f"failover: promoted after {promoted_after:.1f} s; appends refused for {outage:.1f} s; "
            f"{len(acknowledged)} acknowledged, {missing} lost; refused {refused}")
    finally:
        if node:
            node.stop()
            shutil.rmtree(node.data_dir, ignore_errors=True)
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


def measure(ctx, result):
    result.update(clients=ctx.settings.postgres_clients, read_connections=ctx.settings.read_connections,
                  read_streams=ctx.settings.read_streams)
    measure_nodes(ctx, result)
    measure_failover(ctx, result)


def wake_met(result):
    cross = [w["cross"]["p99_ms"] for w in result.get("wakeups", []) if w["waiters"] == WAKE_WAITERS[0]]
    return bool(cross) and cross[0] is not None and cross[0] <= targets.CLUSTER_WAKE_P99_MS


def summary(result):
    if "wakeups" not in result:
        return []
    rows = []
    wake = next((w for w in result["wakeups"] if w["waiters"] == WAKE_WAITERS[0]), None)
    if wake:
        rows.append([f"long-poll on node B woken by an append on node A, {wake['waiters']} waiters, p99 after the 201",
                     f"{fmt(wake['cross']['p99_ms'], 2)} ms",
                     f"waiters on the appending node: {fmt(wake['same']['p99_ms'], 2)} ms",
                     f"{targets.target('cluster_longpoll')}: {verdict(wake_met(result))}"])
    failover = result.get("failover")
    if failover:
        rows.append(["failover (Patroni, synchronous standby): appends refused for",
                     f"{fmt(failover['outage_seconds'], 1)} s, {failover['lost']} acknowledged lost",
                     f"Patroni's promotion alone: {fmt(failover['promotion_seconds'], 1)} s",
                     f"{targets.target('cluster_failover')}: {verdict(failover['lost'] == 0)}"])
    return rows


def render(result, settings):
    appends, reads = result["appends"], result["reads"]
    rows = [
        [f"durable single-event appends, {result['clients']} connections",
         f"{fmt(appends['one']['events_per_second'])} events/s (p99 {ms(appends['one'], 'p99_us')} ms)",
         f"{fmt(appends['two']['events_per_second'])} events/s (p99 {ms(appends['two'], 'p99_us')} ms)",
         errors(appends["two"]), f"**{times(appends['ratio'], 'one node')}**"],
        [f"uncached 20-entry Atom pages, {result['read_connections']} connections",
         f"{fmt(reads['one']['rps'])} req/s (p99 {ms(reads['one'], 'p99_us')} ms)",
         f"{fmt(reads['two']['rps'])} req/s (p99 {ms(reads['two'], 'p99_us')} ms)",
         errors(reads["two"]), f"**{times(reads['ratio'], 'one node')}**"],
    ]
    out = [table(["workload", "one node", "two nodes, load split", "errors (two)", "two ÷ one"], rows), ""]
    wake_rows = [[fmt(w["waiters"]), f"{fmt(w['same']['p50_ms'], 2)} / {fmt(w['same']['p99_ms'], 2)}",
                  f"{fmt(w['cross']['p50_ms'], 2)} / {fmt(w['cross']['p99_ms'], 2)}",
                  f"{w['cross']['woken']} of {w['waiters']}", times(w["over_same"], "same node"),
                  f"{targets.target('cluster_longpoll')}: {verdict(wake_met(result))}"
                  if w["waiters"] == WAKE_WAITERS[0] else "—"]
                 for w in result["wakeups"]]
    out += [table(["waiters", "same node: p50 / p99 ms after the 201", "other node: p50 / p99 ms", "woken",
                   "other ÷ same (p99)", "target"], wake_rows), ""]
    failover = result.get("failover")
    if failover:
        refused = ", ".join(f"{count} × {status if status != '0' else 'no answer'}"
                            for status, count in sorted(failover["refused"].items()))
        out += [table(["failover", "appends refused for", "Patroni's promotion (reference)", "eventfeed's part",
                       "acknowledged", "lost", "refusals"],
                      [["kill -9 of the primary's Patroni and postmaster", f"{fmt(failover['outage_seconds'], 1)} s",
                        f"{fmt(failover['promotion_seconds'], 1)} s", f"{fmt(failover['eventfeed_seconds'], 1)} s",
                        fmt(failover["acknowledged"]), fmt(failover["lost"]), refused]]), ""]
    out.append("Method: one PostgreSQL cluster of the run's own (servers.Postgres, the postgres section's settings) "
               "and two eventfeed nodes on one database in it (the release build with the `postgres` feature); "
               "appends: wrk POSTs of one event to one of the appends section's streams; pages: random full "
               f"forward pages of {result['read_streams']} streams × {EVENTS_PER_READ_STREAM} events, after a "
               f"warm-up; {settings.duration} s each. On two cores the nodes and PostgreSQL share the server CPUs: "
               "the two-node figures say what a second node costs on one machine, not what it gains on two. "
               "Wake-ups: bench/longpoll.py, kernel timestamps, the append on node A. Failover: servers.Patroni "
               f"(10 s leader-key time to live), one node on the multi-host string, {FAILOVER_CLIENTS} threads "
               "appending one event at a time; the outage is the longest gap between acknowledgements; every "
               "acknowledged event is read back afterwards.")
    return out
