"""Long-polls: wake-up latency of 1/100/1000 waiters after an append, each
round next to its floor (the same answer written to as many sockets by a
bare loop), and the server's memory with 10,000 idle long-polls, next to
the same number of idle keep-alive connections that have served one `/ping`."""

import json
import shutil
import uuid

from .. import targets
from ..common import IDLE_LONG_POLL_SECS, LONG_POLL_SECS, http_request, log, longpoll, wait_until
from ..fmt import fmt, ratio, table, times, verdict
from ..servers import Eventfeed

TITLE = "Long-polls"


def measure(ctx, result):
    result.update(long_poll_secs=LONG_POLL_SECS, wakeup=[], idle=None)
    longpoll.raise_open_file_limit()
    server = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / "longpoll", "fsync")
    try:
        def kernel_slab():
            """The kernel's slab memory (sockets, files, epoll entries of
            both ends of every connection live there), machine-wide."""
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("Slab:"):
                        return int(line.split()[1]) * 1024
            return 0

        runs = [(count, False) for count in ctx.settings.waiter_counts]
        runs.append((ctx.settings.idle_waiters, True))
        for count, idle in runs:
            stream = f"bench-lp-{uuid.uuid4().hex[:8]}"
            status, _, _ = http_request(server.port, "POST", f"/streams/{stream}",
                                        {"Content-Type": "application/vnd.eventstore.events+json"},
                                        json.dumps([{"eventId": str(uuid.uuid4()), "eventType": "Start",
                                                     "data": {}}]).encode())
            if status != 201:
                raise RuntimeError(f"long-poll set-up append answered {status}")
            figures = longpoll.measure(
                "127.0.0.1", server.port, stream, 1, count, event_id=str(uuid.uuid4()),
                long_poll_secs=IDLE_LONG_POLL_SECS if idle else LONG_POLL_SECS,
                rss_of=server.rss_bytes if idle else None, sockstat=kernel_slab if idle else None,
                settle=1.0 if idle else 0.0, timeout=180)
            response = figures.pop("response", None)
            if not idle and response:
                # The reference: the same answer written to as many
                # connected sockets by a bare loop on the server's CPUs.
                figures["floor"] = longpoll.send_floor(count, response, ctx.pinning.server_cpu_set())
            if idle:
                result["idle"] = figures
            else:
                figures["over_floor"] = ratio(figures["p99_ms"], (figures.get("floor") or {}).get("p99_ms"))
                result["wakeup"].append(figures)
            log(f"long-poll {count} waiters (connected in {figures['open_seconds']:.1f} s, all waiting after "
                f"{figures['connect_seconds']:.1f} s, append after {figures['oldest_wait_seconds']:.1f} s): "
                f"woken {figures['woken']}, after the 201 p50 "
                f"{fmt(figures['p50_ms'], 2)} ms, p99 {fmt(figures['p99_ms'], 2)} ms; after the POST p99 "
                f"{fmt(figures['post_p99_ms'], 2)} ms"
                + (f"; the same answer to {count} sockets by a bare loop: p99 {fmt(figures['floor']['p99_ms'], 2)} ms"
               if "floor" in figures else "")
            + (f", RSS {figures['rss_bytes'] / 2**20:.0f} MiB with {figures['waiting_at_rss']} waiting"
                   if idle else "")
                + (f"; {figures['answered_before_append']} ANSWERED BEFORE THE APPEND"
                   if figures.get("answered_before_append") else ""))
            wait_until(lambda: longpoll.http_get_json("127.0.0.1", server.port, "/info")["waiters"] == 0, 60,
                       "the waiters to leave")
    finally:
        server.stop()
    # The idle round's reference, on a server of its own (the allocator
    # keeps what the long-polls freed, and would lend it to these).
    server = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / "longpoll-connections", "fsync")
    try:
        result["idle_connections"] = figures = longpoll.idle_connections("127.0.0.1", server.port,
                                                                         ctx.settings.idle_waiters, server.rss_bytes)
        log(f"{figures['connections']} idle keep-alive connections (one /ping each): RSS "
            f"{figures['rss_bytes'] / 2**20:.0f} MiB, {figures['per_connection_bytes'] / 1024:.1f} KiB per connection")
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
        shutil.rmtree(server.data_dir, ignore_errors=True)

# -- persistent subscriptions -----------------------------------------------


def summary(result):
    """The README's row: 1,000 waiters' wake-up against the floor."""
    rows = []
    for figures in result.get("wakeup", []):
        if figures["waiters"] != 1000:
            continue
        met = figures.get("over_floor") is not None and figures["over_floor"] <= targets.WAKEUP_OVER_FLOOR
        floor = figures.get("floor") or {}
        rows.append(["long-poll wake-up, 1,000 waiters", f"p99 {fmt(figures['p99_ms'], 1)} ms after the 201",
                     f"floor (the same answer to 1,000 sockets from a bare loop): p99 {fmt(floor.get('p99_ms'), 1)} ms "
                     f"({times(figures.get('over_floor'), 'floor', 1)})",
                     f"{targets.target('wakeup_1000')}: {verdict(met)}"])
    return rows


