"""The stories eventfeed exists for (docs/recipes.md, issue 33), each
figure beside a reference measured in the same run:

1. the Care button: 4 read-side instances (processes) sharing a persistent
   subscription drain the clicks; throughput with 1 to 4 instances, against
   the append rate of the same server;
2. the order projection: the replay of 50,000 events over 5,000 orders,
   from a freshly started server (page cache dropped when run as root) and
   through a warm Varnish, against the story's 20 minutes and nginx
   serving the same pages from files; and the same category walked by a
   client that only counts its entries (the `$ce-` replay target, issue
   34), cold and warm, against nginx serving the same pages;
3. the preloaded cache: how soon after its append a cache following
   `$ce-Product` with long-polls reflects each event, against the appends'
   own latency;
4. rapid recovery: kill -9 under append load on a 1,000,000-event store, a
   supervisor restarting the server after the shipped unit's RestartSec;
   time from the kill to the first acknowledged append, against a clean
   restart (SIGTERM) of the same store."""

import json
import multiprocessing
import os
import shutil
import statistics
import threading
import time
import uuid
from pathlib import Path

from .. import targets
from ..common import (ADMIN, ATOM_JSON, SERVER_LOG, eventfeed_binary, fill_streams, free_port, http_request, log,
                      wait_until)
from ..fmt import fmt, ratio, table, times, verdict
from ..load import Pinning
from ..servers import PROCESSES, Eventfeed, Nginx, Varnish
from ..story_clients import (EVENTS_JSON, CacheFollower, RetryingWriter, Supervisor, care_instance, path_of,
                             replay, restart_delay, walk)

TITLE = "The stories (docs/recipes.md)"
STORY_REPLAY_SECONDS = 20 * 60  # the story: "a little over 50,000 events took 20 minutes"
REPLAY_PAGE_SIZE = 100


def sizes(quick):
    return {"clicks": 20_000 if quick else 100_000, "orders": 5_000, "products": 200, "live_events": 200 if quick
            else 1_000, "recovery_events": 100_000 if quick else 1_000_000, "kills": 2 if quick else 3}


def measure(ctx, result):
    size = sizes(ctx.settings.quick)
    result["sizes"] = size
    unpinned = Pinning(False)
    result["care"] = care(ctx, unpinned, size)
    result["replay"] = replay_story(ctx, size)
    result["cache"] = cache(ctx, size)
    result["recovery"] = recovery(ctx, size)


def post_events(port, stream, events):
    status, _, body = http_request(port, "POST", f"/streams/{stream}", {"Content-Type": EVENTS_JSON},
                                   json.dumps(events).encode())
    if status != 201:
        raise RuntimeError(f"append to {stream} answered {status}: {body[:200]!r}")


def parallel(count, work):
    failures = []

    def guarded(index):
        try:
            work(index)
        except Exception as error:  # re-raised below
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


# -- 1. the Care button ----------------------------------------------------------


