"""Durable appends over HTTP in each durability mode (1/16/64 clients with
one event per request, 16 clients with 20-event batches; with fsync, the
rows with targets again with random event ids), next to the disk's
fdatasync rate and the cost of new file pages, probed in the same run."""

import random
import shutil

from .. import targets
from ..common import log
from ..fmt import errors, fmt, fmt_share, ms, table, verdict
from ..servers import Eventfeed

TITLE = "Durable appends over HTTP"
MODES = ("fsync", "flush", "none")
# An expected version no stream of the run reaches: every append with it
# is refused ("Wrong expected EventNumber") and writes nothing.
REFUSED_EXPECTED_VERSION = 1_000_000_000


def append_workloads(settings):
    workloads = [(clients, 1) for clients in settings.append_clients]
    workloads.append((settings.batch_clients, settings.batch_size))
    return workloads


def random_id_workloads(settings):
    """The workloads with targets, again with random event ids (fsync
    only): ids are ordered otherwise, which keeps the id index's
    inserts at one end of it."""
    return [(max(settings.append_clients), 1), (settings.batch_clients, settings.batch_size)]


def measure_rows(ctx, modes=MODES, workloads=None):
    """Measures the append rows not measured yet in this run, into ctx.cache
    (keyed ("append", mode, clients, batch), ("append_random", clients,
    batch) and, for the floor, ("append_refused", clients, batch)); AtomBus
    asks for some of them too."""
    settings = ctx.settings
    ctx.fsync_probe()
    ctx.page_probe()
    # Each kind of id gets a store of its own, so that the two batch rows
    # meet stores the rows before them grew to about one size (330,000
    # and 185,000 events): on a shared one the random rows came last, on
    # twice the events, and the comparison of ids measured store growth.
    stores = [(mode, kind) for mode in modes
              for kind in (("ordered", "random") if mode == "fsync" and workloads is None else ("ordered",))]
    for mode, kind in stores:
        if kind == "ordered":
            todo = [(clients, batch, "ordered") for clients, batch in (workloads or append_workloads(settings))
                    if ("append", mode, clients, batch) not in ctx.cache]
        else:
            todo = [(clients, batch, "random") for clients, batch in random_id_workloads(settings)
                    if ("append_random", clients, batch) not in ctx.cache]
        refused = [(clients, batch) for clients, batch in random_id_workloads(settings)
                   if mode == "fsync" and kind == "ordered" and workloads is None
                   and ("append_refused", clients, batch) not in ctx.cache]
        if not todo and not refused:
            continue
        server = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / f"appends-{mode}-{kind}", mode)
        try:
            for clients, batch, ids in todo:
                figures = run_appends(ctx, server, clients, batch, ids)
                key = ("append", mode, clients, batch) if ids == "ordered" else ("append_random", clients, batch)
                ctx.cache[key] = figures
                log(f"appends {mode} {clients} clients x{batch}, {ids} ids: {figures['rps']:.0f} req/s, "
                    f"p99 {figures['p99_us'] / 1000:.2f} ms, errors {figures['errors']}, "
                    f"others on the server CPU {fmt_share(figures.get('others_cpu_share'))}")
            # The floor under the rows with targets: the same requests, on
            # the same store, each refused by the writer for an expected
            # version no stream reaches. Everything an append costs but
            # writing and syncing it.
            for clients, batch in refused:
                figures = run_appends(ctx, server, clients, batch, "ordered", expected=REFUSED_EXPECTED_VERSION)
                if figures["requests"] != figures["errors"]:
                    raise RuntimeError(f"{figures['requests'] - figures['errors']} of the appends meant to be "
                                       "refused were not")
                ctx.cache[("append_refused", clients, batch)] = figures
                log(f"appends refused {clients} clients x{batch}: {figures['rps']:.0f} req/s, "
                    f"p99 {figures['p99_us'] / 1000:.2f} ms")
        finally:
            server.stop()
            shutil.rmtree(server.data_dir, ignore_errors=True)


def run_appends(ctx, server, clients, batch, ids, expected="-"):
    nonce = f"{random.getrandbits(32):08x}"
    figures = ctx.wrk.run(server.port, "append",
                          [nonce, ctx.settings.append_streams, batch, 0, 0, ids, "-", expected],
                          clients, server=server.process.pid)
    figures["events_per_request"] = batch
    figures["events_per_second"] = (figures["requests"] - figures["errors"]) * batch / figures["seconds"]
    return figures


def per_event(figures, field, scale):
    """`figures[field]` per event appended, scaled, or None."""
    events = figures["events_per_second"] * figures["seconds"]
    if figures.get(field) is None or not events:
        return None
    return figures[field] * scale / events


