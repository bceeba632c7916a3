"""Opt-in (`bench/run backup`): `eventfeed backup` of a 1,000,000-event
store, on the same machine and disk as the server, while 8 clients append
one event per request, against the same appends without a backup (before
and after it); then `eventfeed verify` of the copy. The backup alone, with
no appends, is timed first. The snapshot's pause (the only moment appends
wait for the export) is read from the server's log."""

import json
import math
import os
import re
import resource
import shutil
import subprocess
import threading
import time

from ..common import SERVER_LOG, eventfeed_binary, fill_streams, log
from ..fmt import errors, fmt, fmt_share, ms, ratio, table, times
from ..servers import PROCESSES, Eventfeed

TITLE = "Backup of a large store"
EVENTS_PER_STREAM = 1000
# The sled writer logs each export snapshot (its streams and pause) at info.
LOG_FILTER = f"{SERVER_LOG},eventfeed::store::sled::writer=info"
# The built-in admin: `GET /admin/export` is for `$admins`.
BACKUP_USER = "admin:changeit"
# The most one backup (or verify) may take; the appends while it runs stop
# with it, and at the latest a minute after this.
BACKUP_TIMEOUT_SECONDS = 900
# Appends run this long before the backup starts, so that it starts under
# steady load (connections open, the writer busy).
LEAD_SECONDS = 0.5
SNAPSHOT_LINE = "export snapshot taken"
ERROR_FIELDS = ("errors", "timeouts", "connect_errors", "read_errors", "write_errors", "status_errors", "non_2xx")