def care(ctx, pinning, size):
    """Clicks appended by 4 front ends in 20-click appends (the reference
    rate), then for 1, 2, 3, 4 instances, twice each, a group of its own
    from the start drained by that many instance processes, 50 messages a
    take."""
    clicks = size["clicks"]
    server = Eventfeed(ctx.workdir, pinning, ctx.workdir / "story-care", "fsync")
    try:
        def front_end(index):
            for first in range(index * 20, clicks, 4 * 20):
                post_events(server.port, "Cares", [
                    {"eventId": str(uuid.uuid4()), "eventType": "Uncared" if n % 3 == 2 else "Cared",
                     "data": {"page": f"page-{n % 37}", "user": f"user-{n % 1000}"}} for n in range(first, first + 20)])

        started = time.monotonic()
        parallel(4, front_end)
        figures = {"clicks": clicks, "append_events_per_second": clicks / (time.monotonic() - started), "runs": []}
        # Two rounds, in the order 1 2 3 4 4 3 2 1, so that a slow minute of
        # a shared machine does not land on one count only.
        measured = {instances: [] for instances in (1, 2, 3, 4)}
        for round_index, instances in enumerate((1, 2, 3, 4, 4, 3, 2, 1)):
            group = f"page-counts-{round_index}"
            status, _, body = http_request(server.port, "PUT", f"/subscriptions/Cares/{group}",
                                           {"Content-Type": "application/json", **ADMIN},
                                           json.dumps({"startFrom": 0, "messageTimeoutMilliseconds": 60000}).encode())
            if status != 201:
                raise RuntimeError(f"creating {group} answered {status}: {body[:200]!r}")
            run = drain(server.port, group, instances, clicks)
            measured[instances].append(run)
            log(f"care button, {instances} instance(s): {run['messages_per_second']:.0f} messages/s, "
                f"{run['requests_per_event']:.3f} requests/event, {run['duplicates']} duplicates")
        for instances, runs in measured.items():
            figures["runs"].append({
                "instances": instances,
                "messages_per_second": statistics.mean(run["messages_per_second"] for run in runs),
                "rounds": [run["messages_per_second"] for run in runs],
                "duplicates": sum(run["duplicates"] for run in runs),
                "requests_per_event": max(run["requests_per_event"] for run in runs)})
        for run in figures["runs"]:
            run["over_one"] = ratio(run["messages_per_second"], figures["runs"][0]["messages_per_second"])
            run["over_appends"] = ratio(run["messages_per_second"], figures["append_events_per_second"])
        return figures
    finally:
        server.stop()


def drain(port, group, instances, clicks):
    context = multiprocessing.get_context("fork")
    counter, barrier, results = context.Value("q", 0), context.Barrier(instances + 1), context.Queue()
    processes = [context.Process(target=care_instance, daemon=True,
                                 args=(port, group, f"counts-{i}", 50, clicks, counter, barrier, results))
                 for i in range(instances)]
    for process in processes:
        process.start()
    barrier.wait(timeout=60)
    started = time.monotonic()
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    numbers = [n for outcome in outcomes for n in outcome[0]]
    finished = max(outcome[2] for outcome in outcomes)
    requests = sum(outcome[1] for outcome in outcomes)
    missing = clicks - len(set(numbers))
    if missing:
        raise RuntimeError(f"{group}: {missing} clicks never handled")
    return {"instances": instances, "messages_per_second": len(numbers) / (finished - started),
            "duplicates": len(numbers) - len(set(numbers)), "requests_per_event": requests / clicks}


# -- 2. the order projection replayed -------------------------------------------


def write_orders(port, orders):
    """10 events an order in two commands (created + 7 items; paid +
    shipped), from 16 threads."""
    def writer(index):
        for order in range(index, orders, 16):
            stream = f"CustomerOrder-{order}"
            post_events(port, stream, [{"eventId": str(uuid.uuid4()), "eventType": "OrderCreated",
                                        "data": {"customer": f"customer-{order % 97}"}}]
                        + [{"eventId": str(uuid.uuid4()), "eventType": "ItemAdded",
                            "data": {"sku": f"SKU-{(order + item) % 113}", "price": 100 + item}} for item in range(7)])
            post_events(port, stream, [
                {"eventId": str(uuid.uuid4()), "eventType": "OrderPaid", "data": {"amount": 721}},
                {"eventId": str(uuid.uuid4()), "eventType": "OrderShipped", "data": {}}])

    parallel(16, writer)


def drop_page_cache():
    if os.geteuid() != 0:
        return False
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    return True


def timed(label, client, events, port, **options):
    """`client` (replay or walk) run against `port`: its seconds, after
    checking that it saw every one of `events`."""
    started = time.monotonic()
    seen, pages = client(port, **options)
    seconds = time.monotonic() - started
    if seen != events:
        raise RuntimeError(f"{label}: {seen} of {events} events seen")
    log(f"{label}: {events} events, {pages} pages in {seconds:.2f} s ({events / seconds:,.0f} events/s)")
    return seconds