def measure(ctx, result):
    measure_rows(ctx)
    probe = ctx.cache["fsync"]
    result["fsync_probe"] = probe
    result["new_pages"] = ctx.cache.get("pages")
    rows = result["rows"] = []
    for mode in MODES:
        keys = [(mode, "ordered", clients, batch, ("append", mode, clients, batch))
                for clients, batch in append_workloads(ctx.settings)]
        if mode == "fsync":
            keys += [(mode, "random", clients, batch, ("append_random", clients, batch))
                     for clients, batch in random_id_workloads(ctx.settings)]
        for durability, ids, clients, batch, key in keys:
            load = ctx.cache.get(key)
            if not load:
                continue
            rows.append({
                "durability": durability, "ids": ids, "clients": clients, "events_per_request": batch,
                "load": load, "events_per_second": load["events_per_second"],
                "events_per_fsync": load["events_per_second"] / probe["per_second"] if durability == "fsync" else None,
                "server_cpu_us_per_event": per_event(load, "server_cpu_seconds", 1e6),
                "written_kib_per_event": per_event(load, "server_written_bytes", 1 / 1024),
            })
    result["refused"] = [
        {"clients": clients, "events_per_request": batch, "load": load,
         "offered_events_per_second": load["rps"] * batch,
         "server_cpu_us_per_request": (load["server_cpu_seconds"] * 1e6 / load["requests"]
                                       if load.get("server_cpu_seconds") is not None and load["requests"] else None)}
        for clients, batch in random_id_workloads(ctx.settings)
        if (load := ctx.cache.get(("append_refused", clients, batch)))]


def target_cell(row):
    load = row["load"]
    if row["durability"] != "fsync":
        return ""
    if row["events_per_request"] == 1 and row["clients"] == 64:
        met = (load["rps"] >= targets.APPENDS_64_PER_SECOND and load["p99_us"] <= targets.APPENDS_64_P99_US
               and load["errors"] == 0)
        return f"{targets.target('appends_64')}: {verdict(met)}"
    if row["events_per_request"] > 1:
        met = row["events_per_second"] >= targets.BATCH_EVENTS_PER_SECOND
        return f"{targets.target('batches')}: {verdict(met)}"
    if row["clients"] == 1:
        return f"{targets.target('single_client')}: {verdict(load['p50_us'] <= targets.SINGLE_CLIENT_P50_US)}"
    return ""


def summary(result):
    """The README's rows: the lone client's p50 against one fdatasync, 64
    clients and the 20-event batches against the disk's fdatasyncs/s (with
    fsync, ordered ids)."""
    probe = result.get("fsync_probe") or {}
    rows = []
    for row in result.get("rows", []):
        if row["durability"] != "fsync" or row["ids"] != "ordered":
            continue
        load, clients, batch = row["load"], row["clients"], row["events_per_request"]
        fsyncs = f"{fmt(probe.get('per_second'))} fdatasyncs/s ({fmt(row['events_per_fsync'], 1)} events per fsync)"
        if clients == 1 and batch == 1:
            reference = f"one fdatasync: p50 {ms(probe, 'p50_us')} ms"
            unsynced = lone_load(result, "none")
            if unsynced:
                reference += f"; the same append with durability none, nothing synced: p50 {ms(unsynced, 'p50_us')} ms"
            rows.append(["lone client, durable append", f"p50 {ms(load, 'p50_us')} ms", reference, target_cell(row)])
        elif clients == 64 and batch == 1:
            rows.append(["64 clients, durable single-event appends",
                         f"{fmt(row['events_per_second'])} events/s, p99 {ms(load, 'p99_us', 1)} ms",
                         fsyncs + refused_reference(result, clients, batch), target_cell(row)])
        elif batch > 1:
            rows.append([f"{clients} clients, durable {batch}-event batches",
                         f"{fmt(row['events_per_second'])} events/s",
                         fsyncs + refused_reference(result, clients, batch), target_cell(row)])
    return rows


def refused_reference(result, clients, batch):
    """The floor of a workload with a target, for the README's reference
    column: the same appends refused by the writer, nothing written."""
    floor = next((row for row in result.get("refused", [])
                  if row["clients"] == clients and row["events_per_request"] == batch), None)
    if not floor:
        return ""
    return f"; the same appends refused, nothing written: {fmt(floor['offered_events_per_second'])} events/s"


def lone_load(result, durability):
    """The lone client's load (one event per request, ordered ids) in
    `durability`; with none, what a lone append costs the server with no
    sync at all, the floor under the fsync row."""
    for row in result.get("rows", []):
        if (row["durability"] == durability and row["ids"] == "ordered" and row["clients"] == 1
                and row["events_per_request"] == 1):
            return row["load"]
    return None