def render(result, settings):
    out = []
    wake_rows = []
    for figures in result.get("wakeup", []):
        count = figures["waiters"]
        target = ""
        if count == 1000:
            met = figures.get("over_floor") is not None and figures["over_floor"] <= targets.WAKEUP_OVER_FLOOR
            target = f"{targets.target('wakeup_1000')} after the 201: {verdict(met)}"
        failed = str(figures["failed"]) + (f" ({figures['answered_before_append']} answered before the append)"
                                           if figures.get("answered_before_append") else "")
        floor = figures.get("floor") or {}
        wake_rows.append([count, figures["woken"], failed, fmt(figures["p50_ms"], 2), fmt(figures["p99_ms"], 2),
                          fmt(figures.get("max_ms"), 2), fmt(figures.get("post_p50_ms"), 2),
                          fmt(figures.get("post_p99_ms"), 2), fmt(figures.get("append_ms"), 2),
                          fmt(floor.get("p99_ms"), 2), times(figures.get("over_floor"), "floor", 1), target])
    if wake_rows:
        out += [table(["waiters", "woken with the event", "failed", "after the 201: p50 ms", "p99 ms", "max ms",
                       "after the POST: p50 ms", "p99 ms", "the append's own ms", "floor p99 ms", "p99 ÷ floor",
                       "target"], wake_rows), ""]
        biggest = max(result["wakeup"], key=lambda f: f["waiters"])
        alone = min(result["wakeup"], key=lambda f: f["waiters"])
        if biggest["p99_ms"] is not None and biggest["p99_ms"] <= 0:
            out.append(f"Read the target with the last two columns: with {biggest['waiters']} waiters every reader "
                       "had the event before the writer had its 201, which itself took "
                       f"{fmt(biggest['append_ms'], 1)} ms (alone: {fmt(alone['append_ms'], 1)} ms). eventfeed "
                       "answers the waiters before the appender, so the writer's acknowledgement waits behind the "
                       f"fan-out; from the POST, the slowest reader waited {fmt(biggest['post_max_ms'], 1)} ms.\n")
    idle = result.get("idle")
    if idle:
        waiting = idle.get("waiting_at_rss", idle["waiters"])
        per_waiter = (idle["rss_bytes"] - idle["rss_before_bytes"]) / waiting if waiting else None
        met = idle["rss_bytes"] <= targets.IDLE_RSS_BYTES if waiting >= targets.IDLE_WAITERS else None
        out += [table(["idle long-polls", "waiting at the RSS reading", "server RSS MB", "RSS before MB",
                       "KiB per waiter", "kernel slab growth MB", "wake-up after the 201: p50 ms", "p99 ms",
                       "after the POST: p99 ms", "woken", "failed", "target"],
                      [[fmt(idle["waiters"]), fmt(waiting), fmt(idle["rss_bytes"] / 1e6),
                        fmt(idle["rss_before_bytes"] / 1e6),
                        fmt(per_waiter / 1024 if per_waiter is not None else None, 1),
                        fmt(idle["kernel_tcp_bytes"] / 1e6), fmt(idle["p50_ms"], 1), fmt(idle["p99_ms"], 1),
                        fmt(idle["post_p99_ms"], 1), idle["woken"], idle["failed"],
                        f"{targets.target('idle_10000')}: "
                        + (verdict(met) if met is not None else f"not measured at 10,000 ({fmt(waiting)} waiting)")]]),
                ""]
        reference = result.get("idle_connections")
        if reference and per_waiter is not None:
            allowed = (targets.IDLE_RSS_BYTES - idle["rss_before_bytes"]) / targets.IDLE_WAITERS
            out.append(f"**The floor under it.** {fmt(reference['connections'])} keep-alive connections to a fresh "
                       "server, each idle after one `GET /ping` was answered, no long-poll: RSS "
                       f"{fmt(reference['rss_bytes'] / 1e6)} MB (before: {fmt(reference['rss_before_bytes'] / 1e6)}), "
                       f"**{fmt(reference['per_connection_bytes'] / 1024, 1)} KiB per connection** (hyper, the HTTP "
                       "library, gives every connection a read and a write buffer of 8 KiB at least, a size hyper "
                       "1.x does not let its users lower). "
                       f"A waiter costs {times(ratio(per_waiter, reference['per_connection_bytes']), 'that')}; "
                       f"the target leaves {fmt(allowed / 1024, 1)} KiB per waiter over this run's start, "
                       + ("less than an idle connection alone." if allowed < reference["per_connection_bytes"]
                          else "more than an idle connection alone.") + "\n")
        out.append(f"The idle round (`ES-LongPoll: {idle['long_poll_secs']}`, so that none expires before the "
                   f"append): all connected in {fmt(idle['open_seconds'], 1)} s, all waiting after "
                   f"{fmt(idle['connect_seconds'], 1)} s, the append {fmt(idle['oldest_wait_seconds'], 1)} s after the "
                   "first request; the RSS is read with as many long-polls waiting as /info reported then, the "
                   "kernel's slab growth covers both ends of every connection, machine-wide, so it is only indicative"
                   + (f"; {idle['answered_before_append']} were answered at once, before any append: long-polls "
                      "that should have waited" if idle.get("answered_before_append") else "") + ".\n")
    clock = "kernel receive timestamps (SO_TIMESTAMPNS)"
    if any(not f.get("kernel_timestamps", True) for f in result.get("wakeup", [])):
        clock = "user-space read times (the kernel gave no receive timestamps)"
    out.append(f"Method: N clients long-poll (`ES-LongPoll: {result.get('long_poll_secs', LONG_POLL_SECS)}`) the "
               "forward page past the end of one stream, their connections opened in parallel; once the server "
               "reports all N waiting, one event is appended. Each waiter's wake-up is measured from the arrival "
               "of the append's 201 (*after the 201*; negative when the waiter had the event before the writer had "
               "its answer) and from the moment the POST was sent (*after the POST*, which includes the append's "
               f"own fsync). Arrivals are {clock}, so the Python client's own speed does not count. *Floor*, the "
               "reference: right after each round, the exact bytes of one waiter's answer written by a bare loop "
               "(`sendall`, no HTTP, no store) to as many connected loopback sockets, from a process on the "
               "server's CPUs, timed the same way: what the kernel alone needs to deliver that many answers.")
    return out
