"""Durable appends with the system projections ($ce-, $et-, $streams) on vs
off, same workloads, in alternating rounds; and random 20-entry pages of
$all from the read store vs nginx serving the same bytes. Only `$admins`
read $all and the projections' streams: those requests carry the built-in
admin's credentials; the appends stay anonymous."""

import json
import random
import shutil
import statistics

from .. import targets
from ..common import (ADMIN, ADMIN_AUTHORIZATION, ATOM_JSON, ATOM_XML, EVENTS_PER_READ_STREAM, PAGE_SIZE,
                      PROJECTIONS_OFF, format_position, http_request, log)
from ..fmt import errors, fmt, fmt_share, ms, others, ratio, table, times, verdict
from ..servers import Eventfeed
from .reads import LABELS

TITLE = "System projections and `$all`"


def appends(ctx, result):
    """The same append workloads on a server with every system projection
    (the default) and on one with none, each on a fresh store, in rounds
    whose order alternates (on, off, then off, on) so that a drift of the
    machine's speed during the section weighs on both alike."""
    ctx.fsync_probe()
    settings = ctx.settings
    runs, checks = {}, {}
    for round_index in range(settings.projection_rounds):
        order = ("on", "off") if round_index % 2 == 0 else ("off", "on")
        for setting in order:
            server = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / f"projections-{setting}-{round_index}",
                               "fsync", options=[] if setting == "on" else PROJECTIONS_OFF)
            try:
                for clients, batch in settings.projection_workloads:
                    nonce = f"{random.getrandbits(32):08x}"
                    figures = ctx.wrk.run(server.port, "append",
                                          [nonce, settings.projection_streams, batch,
                                           settings.projection_categories, settings.projection_event_types],
                                          clients, server=server.process.pid)
                    figures["events_per_second"] = ((figures["requests"] - figures["errors"]) * batch
                                                    / figures["seconds"])
                    runs.setdefault((setting, clients, batch), []).append(figures)
                    log(f"appends, projections {setting}, {clients} clients x{batch}: "
                        f"{figures['events_per_second']:.0f} events/s, p99 {figures['p99_us'] / 1000:.2f} ms, "
                        f"errors {figures['errors']}, others on the server CPU "
                        f"{fmt_share(figures.get('others_cpu_share'))}")
                if setting not in checks:
                    checks[setting] = check(server, setting == "on")
            finally:
                server.stop()
                shutil.rmtree(server.data_dir, ignore_errors=True)
    result["check"] = checks
    result["workloads"] = []
    for clients, batch in settings.projection_workloads:
        on_runs, off_runs = runs[("on", clients, batch)], runs[("off", clients, batch)]
        on, off = combined(on_runs), combined(off_runs)
        result["workloads"].append({
            "clients": clients, "events_per_request": batch, "on_rounds": on_runs, "off_rounds": off_runs,
            "on": on, "off": off, "on_over_off": ratio(on["events_per_second"], off["events_per_second"]),
            "per_round": [ratio(a["events_per_second"], b["events_per_second"]) for a, b in zip(on_runs, off_runs)]})


def check(server, expected):
    """Whether the system streams the workload feeds exist (`expected`)
    or not: the projections did (not do) their work."""
    found = {}
    for stream in ("$ce-order", "$et-OrderPlaced", "$streams"):
        status, _, body = http_request(server.port, "GET", f"/streams/{stream}/0/forward/{PAGE_SIZE}",
                                       {"Accept": ATOM_JSON, **ADMIN})
        entries = len(json.loads(body).get("entries", [])) if status == 200 else 0
        found[stream] = status == 200 and entries > 0
    return {"as_expected": all(exists == expected for exists in found.values()), "found": found}


def combined(runs):
    """Several rounds of one append workload as one: events/s over all of
    them, the highest p99, the errors added up."""
    seconds = sum(f["seconds"] for f in runs)
    shares = [f["others_cpu_share"] for f in runs if f.get("others_cpu_share") is not None]
    return {
        "events_per_second": sum(f["events_per_second"] * f["seconds"] for f in runs) / seconds,
        "p99_us": max(f["p99_us"] for f in runs),
        "errors": sum(f["errors"] for f in runs),
        **{kind: sum(f[kind] for f in runs) for kind in ("timeouts", "connect_errors", "read_errors",
                                                          "write_errors", "status_errors", "non_2xx")},
        "others_cpu_share": statistics.mean(shares) if shares else None,
    }


def all_page_path(representation, position):
    query = "?embed=body" if representation == "json" else ""
    return f"/streams/$all/{format_position(position)}/forward/{PAGE_SIZE}{query}"


