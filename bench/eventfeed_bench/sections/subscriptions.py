"""Persistent subscriptions: bench/subscriptions.py (its own server on the
server CPUs, its clients as processes of their own on the load CPUs)
appends events, then 4 competing consumers drain a group; consumed
messages/s against the append rate of the same run, with the server's CPU
time per message and how busy each side kept its CPUs while draining."""

import json
import subprocess
import sys

from .. import targets
from ..common import BENCH, eventfeed_binary, log
from ..fmt import fmt, fmt_share, table, times, verdict
from ..servers import PROCESSES

TITLE = "Persistent subscriptions"
# What the section keeps of the script's figures (--json).
FIGURES = ["events", "append_events_per_second", "messages_per_second", "consumed_over_appended", "drain_seconds",
           "server_cpu_seconds", "clients_cpu_seconds", "server_cpu_us_per_message", "server_cpu_share",
           "clients_cpu_share", "pinning", "all_acknowledged", "duplicates"]


def measure(ctx, result):
    """bench/subscriptions.py, which runs its own server and clients and
    pins them as this run does, in its own process group; the figures it
    writes (--json) are the result."""
    events = 20000 if ctx.settings.quick else 100000
    output, figures_file = ctx.workdir / "subscriptions.out", ctx.workdir / "subscriptions.json"
    argv = [sys.executable, str(BENCH / "subscriptions.py"), "--binary", str(eventfeed_binary()), "--events",
            str(events), "--json", str(figures_file), *([] if ctx.pinning.enabled else ["--no-pin"])]
    process = PROCESSES.start(argv, log=output)
    try:
        status = process.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        status = None
    finally:
        PROCESSES.stop(process)
    if status != 0 or not figures_file.exists():
        text = output.read_text(errors="replace")
        raise RuntimeError(f"bench/subscriptions.py exited with {status}: {text[-2000:]}")
    figures = json.loads(figures_file.read_text())
    result.update({name: figures[name] for name in FIGURES})
    log(f"subscriptions: {figures['messages_per_second']:.0f} messages/s consumed, "
        f"{figures['append_events_per_second']:.0f} events/s appended; server CPU "
        f"{figures['server_cpu_us_per_message']:.1f} µs/message, busy {figures['server_cpu_share']:.0%}, "
        f"clients busy {figures['clients_cpu_share']:.0%}")


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
                   "server CPU µs/message", "server's CPUs busy", "clients' CPUs busy",
                   "every event acknowledged", "duplicates", "target"],
                  [[fmt(figures["messages_per_second"]), fmt(figures["append_events_per_second"]),
                    times(share, "appended"), fmt(figures.get("server_cpu_us_per_message"), 1),
                    fmt_share(figures.get("server_cpu_share")), fmt_share(figures.get("clients_cpu_share")),
                    figures["all_acknowledged"], figures["duplicates"],
                    f"{targets.target('subscriptions')}: {verdict(met)}"]]), "",
            f"Method: `bench/subscriptions.py`: {fmt(figures['events'])} events appended by 4 clients in 20-event "
            "batches (the reference), then 4 competing consumers drain a default group, 20-message batches with "
            "`embed=body`, each batch acknowledged through `ackAll`. It runs its own server, default durability; "
            f"{figures.get('pinning', 'server and clients sharing both cores (no pinning)')}. Each client is a "
            "process of its own on a keep-alive socket (one send per request, the answer read by its "
            "Content-Length; the appends' bodies built before the clock starts); a consumer finds a batch's event "
            "numbers and `ackAll` link by byte search, without decoding the JSON, and every event number is "
            "checked to be acknowledged. While draining: the server's CPU time (/proc, user and system, all "
            "threads) per message, and the share of the CPUs it may use that the server and the clients (their "
            "own CPU time) kept busy; the side near 100% is the bottleneck."]
