"""Multi-stream appends (POST /streams, 2 streams x 1 event), durable, 64
clients, against single-stream 2-event appends in the same run; and
requests that always conflict, against the disk's fdatasync rate (a
refused request costs no fsync)."""

import random
import shutil

from .. import targets
from ..common import log
from ..fmt import errors, fmt, fmt_share, ms, ratio, table, verdict
from ..servers import Eventfeed

TITLE = "Multi-stream appends"
CLIENTS = 64


def measure(ctx, result):
    ctx.fsync_probe()
    result["fsync_probe"] = ctx.cache["fsync"]
    streams = ctx.settings.append_streams
    runs = result["runs"] = {}
    server = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / "multiappend", "fsync")
    try:
        for name, script, args in [
            ("single", "append", [None, streams, 2, 0, 0, "ordered"]),
            ("multi", "multi_append", [None, streams, "write"]),
            ("conflict", "multi_append", [None, streams, "conflict"]),
        ]:
            args[0] = f"{random.getrandbits(32):08x}"
            figures = ctx.wrk.run(server.port, script, args, CLIENTS, server=server.process.pid)
            runs[name] = figures
            log(f"multiappend {name}: {figures['rps']:.0f} req/s, p99 {figures['p99_us'] / 1000:.2f} ms, "
                f"errors {figures['errors']}, others on the server CPU {fmt_share(figures.get('others_cpu_share'))}")
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
    single, multi = runs["single"], runs["multi"]
    result["multi_vs_single"] = (multi["rps"] / single["rps"]) if single["rps"] else None


def met(result):
    share = result.get("multi_vs_single")
    return share is not None and share >= targets.MULTI_STREAM_SHARE and result["runs"]["multi"]["errors"] == 0


def summary(result):
    runs = result.get("runs") or {}
    if "multi" not in runs:
        return []
    return [["multi-stream append, 2 streams × 1 event, 64 clients",
             f"{fmt(runs['multi']['rps'] * 2)} events/s",
             f"single-stream 2-event appends: {fmt(runs['single']['rps'] * 2)} events/s "
             f"({fmt(result['multi_vs_single'], 2)} ×)",
             f"{targets.target('multi_stream')}: {verdict(met(result))}"]]


def render(result, settings):
    runs, probe = result["runs"], result["fsync_probe"]
    labels = {"single": "single-stream, 2 events (the reference)", "multi": "multi-stream, 2 streams × 1 event",
              "conflict": "multi-stream, every request a 409"}
    rows = [[labels[name], fmt(load["rps"]), fmt(load["rps"] * 2) if name != "conflict" else "—",
             ms(load, "p50_us"), ms(load, "p99_us"), errors(load) if name != "conflict" else fmt(load["non_2xx"]),
             fmt_share(load.get("others_cpu_share"))] for name, load in runs.items()]
    out = [table(["workload (64 clients, fsync)", "requests/s", "events/s", "p50 ms", "p99 ms",
                  "errors (409s for the last)", "others on server CPU"], rows), ""]
    out.append(f"Multi-stream ÷ single-stream requests/s: **{fmt(result['multi_vs_single'], 2)} ×** "
               f"({targets.target('multi_stream')}: {verdict(met(result))}). Refused requests: "
               f"**{fmt(ratio(runs['conflict']['rps'], probe['per_second']), 1)} ×** the disk's "
               f"{fmt(probe['per_second'])} fdatasyncs/s in the same run, so a conflict costs no fsync.\n")
    out.append(f"Method: one server (`--durability fsync`), {CLIENTS} wrk connections, {settings.duration} s per "
               f"workload, streams picked at random among {settings.append_streams}. Single-stream: POST "
               "/streams/{s} with 2 events. Multi-stream: POST /streams with two parts of one event to two "
               "different streams. Conflict: the same with an expected version no stream reaches.")
    return out