def directory_bytes(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def on_every_cpu(ctx, argv):
    """`argv` unpinned: this process runs pinned to the load's CPUs, and its
    children inherit that; a backup an operator runs shares the whole
    machine with the server."""
    return ["taskset", "-c", f"0-{os.cpu_count() - 1}", *argv] if ctx.pinning.enabled else argv


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def backup(ctx, server, target, on_export_received=None):
    """`eventfeed backup` of `server` into `target`, timed to its exit, and
    when its `store/` appeared (the export received, fsynced and checked:
    the server's part is over; the rest is the copy's import), which is
    when `on_export_received()` is called. Returns its figures, the
    manifest's among them."""
    argv = on_every_cpu(ctx, [str(eventfeed_binary()), "backup", "--to", str(target), "--server",
                              f"http://127.0.0.1:{server.port}", "--user", BACKUP_USER])
    ended = threading.Event()
    received = {}

    def watch_export():
        while not ended.wait(0.02):
            if (target / "store").exists():
                received["seconds"] = time.monotonic() - started
                if on_export_received:
                    on_export_received()
                return

    cpu_before = children_cpu_seconds()
    started = time.monotonic()
    process = PROCESSES.start(argv, log=ctx.workdir / f"backup-{target.name}.log")
    watcher = threading.Thread(target=watch_export, daemon=True)
    watcher.start()
    try:
        returncode = process.wait(timeout=BACKUP_TIMEOUT_SECONDS)
        seconds = time.monotonic() - started
    finally:
        ended.set()
        watcher.join()
        PROCESSES.stop(process)
    output = process.log_path.read_text(errors="replace").strip()
    if returncode != 0:
        raise RuntimeError(f"eventfeed backup exited with {returncode}: {output[-2000:]}")
    manifest = json.loads((target / "manifest.json").read_text())
    figures = {"seconds": seconds, "export_seconds": received.get("seconds"),
               "client_cpu_seconds": children_cpu_seconds() - cpu_before, "manifest": manifest,
               "events_per_second": manifest["events"] / seconds,
               "export_bytes": (target / "export.ndjson").stat().st_size,
               "store_bytes": directory_bytes(target / "store"), "bytes": directory_bytes(target)}
    log(f"backup into {target.name}: {seconds:.2f} s (export received and checked after "
        f"{figures['export_seconds'] or 0:.2f} s), {manifest['events']} events and {manifest['links']} links of "
        f"{manifest['streams']} streams, {figures['events_per_second']:.0f} events/s, "
        f"{figures['bytes'] / 1e6:.0f} MB")
    return figures


def verify(ctx, target):
    """`eventfeed verify` of a backup, timed; whether it passed."""
    started = time.monotonic()
    done = subprocess.run(on_every_cpu(ctx, [str(eventfeed_binary()), "verify", str(target)]),
                          capture_output=True, text=True, timeout=BACKUP_TIMEOUT_SECONDS)
    seconds = time.monotonic() - started
    output = (done.stdout + done.stderr).strip().splitlines()
    figures = {"seconds": seconds, "passed": done.returncode == 0, "output": output[-1] if output else ""}
    log(f"verify {target.name}: {'passed' if figures['passed'] else 'FAILED'} in {seconds:.2f} s: "
        f"{figures['output']}")
    return figures


def snapshot_pauses(server_log):
    """Each export snapshot the server logged: its streams and pause."""
    pauses = []
    for line in server_log.read_text(errors="replace").splitlines():
        if SNAPSHOT_LINE in line:
            streams = re.search(r"\bstreams=(\d+)", line)
            pause = re.search(r"\bpause_ms=([\d.]+)", line)
            pauses.append({"streams": int(streams.group(1)) if streams else None,
                           "pause_ms": float(pause.group(1)) if pause else None})
    return pauses


def counted(label, figures):
    figures["events_per_second"] = (figures["requests"] - figures["errors"]) / figures["seconds"]
    log(f"appends {label}: {figures['events_per_second']:.0f} events/s over {figures['seconds']:.1f} s, "
        f"p99 {figures['p99_us'] / 1000:.2f} ms, max {figures['max_us'] / 1000:.1f} ms, errors {figures['errors']}, "
        f"others on the server CPU {fmt_share(figures.get('others_cpu_share'))}")
    return figures


def combined(*windows):
    """Consecutive windows as one: appends/s over all, errors summed, each
    latency the highest window's (wrk's percentiles do not add up)."""
    seconds = sum(w["seconds"] for w in windows)
    shares = [(w["others_cpu_share"], w["seconds"]) for w in windows if w.get("others_cpu_share") is not None]
    return {"events_per_second": sum(w["events_per_second"] * w["seconds"] for w in windows) / seconds,
            "seconds": seconds,
            "others_cpu_share": (sum(share * length for share, length in shares) / sum(length for _, length in shares)
                                 if shares else None),
            **{field: sum(w.get(field, 0) for w in windows) for field in ERROR_FIELDS},
            **{field: max(w[field] for w in windows) for field in ("p50_us", "p99_us", "max_us")}}


def measure(ctx, result):
    """A store of backup_streams x 1,000 events written in 1,000-event
    appends (durability none, projections on), served in the default mode
    (fsync); unrecorded appends to warm up; the backup alone, verified;
    appends without a backup (as long as the backup alone took, at least
    the run's duration); the same appends from half a second before a
    backup until it ends, in two windows split where the server's part
    ends; the same again without, as long; then the copy taken under load
    verified."""
    settings = ctx.settings
    streams, clients = settings.backup_streams, settings.backup_clients
    data_dir = ctx.workdir / "backup-store"
    copies = ctx.workdir / "backup-copies"
    copies.mkdir(exist_ok=True)
    log(f"filling the backup store: {streams} streams x {EVENTS_PER_STREAM} events")
    filler = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "none")
    started = time.monotonic()
    try:
        fill_streams(filler.port, "Account-", streams, EVENTS_PER_STREAM, lambda n: f"Type{n % 7}")
    finally:
        filler.stop()
    result.update(events=streams * EVENTS_PER_STREAM, streams=streams, clients=clients,
                  append_streams=settings.append_streams, fill_seconds=time.monotonic() - started,
                  store_bytes=directory_bytes(data_dir))
    log(f"filled {result['events']} events in {result['fill_seconds']:.0f} s "
        f"({result['store_bytes'] / 1e6:.0f} MB on disk)")
    server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync", log_filter=LOG_FILTER)
    try:
        def append_args():
            return [f"{os.urandom(4).hex()}", settings.append_streams, 1]

        def appends(label, duration):
            return counted(label, ctx.wrk.run(server.port, "append", append_args(), clients, duration=duration,
                                              server=server.process.pid))

        appends("to warm up (not recorded)", settings.warmup)
        result["alone"] = backup(ctx, server, copies / "alone")
        result["alone"]["verify"] = verify(ctx, copies / "alone")
        shutil.rmtree(copies / "alone")
        os.sync()  # the copy's writes are not left to the kernel to flush during the next window
        result["before"] = appends("without a backup", max(settings.duration, math.ceil(result["alone"]["seconds"])))

        # One wrk while the server streams the export, another while the
        # backup imports its copy: the first window holds the snapshot and
        # the export, the second only the backup's share of CPUs and disk.
        def start_load():
            return ctx.wrk.start(server.port, "append", append_args(), clients, BACKUP_TIMEOUT_SECONDS + 60,
                                 server=server.process.pid)

        loads, windows = [start_load()], []

        def next_window():
            windows.append(counted("during the backup's export", loads[-1].stop()))
            loads.append(start_load())

        try:
            time.sleep(LEAD_SECONDS)
            result["backup"] = backup(ctx, server, copies / "during", on_export_received=next_window)
        finally:
            windows.append(counted("during the backup's import" if windows else "during the backup",
                                   loads[-1].stop()))
        if len(windows) == 2:
            result["during_export"], result["during_import"] = windows
        result["during"] = combined(*windows)
        result["backup_share"] = result["backup"]["seconds"] / result["during"]["seconds"]
        os.sync()
        result["after"] = appends("without a backup, after it", max(settings.duration,
                                                                    round(result["during"]["seconds"])))
        result["snapshots"] = snapshot_pauses(server.log)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    try:
        result["backup"]["verify"] = verify(ctx, copies / "during")
    finally:
        shutil.rmtree(copies, ignore_errors=True)
    reference = result["without"] = combined(result["before"], result["after"])
    during = result["during"]
    result["ratios"] = {"max": ratio(during["max_us"], reference["max_us"]),
                        "p99": ratio(during["p99_us"], reference["p99_us"]),
                        "events_per_second": ratio(during["events_per_second"], reference["events_per_second"])}
    failed = [name for name in ("alone", "backup") if not result[name]["verify"]["passed"]]
    if failed:
        raise RuntimeError(f"eventfeed verify failed on the backup taken {' and '.join(failed)}: "
                           + "; ".join(result[name]["verify"]["output"] for name in failed))