def all_reads(ctx, result):
    """Random full 20-entry forward pages of $all from the read store, as
    the uncached stream pages are read; nginx serves the same bytes of
    every page (see `Context.ensure_nginx` for why not a sample). Every
    request carries the admin's credentials (only `$admins` read $all),
    nginx's too, so that both get the same requests."""
    settings = ctx.settings
    server = ctx.ensure_read_server()
    nginx = ctx.ensure_nginx()
    pages = settings.read_streams * EVENTS_PER_READ_STREAM // PAGE_SIZE
    www = ctx.workdir / "nginx" / "www"
    sizes = {}
    for representation, accept in (("atom", ATOM_XML), ("json", ATOM_JSON)):
        lengths = []
        for page in range(pages):
            path = all_page_path(representation, page * PAGE_SIZE)
            status, headers, body = http_request(server.port, "GET", path, {"Accept": accept, **ADMIN})
            cache_control = {k.lower(): v for k, v in headers.items()}.get("cache-control", "")
            if status != 200 or "max-age=31536000" not in cache_control:
                raise RuntimeError(f"GET {path} answered {status}, Cache-Control {cache_control!r}")
            target = www / representation / path.split("?")[0].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            lengths.append(len(body))
        sizes[representation] = statistics.mean(lengths)
    for directory in [www, *www.rglob("*")]:
        if directory.is_dir():
            directory.chmod(0o755)
    figures = result["all_pages"] = {"pages": pages, "events": settings.read_streams * EVENTS_PER_READ_STREAM,
                                     "sample_pages": pages, "page_sizes": sizes, "rows": [],
                                     "authorization": "admin"}
    accepts = {"atom": ATOM_XML, "json": ATOM_JSON}
    for representation, accept in accepts.items():
        mine = [all_page_path(representation, page * PAGE_SIZE) for page in range(pages)]
        reference = [f"/{representation}" + all_page_path(representation, page * PAGE_SIZE) for page in range(pages)]
        # nginx answers the paths as written in the list with eventfeed's bytes.
        _, _, body = http_request(server.port, "GET", mine[-1], {"Accept": accept, **ADMIN})
        status, _, copy = http_request(nginx.port, "GET", reference[-1], {"Accept": accept, **ADMIN})
        if status != 200 or copy != body:
            raise RuntimeError(f"nginx answered {status} to {reference[-1]}, not the same bytes")
        eventfeed = ctx.list_run(server.port, mine, accept, label=f"eventfeed $all {representation}",
                                 server=server.process.pid, authorization=ADMIN_AUTHORIZATION)
        static = ctx.list_run(nginx.port, reference, accept, label=f"nginx static $all {representation}",
                              server=nginx.process.pid, authorization=ADMIN_AUTHORIZATION)
        figures["rows"].append({"representation": representation, "eventfeed": eventfeed, "nginx": static,
                                "eventfeed_over_nginx": ratio(eventfeed["rps"], static["rps"]),
                                "stream_pages": ctx.cache.get(("read", "eventfeed", representation))})

    def without_cache(port, representation, label, pid):
        mine = [all_page_path(representation, page * PAGE_SIZE) for page in range(pages)]
        return ctx.list_run(port, mine, accepts[representation], label=f"{label} $all {representation}",
                            server=pid, authorization=ADMIN_AUTHORIZATION)

    without = ctx.read_runs_without_page_cache(list(accepts), run=without_cache)
    for row in figures["rows"]:
        row["without_page_cache"] = without[row["representation"]]
    if "reads" not in ctx.sections:
        result["read_store_restart"] = ctx.read_store_restart


def measure(ctx, result):
    s = ctx.settings
    result.update(streams=s.projection_streams, categories=s.projection_categories,
                  event_types=s.projection_event_types, rounds=s.projection_rounds)
    appends(ctx, result)
    all_reads(ctx, result)