def from_nginx(start):
    """The options that point replay or walk at nginx_copy's files."""
    return {"start_path": "/json" + start, "page_path": lambda uri: "/json" + path_of(uri), "authorization": False}


def replay_story(ctx, size):
    """Orders written with --durability none, the server restarted in the
    default mode; then the projection's replay (pages of 100 with bodies)
    timed twice each way, with one checkpoint append per page (as the
    story's projection does) and reads only: from a freshly started server
    with the page cache dropped; through Varnish (a first pass warms it);
    and from nginx serving copies of the same pages (the floor of this
    client). Last, the same pages walked by a client that only counts
    (ce_replay)."""
    orders, events = size["orders"], size["orders"] * 10
    data_dir = ctx.workdir / "story-orders"
    filler = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "none")
    try:
        write_orders(filler.port, orders)
    finally:
        filler.stop()
    figures = {"events": events, "rows": {}}
    start = f"/streams/$ce-CustomerOrder/0/forward/{REPLAY_PAGE_SIZE}?embed=body"
    checkpointing = {"checkpoints": "CustomerOrder_replay_checkpoints"}

    def projection(label, port, **options):
        return timed(f"order projection, {label}", replay, events, port, **{"start_path": start, **options})

    def row(name, checkpoints, reads_only):
        figures["rows"][name] = {"checkpoints": checkpoints, "reads_only": reads_only}

    # Cold, twice: a freshly started server each time, page cache dropped.
    cold = {}
    for mode, options in (("checkpoints", checkpointing), ("reads_only", {})):
        figures["page_cache_dropped"] = drop_page_cache()
        server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync")
        try:
            cold[mode] = projection(f"cold server, {mode}", server.port, **options)
        finally:
            server.stop()
    row("cold", cold["checkpoints"], cold["reads_only"])
    server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync")
    try:
        varnish = Varnish(ctx.workdir / "story-varnish", ctx.pinning, server.port)
        try:
            figures["varnish_first_seconds"] = projection("through Varnish, first (warming it)", varnish.port)
            row("varnish_warm", projection("through Varnish, warm, checkpoints", varnish.port,
                                           checkpoint_port=server.port, **checkpointing),
                projection("through Varnish, warm, reads only", varnish.port))
        finally:
            varnish.stop()
        nginx = nginx_copy(ctx, server.port, start)
        try:
            row("nginx", projection("nginx, same bytes, checkpoints", nginx.port, checkpoint_port=server.port,
                                    **checkpointing, **from_nginx(start)),
                projection("nginx, same bytes, reads only", nginx.port, **from_nginx(start)))
            server.stop()  # ce_replay starts its own on the same store
            figures["walk"] = ce_replay(ctx, data_dir, nginx, start, events)
        finally:
            nginx.stop()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    for name, timings in figures["rows"].items():
        for mode in ("checkpoints", "reads_only"):
            timings[f"{mode}_events_per_second"] = events / timings[mode]
            timings[f"{mode}_over_story"] = STORY_REPLAY_SECONDS / timings[mode]
            timings[f"{mode}_nginx_share"] = ratio(figures["rows"]["nginx"][mode], timings[mode])
    figures["cold_seconds"] = figures["rows"]["cold"]["checkpoints"]
    figures["varnish_warm_seconds"] = figures["rows"]["varnish_warm"]["checkpoints"]
    return figures


def ce_replay(ctx, data_dir, nginx, start, events):
    """The `$ce-` replay target (issue 34): the category walked to its head
    by one client that only counts (story_clients.walk, the same pages as
    the projection): from nginx serving the same bytes (its files still in
    the page cache), the reference and this client's own ceiling; cold,
    from a freshly started server on the orders' store (page cache dropped
    first when run as root); warm, a second walk on the same process."""
    seconds = {"nginx": timed("$ce- walk, nginx, same bytes", walk, events, nginx.port, **from_nginx(start))}
    figures = {"events": events, "page_size": REPLAY_PAGE_SIZE, "page_cache_dropped": drop_page_cache()}
    server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync")
    try:
        for name in ("cold", "warm"):
            seconds[name] = timed(f"$ce- walk, {name} server", walk, events, server.port, start_path=start)
    finally:
        server.stop()
    for name, value in seconds.items():
        figures[name] = {"seconds": value, "events_per_second": events / value,
                         "over_nginx": ratio(seconds["nginx"], value)}
    return figures


