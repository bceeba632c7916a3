"""Persistent subscriptions: bench/subscriptions.py (its own server and
clients, not pinned) appends events, then 4 competing consumers drain a
group; consumed messages/s against the append rate of the same run."""

import os
import re
import subprocess
import sys

from .. import targets
from ..common import BENCH, eventfeed_binary, log
from ..fmt import fmt, ratio, table, times, verdict
from ..servers import PROCESSES

TITLE = "Persistent subscriptions"


def measure(ctx, result):
    """bench/subscriptions.py, which runs its own server and clients (not
    pinned), in its own process group; its printed table is the result."""
    events = 20000 if ctx.settings.quick else 100000
    output = ctx.workdir / "subscriptions.out"
    argv = [sys.executable, str(BENCH / "subscriptions.py"), "--binary", str(eventfeed_binary()), "--events", str(events)]
    if ctx.pinning.enabled:
        # This process is pinned to the load CPUs; give it every core back.
        argv = ["taskset", "-c", f"0-{(os.cpu_count() or 1) - 1}", *argv]
    process = PROCESSES.start(argv, log=output)
    try:
        status = process.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        status = None
    finally:
        PROCESSES.stop(process)
    text = output.read_text(errors="replace")
    appended = re.search(r"\| appends, [^|]*\| ([\d,]+) events/s \|", text)
    consumed = re.search(r"\| consumed, [^|]*\| ([\d,]+) messages/s \|", text)
    acknowledged = re.search(r"every event acknowledged: (.*?); duplicates: (\d+)", text)
    if status != 0 or not (appended and consumed and acknowledged):
        raise RuntimeError(f"bench/subscriptions.py exited with {status}: {text[-2000:]}")
    figures = result
    figures.update({
        "events": events,
        "append_events_per_second": float(appended.group(1).replace(",", "")),
        "messages_per_second": float(consumed.group(1).replace(",", "")),
        "all_acknowledged": acknowledged.group(1),
        "duplicates": int(acknowledged.group(2)),
    })
    figures["consumed_over_appended"] = ratio(figures["messages_per_second"], figures["append_events_per_second"])
    log(f"subscriptions: {figures['messages_per_second']:.0f} messages/s consumed, "
        f"{figures['append_events_per_second']:.0f} events/s appended")


def summary(figures):
    """The README's row: consumed messages/s against the append rate."""
    met = figures["messages_per_second"] >= targets.SUBSCRIPTIONS_PER_SECOND
    return [["persistent subscription, 4 consumers", f"{fmt(figures['messages_per_second'])} messages/s",
             f"appends: {fmt(figures['append_events_per_second'])} events/s "
             f"({times(figures.get('consumed_over_appended'), 'appended')})",
             f"{targets.target('subscriptions')}: {verdict(met)}"]]


def render(figures, settings):
    met = figures["messages_per_second"] >= targets.SUBSCRIPTIONS_PER_SECOND
    share = figures.get("consumed_over_appended")
    return [table(["consumed messages/s", "appended events/s (reference)", "consumed ÷ appended",
                   "every event acknowledged", "duplicates", "target"],
                  [[fmt(figures["messages_per_second"]), fmt(figures["append_events_per_second"]),
                    times(share, "appended"), figures["all_acknowledged"], figures["duplicates"],
                    f"{targets.target('subscriptions')}: {verdict(met)}"]]), "",
            f"Method: `bench/subscriptions.py`: {fmt(figures['events'])} events appended by 4 clients in 20-event "
            "batches (the reference), then 4 competing consumers drain a default group, 20-message batches with "
            "`embed=body`, each batch acknowledged through `ackAll`. It runs its own server, default durability, "
            "with server and clients sharing both cores (no pinning)."]