def snapshot_pause(figures, index):
    snapshots = figures.get("snapshots") or []
    return snapshots[index].get("pause_ms") if len(snapshots) > index else None


def longest_in(figures):
    """Which of the backup's two windows held the longest append."""
    export, copy = figures.get("during_export"), figures.get("during_import")
    if not export or not copy:
        return ""
    if export["max_us"] >= copy["max_us"]:
        return (f"; the longest append fell while the server streamed the export ({ms(export, 'max_us', 1)} ms, "
                f"against {ms(copy, 'max_us', 1)} ms while the backup imported its copy)")
    return (f"; the longest append fell while the backup imported its copy ({ms(copy, 'max_us', 1)} ms, against "
            f"{ms(export, 'max_us', 1)} ms while the server streamed the export)")


def summary(figures):
    backup_figures, during, reference = figures["backup"], figures["during"], figures["without"]
    return [[f"backup of a {fmt(figures['events'] / 1e6)}M-event store while {figures['clients']} clients append",
             f"{fmt(backup_figures['seconds'], 1)} s ({fmt(backup_figures['events_per_second'])} events/s); "
             f"longest append {ms(during, 'max_us', 1)} ms, p99 {ms(during, 'p99_us', 1)} ms, appends/s "
             f"{times(figures['ratios']['events_per_second'], 'without')}",
             f"without a backup: longest append {ms(reference, 'max_us', 1)} ms, p99 {ms(reference, 'p99_us', 1)} ms",
             "none: reported"]]