def nginx_copy(ctx, port, start):
    """nginx serving every page of the walk, byte for byte, under /json/."""
    root = ctx.workdir / "story-nginx"
    path = start
    while path:
        status, _, body = http_request(port, "GET", path, {"Accept": ATOM_JSON, **ADMIN})
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        target = root / "www" / "json" / path.split("?")[0].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        page = json.loads(body)
        onwards = next((l["uri"] for l in page["links"] if l["relation"] == "previous"), None)
        path = None if page["headOfStream"] or not onwards else path_of(onwards) + "?embed=body"
    for directory in [root, *root.rglob("*")]:
        if directory.is_dir():
            directory.chmod(0o755)
    os.chmod(ctx.workdir, 0o755)
    return Nginx(root, ctx.pinning)


# -- 3. the preloaded cache -----------------------------------------------------


def percentile(values, share):
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(len(ordered) * share + 0.999999) - 1))]


def cache(ctx, size):
    """200 products x 10 events, then a cache follows `$ce-Product`; events
    appended one at a time, 10 ms apart: reflected − sent, against the
    append's own sent → 201."""
    server = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / "story-products", "fsync")
    follower = CacheFollower(server.port)
    try:
        fill_streams(server.port, "Product-", size["products"], 10,
                     lambda n: "ProductCreated" if n == 0 else "PriceChanged")
        follower.start()
        if not follower.ready.wait(timeout=120) or follower.error:
            raise RuntimeError(f"the cache did not reach the head: {follower.error}")
        sent, acknowledged = {}, {}
        for n in range(size["live_events"]):
            event_id = str(uuid.uuid4())
            sent[event_id] = time.monotonic()
            post_events(server.port, f"Product-{n % size['products']}",
                        [{"eventId": event_id, "eventType": "PriceChanged", "data": {"price": 1000 + n}}])
            acknowledged[event_id] = time.monotonic()
            time.sleep(0.01)
        wait_until(lambda: all(event_id in follower.reflected for event_id in sent), 60, "every event reflected")
        if follower.error:
            raise follower.error
    finally:
        follower.stopping = True
        server.stop()
    reflect = [(follower.reflected[i] - sent[i]) * 1000 for i in sent]
    append = [(acknowledged[i] - sent[i]) * 1000 for i in sent]
    # The cache may apply an event before its writer has read the 201.
    after_ack = [max(0.0, (follower.reflected[i] - acknowledged[i]) * 1000) for i in sent]
    figures = {"events": len(sent), "reflect_p50_ms": percentile(reflect, 0.5),
               "reflect_p99_ms": percentile(reflect, 0.99), "reflect_max_ms": max(reflect),
               "append_p50_ms": percentile(append, 0.5), "append_p99_ms": percentile(append, 0.99),
               "after_ack_p50_ms": percentile(after_ack, 0.5), "after_ack_p99_ms": percentile(after_ack, 0.99)}
    figures["reflect_over_append_p99"] = ratio(figures["reflect_p99_ms"], figures["append_p99_ms"])
    log(f"preloaded cache: reflected p99 {figures['reflect_p99_ms']:.1f} ms; the appends' p99 "
        f"{figures['append_p99_ms']:.1f} ms")
    return figures


# -- 4. rapid recovery ------------------------------------------------------------


class FixedPortServer:
    """The binary on a fixed port, as the unit runs it; not waited for."""

    def __init__(self, ctx, data_dir, port):
        argv = ctx.pinning.server([str(eventfeed_binary()), "serve", "--data-dir", str(data_dir), "--bind",
                                   f"127.0.0.1:{port}", "--log", SERVER_LOG])
        self.process = PROCESSES.start(argv, log=ctx.workdir / f"story-recovery-{time.time():.3f}.log")