def render(result, settings):
    rows = [[row["durability"], row["ids"], row["clients"], row["events_per_request"], fmt(row["load"]["rps"]),
             fmt(row["events_per_second"]), ms(row["load"], "p50_us"), ms(row["load"], "p99_us"),
             errors(row["load"]), fmt(row["events_per_fsync"], 1), fmt(row["server_cpu_us_per_event"], 1),
             fmt(row["written_kib_per_event"], 2), fmt_share(row["load"].get("others_cpu_share")), target_cell(row)]
            for row in result["rows"]]
    out = [table(["durability", "event ids", "clients", "events/request", "requests/s", "events/s", "p50 ms",
                  "p99 ms", "errors", "events per fsync", "server CPU µs/event", "written KiB/event",
                  "others on server CPU", "target"], rows), ""]
    probe, pages = result.get("fsync_probe"), result.get("new_pages")
    if probe:
        out.append(f"**The disk**, probed in the same run: pwrite 4 KiB + fdatasync in a loop ({probe['count']} "
                   f"times, on the data disk): **{fmt(probe['per_second'])}/s**, p50 {fmt(probe['p50_us'])} µs, "
                   f"p99 {fmt(probe['p99_us'])} µs."
                   + (f" New file pages (a new {fmt(pages['mib'])} MiB file written in 1 MiB pwrites, no sync, then "
                      f"the same range again): **{fmt(pages['first_mib_s'])} MiB/s** the first time "
                      f"({fmt(pages['first_us_per_kib'], 2)} µs of kernel time per KiB), "
                      f"{fmt(pages['again_mib_s'])} MiB/s again." if pages else "") + "\n")
    unsynced, lone = lone_load(result, "none"), lone_load(result, "fsync")
    if probe and unsynced and lone:
        floor = unsynced["p50_us"] + probe["p50_us"]
        out.append(f"**The lone append's floor**: the same lone append with durability `none` (nothing synced) "
                   f"takes p50 {ms(unsynced, 'p50_us')} ms; with one fdatasync added, "
                   f"{floor / 1000:.2f} ms. The `fsync` row's p50 is {lone['p50_us'] / floor:.2f} × that, "
                   "against the 0.3 ms target (bench/HISTORY.md says where the unsynced append's time goes).\n")
    out.extend(refused_floor(result))
    out.append(f"Method: POST events+json to one of {settings.append_streams} streams at random, a fresh event id "
               "per event, one wrk connection per client. *Event ids*: *ordered*, each later than the last (as "
               "UUIDv7 are); *random*, spread over the whole id space (as UUIDv4 are), so the store's id index takes "
               "its inserts all over. *Events per fsync* = events/s ÷ the probe's fdatasyncs/s (1.0 = one fsync "
               "per event). Each durability mode, and with `fsync` each kind of id, runs its rows in the order "
               "shown on a store of its own. *Server CPU* and *written*: the server's CPU time (all threads) and "
               "the bytes of file pages it dirtied, per event appended. Each KiB a store's files grow by costs "
               "the new-file-pages figure: where it is far below the again figure (memory the host backs on first "
               "touch), appends slow down as their store grows.")
    return out


def refused_floor(result):
    """The paragraph on the append path's floor: the workloads with targets
    with every append refused, so nothing is written or synced."""
    floors = result.get("refused") or []
    if not floors:
        return []
    parts = []
    for floor in floors:
        load, clients, batch = floor["load"], floor["clients"], floor["events_per_request"]
        if batch == 1:
            target = targets.APPENDS_64_PER_SECOND
            parts.append(f"{clients} clients × 1 event: **{fmt(load['rps'])} requests/s** (p99 "
                         f"{ms(load, 'p99_us')} ms, {fmt(floor['server_cpu_us_per_request'], 1)} µs of server CPU "
                         f"per request); the {fmt(target)}/s target is "
                         f"{target / floor['offered_events_per_second']:.2f} × this floor")
        else:
            target = targets.BATCH_EVENTS_PER_SECOND
            parts.append(f"{clients} clients × {batch} events: **{fmt(load['rps'])} requests/s**, "
                         f"{fmt(floor['offered_events_per_second'])} events/s offered "
                         f"({fmt(floor['server_cpu_us_per_request'], 1)} µs of server CPU per request); the "
                         f"{fmt(target)} events/s target is {target / floor['offered_events_per_second']:.2f} × "
                         "this floor")
    return ["**The append path's floor**: the workloads with targets again, on the `fsync` rows' store (ordered "
            "ids), with every append refused by the writer for an `ES-ExpectedVersion` no stream reaches: each "
            "request is parsed, validated, handed to the writer and checked against its stream's state, then "
            "answered 400, and nothing is written or synced. " + "; ".join(parts) + ". An append cannot be "
            "accepted faster than it can be refused: where a target is above 1.00 × its floor, it needs the HTTP "
            "request and the hand-off to the writer made cheaper, not the store.\n"]