def render(result, settings):
    out = []
    rows = []
    for w in result.get("workloads", []):
        on, off, share = w["on"], w["off"], w.get("on_over_off")
        rows.append([f"{w['clients']} clients, {w['events_per_request']} event{'s' if w['events_per_request'] > 1 else ''}"
                     "/request", fmt(on["events_per_second"]), ms(on, "p99_us"), errors(on),
                     fmt(off["events_per_second"]), ms(off, "p99_us"), errors(off),
                     f"**{times(share, 'off')}**" if share else "—", ", ".join(fmt(r, 2) for r in w["per_round"]),
                     others(on, off),
                     f"{targets.target('projections')}: {verdict(share is not None and share >= targets.PROJECTIONS_SHARE)}"])
    if rows:
        out += [table(["workload", "projections on: events/s", "p99 ms", "errors", "off: events/s", "p99 ms",
                       "errors", "on ÷ off", "per round", "others on server CPU (on / off)", "target"], rows), ""]
    all_pages = result.get("all_pages")
    if all_pages:
        read_rows = []
        for row in all_pages["rows"]:
            mine, reference, share = row["eventfeed"], row["nginx"], row.get("eventfeed_over_nginx")
            stream_pages = row.get("stream_pages") or {}
            read_rows.append([LABELS[row["representation"]], fmt(mine["rps"]), ms(mine, "p99_us"), errors(mine),
                              fmt(reference["rps"]), ms(reference, "p99_us"), times(share, "nginx"),
                              fmt((row.get("without_page_cache") or {}).get("rps")),
                              fmt(stream_pages.get("rps")), others(mine, reference),
                              f"{targets.target('all_pages')}: "
                              f"{verdict(share is not None and share >= targets.ALL_PAGES_SHARE)}"])
        out += [table(["`$all` pages", "eventfeed req/s", "p99 ms", "errors", "nginx req/s", "nginx p99 ms",
                       "eventfeed ÷ nginx", "without the page cache req/s", "stream pages req/s",
                       "others on server CPU (eventfeed / nginx)",
                       "target"], read_rows), ""]
    checks = result.get("check")
    if checks:
        checked = ("yes" if all(checks.get(s, {}).get("as_expected") for s in ("on", "off")) else
                   "**no**: " + "; ".join(f"{s}: {checks[s]['found'] if s in checks else 'not checked'}"
                                          for s in ("on", "off")))
        out.append(f"After the run, `$ce-order`, `$et-OrderPlaced` and `$streams` had entries with the projections "
                   f"on and did not exist with them off: {checked}.\n")
    restart = result.get("read_store_restart")
    if restart:
        out.append(f"Restarting the server on the read store ({fmt(restart['events'])} events) took "
                   f"{fmt(restart['seconds'], 2)} s to the first answered /ping.\n")
    rounds = result["rounds"]
    out.append("Method, appends: anonymous durable appends (fsync) with the three system projections maintained "
               "(`$ce-{category}`, `$et-{type}`, `$streams`: the default) vs none of them "
               f"(`{' '.join(PROJECTIONS_OFF)}`). Each request POSTs to one of {fmt(result['streams'])} streams "
               f"named `{{category}}-{{n}}` in {result['categories']} categories, each event's type picked among "
               f"{result['event_types']}: every event adds a link to a `$ce-` and a `$et-` stream, a stream's first "
               "event one to `$streams`, in the same atomic batch. Each configuration runs on a fresh store, in "
               f"{rounds} round{'s' if rounds > 1 else ''}"
               + (" ordered on, off, then off, on; events/s over all rounds, p99 the highest round's, *per round* "
                  "the ratio of each round" if rounds > 1 else "") + ".")
    if all_pages:
        sizes = all_pages.get("page_sizes")
        out.append(f"\nMethod, `$all`: full 20-entry forward pages (`/streams/$all/{{position}}/forward/20`) picked at "
                   f"random among all {fmt(all_pages['pages'])} of the read store ({fmt(all_pages['events'])} events), "
                   f"{settings.read_connections} connections, no compression, after {settings.warmup} s of warm-up, "
                   "as the uncached stream pages. Reference: nginx serving the same bytes"
                   + (f", every one of the {fmt(all_pages['pages'])} pages"
                      if all_pages["sample_pages"] == all_pages["pages"]
                      else f" for a sample of {fmt(all_pages['sample_pages'])} pages")
                   + ". The server keeps full `$all` pages not at the head in "
                   "memory (`--page-cache-mb`, default 128 MiB); *without the page cache*: the same pages from a "
                   "server started with `--page-cache-mb 0`. *Stream pages* repeats eventfeed's uncached stream-page "
                   "figure of the same run, when the reads section ran too."
                   + (" Only `$admins` may read `$all`: every request carries the built-in admin's Basic credentials "
                      "(verified once, then remembered by the server), nginx's too, while the stream pages are read "
                      "anonymously." if all_pages.get("authorization") == "admin" else "")
                   + (f" Pages average {fmt(sizes['atom'] / 1024, 1)} KiB (Atom) and {fmt(sizes['json'] / 1024, 1)} "
                      "KiB (JSON)." if sizes else ""))
    return out