def first_ack_after(writers, moment):
    """The first acknowledgement received after `moment` (by any writer)."""
    return min((at for writer in writers for at, _, _ in writer.acked if at > moment), default=None)


def recovery(ctx, size):
    """A store of `recovery_events` (1,000 streams, written with durability
    none, stopped cleanly); then the supervisor runs it in the default mode
    on a fixed port, 8 writers append 5-event batches with retries, and the
    server is killed (SIGKILL) every 3 s of load, `kills` times; then once
    stopped with SIGTERM (the reference). Every acknowledged event is then
    checked where its Location said."""
    data_dir = ctx.workdir / "story-recovery"
    streams = size["recovery_events"] // 1000
    filler = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "none")
    try:
        fill_streams(filler.port, "History-", streams, 1000, lambda n: "Opened")
    finally:
        filler.stop()
    port = free_port()
    supervisor = Supervisor(lambda: FixedPortServer(ctx, data_dir, port))
    stop = threading.Event()
    writers = [RetryingWriter(port, index, stop) for index in range(8)]
    kills, clean = [], None
    supervisor.start()
    try:
        wait_until(lambda: http_request(port, "GET", "/ping")[0] == 200, 120, "the supervised server")
        for writer in writers:
            writer.start()
        for _ in range(size["kills"]):
            time.sleep(3)
            supervisor.up.clear()
            killed_at = time.monotonic()
            os.killpg(supervisor.server.process.pid, 9)
            supervisor.up.wait(timeout=60)
            # Acknowledgements the killed process had sent may still be read
            # after the kill: count from the restart on.
            restarted_at = supervisor.starts[-1]
            wait_until(lambda: first_ack_after(writers, restarted_at) is not None, 120, "an ack after the kill")
            kills.append(first_ack_after(writers, restarted_at) - killed_at)
            log(f"rapid recovery: kill -9 → first ack {kills[-1]:.2f} s")
        time.sleep(3)
        supervisor.up.clear()
        stopped_at = time.monotonic()
        os.killpg(supervisor.server.process.pid, 15)
        supervisor.up.wait(timeout=120)
        restarted_at = supervisor.starts[-1]
        wait_until(lambda: first_ack_after(writers, restarted_at) is not None, 120, "an ack after the clean stop")
        clean = first_ack_after(writers, restarted_at) - stopped_at
        log(f"rapid recovery: SIGTERM → first ack {clean:.2f} s")
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=30)
        supervisor.stopping.set()
        if supervisor.server:
            PROCESSES.stop(supervisor.server.process, timeout=60)
        supervisor.join(timeout=30)
    lost = check_acknowledged(ctx, data_dir, writers)
    shutil.rmtree(data_dir, ignore_errors=True)
    figures = {"events": size["recovery_events"], "kills": kills, "clean_seconds": clean,
               "restart_delay_seconds": restart_delay(), "acknowledged_appends": sum(len(w.acked) for w in writers),
               "lost": lost, "worst_seconds": max(kills), "median_seconds": statistics.median(kills)}
    figures["worst_over_clean"] = ratio(figures["worst_seconds"], clean)
    return figures


def check_acknowledged(ctx, data_dir, writers):
    """Acknowledged events not found where their Location said."""
    server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync")
    lost = 0
    try:
        for writer in writers:
            found, path = {}, f"/streams/{writer.stream}/0/forward/1000?embed=rich"
            while path:
                status, _, body = http_request(server.port, "GET", path, {"Accept": ATOM_JSON})
                if status != 200:
                    raise RuntimeError(f"GET {path} answered {status}")
                page = json.loads(body)
                found.update((entry["eventId"], entry["eventNumber"]) for entry in page["entries"])
                onwards = next((l["uri"] for l in page["links"] if l["relation"] == "previous"), None)
                path = None if page["headOfStream"] or not onwards else path_of(onwards) + "?embed=rich"
            for _, first, ids in writer.acked:
                lost += sum(1 for offset, event_id in enumerate(ids) if found.get(event_id) != first + offset)
    finally:
        server.stop()
    return lost