def render(figures, settings):
    reference = figures["without"]
    rows = []
    for key, label in (("before", "without a backup, before"),
                       ("during_export", "during the backup: the server streaming the export"),
                       ("during_import", "during the backup: the backup importing its copy"),
                       ("during", "**during the backup**"), ("after", "without a backup, after"),
                       ("without", "*without* (before and after)")):
        f = figures.get(key)
        if not f:
            continue
        rows.append([label, fmt(f["seconds"], 1), fmt(f["events_per_second"]), ms(f, "p50_us"), ms(f, "p99_us"),
                     ms(f, "max_us", 1), errors(f), times(ratio(f["events_per_second"],
                                                              reference["events_per_second"]), "without"),
                     fmt_share(f.get("others_cpu_share"))])
    out = [table(["appends", "window s", "events/s", "p50 ms", "p99 ms", "max ms", "errors", "÷ without",
                  "others on server CPU"], rows), ""]
    backups = []
    for index, (key, label) in enumerate((("alone", "alone, no appends"), ("backup", "**during the appends**"))):
        b = figures[key]
        manifest, checked = b["manifest"], b.get("verify") or {}
        backups.append([label, f"{fmt(b['seconds'], 2)} s", f"{fmt(b.get('export_seconds'), 2)} s",
                        fmt(b["events_per_second"]), fmt(manifest["events"]), fmt(manifest["links"]),
                        fmt(manifest["streams"]), f"{fmt(b['export_bytes'] / 1e6)} / {fmt(b['store_bytes'] / 1e6)}",
                        f"{fmt(b['client_cpu_seconds'], 1)} s", f"{fmt(snapshot_pause(figures, index), 2)} ms",
                        (f"passed in {fmt(checked['seconds'], 2)} s" if checked.get("passed")
                         else f"**failed**: {checked.get('output', '—')}")])
    out += [table(["backup", "time", "export received and checked after", "events/s", "events", "links",
                   "streams", "export / store MB", "backup process CPU", "snapshot pause (server log)",
                   "`eventfeed verify`"], backups), ""]
    ratios = figures["ratios"]
    out.append(f"While the backup ran, the longest append took **{ms(figures['during'], 'max_us', 1)} ms** against "
               f"{ms(reference, 'max_us', 1)} ms without one ({times(ratios['max'], 'without')}); p99 "
               f"{ms(figures['during'], 'p99_us')} ms against {ms(reference, 'p99_us')} ms "
               f"({times(ratios['p99'], 'without')}); appends/s {times(ratios['events_per_second'], 'without')}. "
               f"The backup ran for {fmt_share(figures['backup_share'])} of the *during* window"
               + longest_in(figures) + ".")
    out.append(f"\nMethod: a store of {fmt(figures['events'])} events ({fmt(figures['streams'])} streams × "
               f"{fmt(EVENTS_PER_STREAM)}, written in {fmt(EVENTS_PER_STREAM)}-event appends with durability none "
               f"in {fmt(figures['fill_seconds'])} s, projections on: {fmt(figures['store_bytes'] / 1e6)} MB on "
               "disk), then served by the release build in the default mode (sled, fsync). "
               f"{figures['clients']} anonymous wrk connections append one event per request to "
               f"{figures['append_streams']} other streams, durably. The backup is `eventfeed backup --server … "
               "--user admin:… --to DIR` on the same machine, unpinned (it shares both cores with the server and "
               "the load), writing its copy to the same disk; it is timed from its start to its exit: the export "
               "streamed from `GET /admin/export` and fsynced, checked, then imported into the copy's own store "
               "(*export received and checked after*: when that store appeared). First the backup alone, then "
               "appends without a backup (as long as the backup alone took, at least "
               f"{settings.duration} s), then the same appends starting {LEAD_SECONDS} s before a backup and "
               "stopped when it exits (one wrk until the export was received, another from then on, a tenth of a "
               "second at most between them), then appends without a backup again, as long; the copies' writes "
               "are flushed (`sync`) before each window without. *During* is both windows of the backup and "
               "*without* both windows without one: appends/s over both, each latency the higher window's (the "
               "longest append is exact; p50 and p99 lean high). wrk corrects its percentiles for coordinated "
               "omission (an answer that took *t* counts as the requests its connection would have sent "
               "meanwhile), so a stall of every client shows in p99 as much as in the longest append. Then "
               "`eventfeed verify DIR` checks each copy "
               "(the export's hash "
               "chain, counts and checksum against the manifest, and the store exported again against the "
               "export); the section fails if it does not pass. The snapshot pause is what the server logs for "
               "each export: the writer reads every stream's state between two of its batches, holding the "
               "appends behind it (a scan, not a flush: what the batches before it committed is read as it is); "
               "the events are then read on the server's async threads while appends go on. *Others on server "
               "CPU* includes, during the backup, the backup process itself. *Events/s*: the copy's events (links "
               "of the projections not counted) over the backup's time. No numeric target (issue 32: report it).")
    return out
