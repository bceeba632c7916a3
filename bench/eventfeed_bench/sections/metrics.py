"""Metrics on against metrics off, same workloads, same run: uncached
20-entry Atom pages from the read store and durable single-event appends
(64 clients), each with a server started with metrics on (the default)
while a scraper reads `/metrics` every second, as Prometheus would with a
short interval, and with a server started with `--metrics false` (no
request timing, no counters, `/metrics` 404), in rounds whose order
alternates."""

import random
import statistics
import threading
import time

from .. import targets
from ..common import ADMIN, http_request, log
from ..fmt import errors, fmt, fmt_share, ms, others, ratio, table, times, verdict
from ..servers import Eventfeed

TITLE = "Metrics on vs off"
LABELS = {"reads": "uncached 20-entry Atom pages", "appends": "durable single-event appends"}
KINDS = ("on", "off")


class Scraper:
    """GET /metrics every `interval` seconds on a thread of its own, timing
    each scrape, until stopped."""

    def __init__(self, port, interval=1.0):
        self.port, self.interval = port, interval
        self.times_ms, self.sizes, self.failures = [], [], 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.wait(self.interval):
            started = time.perf_counter()
            status, _, body = http_request(self.port, "GET", "/metrics", ADMIN)
            if status == 200:
                self.times_ms.append((time.perf_counter() - started) * 1000)
                self.sizes.append(len(body))
            else:
                self.failures += 1

    def stop(self):
        self.stopping.set()
        self.thread.join()
        return {"scrapes": len(self.times_ms), "failures": self.failures,
                "mean_ms": statistics.mean(self.times_ms) if self.times_ms else None,
                "bytes": max(self.sizes) if self.sizes else None}


def combined(runs, rate):
    seconds = sum(f["seconds"] for f in runs)
    shares = [f["others_cpu_share"] for f in runs if f.get("others_cpu_share") is not None]
    return {"others_cpu_share": statistics.mean(shares) if shares else None,rate: sum(f[rate] * f["seconds"] for f in runs) / seconds,
            "p50_us": max(f["p50_us"] for f in runs), "p99_us": max(f["p99_us"] for f in runs),
            "errors": sum(f["errors"] for f in runs),
            **{kind: sum(f.get(kind, 0) for f in runs) for kind in ("timeouts", "connect_errors", "read_errors",
                                                                      "write_errors", "status_errors", "non_2xx")}}


def rounds(ctx, measure_one, rate):
    """`measure_one(kind)` with metrics on and off, in rounds whose order
    alternates, so that a drift of the machine's speed weighs on both."""
    runs = {kind: [] for kind in KINDS}
    for round_index in range(ctx.settings.metrics_rounds):
        for kind in (KINDS if round_index % 2 == 0 else tuple(reversed(KINDS))):
            runs[kind].append(measure_one(kind))
    on, off = combined(runs["on"], rate), combined(runs["off"], rate)
    return {"on_rounds": runs["on"], "off_rounds": runs["off"], "on": on, "off": off,
            "on_over_off": ratio(on[rate], off[rate]),
            "per_round": [ratio(a[rate], b[rate]) for a, b in zip(runs["on"], runs["off"])]}


def options(kind):
    return () if kind == "on" else ("--metrics", "false")


def reads(ctx):
    """The read store, served by one server at a time (they share its
    directory): metrics on, then off, restarted for each round. The shared
    read server is stopped meanwhile and started again after."""
    settings = ctx.settings
    ctx.ensure_read_server()
    data_dir = ctx.read_server.data_dir
    ctx.read_server.stop()
    ctx.read_server = None
    scrapes = []

    def measure_one(kind):
        server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync", options(kind))
        scraper = Scraper(server.port) if kind == "on" else None
        try:
            figures = ctx.read_run(server.port, "atom", settings.read_streams, label=f"eventfeed, metrics {kind}",
                                   server=server.process.pid)
        finally:
            if scraper:
                scrapes.append(scraper.stop())
            server.stop()
        return figures

    try:
        result = rounds(ctx, measure_one, "rps")
    finally:
        ctx.read_server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync")
    return dict(result, connections=settings.read_connections, scrapes=scrapes)


def appends(ctx):
    """Two fresh stores, one server each, both running throughout; only one
    is loaded at a time."""
    settings = ctx.settings
    clients = settings.auth_append_clients
    servers = {kind: Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / f"metrics-appends-{kind}", "fsync",
                               options(kind)) for kind in KINDS}
    scrapes = []
    try:
        for server in servers.values():
            # Unrecorded: a fresh store's first seconds are faster than any
            # after, and would favour whichever came first.
            ctx.wrk.run(server.port, "append", [f"{random.getrandbits(32):08x}", settings.append_streams, 1],
                        clients, duration=settings.warmup)

        def measure_one(kind):
            server = servers[kind]
            scraper = Scraper(server.port) if kind == "on" else None
            try:
                figures = ctx.wrk.run(server.port, "append",
                                      [f"{random.getrandbits(32):08x}", settings.append_streams, 1],
                                      clients, server=server.process.pid)
            finally:
                if scraper:
                    scrapes.append(scraper.stop())
            figures["events_per_second"] = (figures["requests"] - figures["errors"]) / figures["seconds"]
            log(f"appends, metrics {kind}, {clients} clients x1: {figures['events_per_second']:.0f} events/s, "
                f"p99 {figures['p99_us'] / 1000:.2f} ms, errors {figures['errors']}, "
                f"others on the server CPU {fmt_share(figures.get('others_cpu_share'))}")
            return figures

        result = rounds(ctx, measure_one, "events_per_second")
    finally:
        for server in servers.values():
            server.stop()
    return dict(result, clients=clients, streams=settings.append_streams, scrapes=scrapes)