# -- the report --------------------------------------------------------------------


def care_scaled(figures):
    """Story 1's verdict: four instances well above one, few requests."""
    four = figures["runs"][-1]
    return ((four["over_one"] or 0) >= targets.STORY_CARE_SCALING
            and four["requests_per_event"] <= targets.STORY_CARE_REQUESTS_PER_EVENT)


def walked(figures):
    """The `$ce-` replay target's verdict: the cold walk fast enough."""
    return figures["cold"]["events_per_second"] >= targets.CE_REPLAY_EVENTS_PER_SECOND


def recovered(figures):
    """Story 4's verdict: every kill recovered in time, nothing lost."""
    return figures["worst_seconds"] <= targets.STORY_RECOVERY_SECONDS and not figures["lost"]


def summary(figures):
    rows = []
    care_runs = figures["care"]["runs"]
    four = care_runs[-1]
    rows.append(["story 1, Care button: 4 read-side instances on one subscription",
                 f"{fmt(four['messages_per_second'])} messages/s ({times(four['over_one'], 'one instance')}), "
                 f"{fmt(four['requests_per_event'], 3)} requests/event, {four['duplicates']} duplicates",
                 f"one instance: {fmt(care_runs[0]['messages_per_second'])} messages/s; appends: "
                 f"{fmt(figures['care']['append_events_per_second'])} events/s",
                 f"{targets.target('story_care')}: {verdict(care_scaled(figures['care']))}"])
    replay_figures = figures["replay"]
    cold, warm = replay_figures["rows"]["cold"], replay_figures["rows"]["varnish_warm"]
    rows.append([f"story 2, replay of {fmt(replay_figures['events'])} events, a checkpoint per page",
                 f"{fmt(cold['checkpoints'], 2)} s cold, {fmt(warm['checkpoints'], 2)} s through warm Varnish "
                 f"({fmt(cold['checkpoints_over_story'])} × and {fmt(warm['checkpoints_over_story'])} × faster than "
                 "the story)",
                 f"the story: {fmt(STORY_REPLAY_SECONDS)} s; nginx serving the same pages: "
                 f"{fmt(replay_figures['rows']['nginx']['checkpoints'], 2)} s",
                 f"{targets.target('story_replay')}: {verdict(cold['checkpoints'] <= targets.STORY_REPLAY_SECONDS)}"])
    walk_figures = replay_figures.get("walk")  # none in runs from before it was measured
    if walk_figures:
        rows.append([f"`$ce-` category replay with `embed=body`, cold, {fmt(walk_figures['events'] / 1000)}k events, "
                     f"pages of {walk_figures['page_size']}, one client following links",
                     f"{fmt(walk_figures['cold']['events_per_second'])} events/s "
                     f"({fmt(walk_figures['cold']['seconds'], 2)} s); warm: "
                     f"{fmt(walk_figures['warm']['events_per_second'])} events/s",
                     f"nginx serving the same pages: {fmt(walk_figures['nginx']['events_per_second'])} events/s "
                     f"({times(walk_figures['cold']['over_nginx'], 'nginx')} cold)",
                     f"{targets.target('ce_replay')}: {verdict(walked(walk_figures))}"])
    cache_figures = figures["cache"]
    rows.append(["story 3, preloaded cache: an event reflected after its append",
                 f"p99 {fmt(cache_figures['reflect_p99_ms'], 1)} ms",
                 f"the append itself: p99 {fmt(cache_figures['append_p99_ms'], 1)} ms",
                 f"{targets.target('story_reflect')}: "
                 f"{verdict(cache_figures['reflect_p99_ms'] <= targets.STORY_REFLECT_P99_MS)}"])
    recovery_figures = figures["recovery"]
    rows.append([f"story 4, `kill -9` → first acknowledged append, {fmt(recovery_figures['events'] / 1e6)}M events",
                 f"worst {fmt(recovery_figures['worst_seconds'], 2)} s of {len(recovery_figures['kills'])}, "
                 f"{recovery_figures['lost']} acknowledged events lost",
                 f"SIGTERM → first ack: {fmt(recovery_figures['clean_seconds'], 2)} s",
                 f"{targets.target('story_recovery')}: "
                 f"{verdict(recovered(recovery_figures))}"])
    return rows


def render_walk(figures):
    """Story 2's pages walked by a client that only counts: the `$ce-`
    replay target."""
    cold_note = "page cache dropped first" if figures["page_cache_dropped"] else "page cache not dropped"
    labels = {"cold": f"freshly started server ({cold_note})", "warm": "the same server, a second walk",
              "nginx": "nginx serving the same pages (reference)"}
    rows = [[label, f"{fmt(figures[name]['seconds'], 2)} s", fmt(figures[name]["events_per_second"]),
             times(figures[name]["over_nginx"], "nginx")] for name, label in labels.items()]
    return [f"The same `$ce-CustomerOrder` pages walked by one client following links that only counts the events "
            f"({fmt(figures['events'])} events, pages of {figures['page_size']}, `embed=body`; the `$ce-` replay "
            "target):\n",
            table(["walk", "time", "events/s", "× nginx"], rows), "",
            f"Target: cold {targets.target('ce_replay')}: {verdict(walked(figures))}. Method: one Python client, one "
            "keep-alive connection, each page read whole, its entries counted and its `previous` link found by "
            "byte searches, nothing decoded; every walk must count every event. nginx is walked first, its files "
            "still in the page cache: its rate is this client's ceiling on this machine. Then the page cache is "
            "dropped (when run as root), a fresh server opens the same store and is walked twice.", ""]