def measure(ctx, result):
    result.update(rounds=ctx.settings.metrics_rounds, scrape_interval_seconds=1.0)
    result["reads"] = reads(ctx)
    result["appends"] = appends(ctx)


def cpu_per_request(runs):
    """The server's CPU time (all threads) per request over `runs`, in µs:
    steadier than a rate on a shared machine, where other work on the
    server's core slows the server without billing it."""
    measured = [f for f in runs if f.get("server_cpu_seconds") is not None]
    requests = sum(f["requests"] for f in measured)
    return sum(f["server_cpu_seconds"] for f in measured) * 1e6 / requests if requests else None


def others_share(runs):
    """The mean share of the server's CPU others used over `runs`, as
    `fmt.others` reads it."""
    shares = [f["others_cpu_share"] for f in runs if f.get("others_cpu_share") is not None]
    return {"others_cpu_share": statistics.mean(shares) if shares else None}


def rate_of(workload):
    return ("rps", "req/s") if "rps" in workload["on"] else ("events_per_second", "events/s")


def met(workload):
    share = workload.get("on_over_off")
    return share is not None and share >= targets.METRICS_SHARE and workload["on"]["errors"] == 0


def summary(result):
    rows = []
    for key in ("reads", "appends"):
        workload = result.get(key)
        if not workload:
            continue
        rate, unit = rate_of(workload)
        rows.append([f"{LABELS[key]}, metrics on and scraped every second", f"{fmt(workload['on'][rate])} {unit}",
                     f"metrics off: {fmt(workload['off'][rate])} {unit} "
                     f"({times(workload.get('on_over_off'), 'off')})",
                     f"≥ {fmt(targets.METRICS_SHARE, 2)} × off: {verdict(met(workload))}"])
    return rows


def render(result, settings):
    rows = []
    for key in ("reads", "appends"):
        workload = result.get(key)
        if not workload:
            continue
        rate, unit = rate_of(workload)
        on, off = workload["on"], workload["off"]
        scrapes = [s for s in workload.get("scrapes", []) if s.get("mean_ms") is not None]
        scrape = (f"{sum(s['scrapes'] for s in scrapes)} scrapes, mean "
                  f"{fmt(statistics.mean(s['mean_ms'] for s in scrapes), 2)} ms, "
                  f"{fmt(max(s['bytes'] for s in scrapes))} bytes") if scrapes else "—"
        rows.append([LABELS[key], f"{fmt(on[rate])} {unit}", ms(on, "p50_us"), ms(on, "p99_us"), errors(on),
                     f"{fmt(off[rate])} {unit}", ms(off, "p50_us"), ms(off, "p99_us"), errors(off),
                     f"**{times(workload.get('on_over_off'), 'off')}**",
                     ", ".join(fmt(r, 2) for r in workload["per_round"]),
                     f"{fmt(cpu_per_request(workload['on_rounds']), 1)} / "
                     f"{fmt(cpu_per_request(workload['off_rounds']), 1)}",
                     others(others_share(workload["on_rounds"]), others_share(workload["off_rounds"])), scrape,
                     f"≥ {fmt(targets.METRICS_SHARE, 2)} × off: {verdict(met(workload))}"])
    out = [table(["workload", "metrics on", "p50 ms", "p99 ms", "errors", "metrics off", "p50 ms", "p99 ms",
                  "errors", "on ÷ off", "per round", "server CPU µs/request (on / off)",
                  "others on server CPU (on / off)", "scrapes while on", "target"], rows), ""]
    out.append(f"Method: {result['rounds']} round(s) per workload, the order of on and off alternating; rates over "
               "all rounds, p50 and p99 the highest round's. *On*: the default server, recording every request's "
               "route, status and latency and every append's outcome and commit, while a thread scrapes "
               f"`/metrics` (as the admin) every {fmt(result['scrape_interval_seconds'], 0)} s. *Off*: "
               "`--metrics false`. Reads: full 20-entry forward Atom pages picked at random from the read store, "
               f"{settings.read_connections} connections, one server at a time on the same store, restarted for "
               "each round. Appends: POST events+json, one event per request, "
               f"{settings.auth_append_clients} wrk connections, default durability (fsync), a fresh store per "
               "kind, both warmed up before the first round. *Server CPU*: the server's CPU time (all threads) per "
               "request over all rounds, steadier than the rates when other work shares the machine (see *others*).")
    return out