def render(figures, settings):
    size = figures["sizes"]
    care_figures = figures["care"]
    out = ["### 1. The Care button: read-side instances on one persistent subscription\n",
           table(["instances", "messages/s (mean)", "rounds", "× one instance", "× appends", "requests per event",
                  "duplicates"],
                 [[run["instances"], fmt(run["messages_per_second"]),
                   " / ".join(fmt(value) for value in run.get("rounds", [])), times(run["over_one"], "one"),
                   times(run["over_appends"], "appends"), fmt(run["requests_per_event"], 3), run["duplicates"]]
                  for run in care_figures["runs"]]), "",
           f"Reference: the {fmt(care_figures['clicks'])} clicks appended by 4 front ends in 20-click appends, "
           f"{fmt(care_figures['append_events_per_second'])} events/s. Method: a group of its own for each "
           "round, drained from the start by that many instance processes (two rounds each, in the order 1 2 3 4 "
           "4 3 2 1), each taking 50 messages a request with `embed=body` (long-poll 1 s), counting the pages and "
           "acknowledging through `ackAll`; the server (default durability) and the instances (Python processes "
           "decoding every entry) share both cores (no pinning), so more instances can only go faster while the "
           "machine has CPU to spare: note the load average of the run below. Target: "
           f"{targets.target('story_care')}: {verdict(care_scaled(care_figures))}.", ""]
    replay_figures = figures["replay"]
    cold_note = "page cache dropped first" if replay_figures.get("page_cache_dropped") else "page cache not dropped"
    labels = {"cold": "freshly started server", "varnish_warm": "through Varnish, warm",
              "nginx": "nginx serving the same pages (reference)"}
    rows = []
    for name, label in labels.items():
        timings = replay_figures["rows"][name]
        rows.append([label] + [cell for mode in ("checkpoints", "reads_only") for cell in (
            f"{fmt(timings[mode], 2)} s", fmt(timings[f"{mode}_events_per_second"]),
            f"{fmt(timings[f'{mode}_over_story'])} ×", fmt(timings[f"{mode}_nginx_share"], 2))])
    out += ["### 2. The order projection replayed\n",
            table(["replay", "a checkpoint per page", "events/s", "× faster than the story (20 min)",
                   "nginx's time ÷ this", "reads only", "events/s", "× faster than the story",
                   "nginx's time ÷ this"], rows), "",
            f"Target: {targets.target('story_replay')}: "
            f"{verdict(replay_figures['rows']['cold']['checkpoints'] <= targets.STORY_REPLAY_SECONDS)}. "
            f"Method: {fmt(replay_figures['events'])} events over {fmt(size['orders'])} orders "
            "(`CustomerOrder-{id}`, 10 each), written with durability none; the server restarted in the default "
            f"mode ({cold_note}; restarted again before the second cold replay); one client (Python) reads "
            "`$ce-CustomerOrder` in pages of 100 with `embed=body` following `previous` links and applies each "
            "event to its state, and, as the story's projection does, appends a checkpoint event per page "
            "(durable, to eventfeed also when reading through Varnish or nginx), or not (reads only). Varnish "
            f"was warmed by one replay first ({fmt(replay_figures['varnish_first_seconds'], 2)} s).", ""]
    if replay_figures.get("walk"):  # none in runs from before it was measured
        out += render_walk(replay_figures["walk"])
    cache_figures = figures["cache"]
    out += ["### 3. The preloaded cache\n",
            table(["events", "reflected after the append was sent: p50", "p99", "max", "the append (201): p50",
                   "p99", "reflected after the 201: p50", "p99", "target"],
                  [[fmt(cache_figures["events"]), f"{fmt(cache_figures['reflect_p50_ms'], 1)} ms",
                    f"{fmt(cache_figures['reflect_p99_ms'], 1)} ms", f"{fmt(cache_figures['reflect_max_ms'], 1)} ms",
                    f"{fmt(cache_figures['append_p50_ms'], 1)} ms", f"{fmt(cache_figures['append_p99_ms'], 1)} ms",
                    f"{fmt(cache_figures.get('after_ack_p50_ms'), 1)} ms",
                    f"{fmt(cache_figures.get('after_ack_p99_ms'), 1)} ms",
                    f"{targets.target('story_reflect')}: "
                    f"{verdict(cache_figures['reflect_p99_ms'] <= targets.STORY_REFLECT_P99_MS)}"]]), "",
            f"Method: {fmt(size['products'])} products × 10 events; a cache reads `$ce-Product` from the start "
            "(pages of 100, `embed=body`), then long-polls the head; events are appended one at a time, 10 ms "
            "apart, each timed from just before its request was sent to the moment the cache applied it (the "
            "reference: the same appends' own time to their `201`); the target holds the first to it. *After the "
            "201*: from the moment the writer read its `201` (zero when the cache was first).", ""]
    recovery_figures = figures["recovery"]
    out += ["### 4. Rapid recovery\n",
            table(["store", "kill -9 → first acknowledged append", "SIGTERM → first acknowledged append (reference)",
                   "acknowledged appends", "acknowledged events lost", "target"],
                  [[f"{fmt(recovery_figures['events'])} events",
                    ", ".join(f"{fmt(s, 2)} s" for s in recovery_figures["kills"]),
                    f"{fmt(recovery_figures['clean_seconds'], 2)} s", fmt(recovery_figures["acknowledged_appends"]),
                    recovery_figures["lost"],
                    f"{targets.target('story_recovery')}: "
                    f"{verdict(recovered(recovery_figures))}"]]),
            "",
            f"Method: the store written with durability none (1,000 streams) and stopped cleanly; then a supervisor "
            "runs the server in the default mode on a fixed port and restarts it "
            f"{fmt(recovery_figures['restart_delay_seconds'], 1)} s after any exit (the shipped unit's `RestartSec`); "
            "8 writers append 5-event batches, sending an unanswered append again with the same ids; after each "
            "3 s of load the server is killed with SIGKILL, then once stopped with SIGTERM. Each figure runs from "
            "the signal to the first `201` from the restarted server. Afterwards every acknowledged event is "
            "looked up where its `Location` said."]
    return out
