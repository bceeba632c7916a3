"""Uncached 20-entry stream pages from the read store (Atom, and JSON with
embed=body) against nginx serving the same bytes from files, and the HTTP
floor: `GET /ping` against nginx sending the same bytes; and the same
pages from the same store with the rendered-page cache off
(`--page-cache-mb 0`), the workload without the feature."""

from .. import targets
from ..common import EVENTS_PER_READ_STREAM, PAGES_PER_READ_STREAM, ROOT, http_request
from ..fmt import errors, fmt, ms, others, ratio, table, times, verdict
from ..servers import Nginx

TITLE = "Uncached page reads"
LABELS = {"atom": "Atom (`application/atom+xml`)", "json": "JSON (`vnd.eventstore.atom+json`, `embed=body`)"}
SHARES = {"atom": ("uncached_atom", targets.UNCACHED_ATOM_SHARE), "json": ("uncached_json", targets.UNCACHED_JSON_SHARE)}


def measure(ctx, result):
    settings = ctx.settings
    server = ctx.ensure_read_server()
    nginx = ctx.ensure_nginx()
    result.update(events=settings.read_streams * EVENTS_PER_READ_STREAM, streams=settings.read_streams,
                  reference_pages=settings.read_streams * PAGES_PER_READ_STREAM,
                  page_sizes={rep: {"identity": sizes[0], "gzip": sizes[1]} for rep, sizes in ctx.page_sizes.items()},
                  rows=[])
    for representation in ("atom", "json"):
        if ("read", "eventfeed", representation) not in ctx.cache:
            ctx.cache[("read", "eventfeed", representation)] = ctx.read_run(
                server.port, representation, settings.read_streams, label="eventfeed uncached",
                server=server.process.pid)
        ctx.cache[("read", "nginx", representation)] = ctx.read_run(
            nginx.port, representation, settings.read_streams, prefix=f"/{representation}",
            label="nginx static", server=nginx.process.pid)
        mine, reference = ctx.cache[("read", "eventfeed", representation)], ctx.cache[("read", "nginx", representation)]
        result["rows"].append({"representation": representation, "eventfeed": mine, "nginx": reference,
                               "eventfeed_over_nginx": ratio(mine["rps"], reference["rps"])})
    result["copying"] = copying_reference(ctx, nginx, [row["representation"] for row in result["rows"]])
    for row in result["rows"]:
        copying = result["copying"].get(row["representation"])
        row["over_copying"] = ratio(row["eventfeed"]["rps"], copying["rps"]) if copying else None
    # The same pages with the page cache off.
    without = ctx.read_runs_without_page_cache([row["representation"] for row in result["rows"]])
    for row in result["rows"]:
        row["without_page_cache"] = without[row["representation"]]
        row["over_without"] = ratio(row["eventfeed"]["rps"], row["without_page_cache"]["rps"])
    server = ctx.read_server
    # The floor: what answering any request costs eventfeed's HTTP stack
    # (hyper, axum, tower-http's layers) with no store read and no
    # rendering, against nginx sending the same bytes from a file.
    status, _, ping = http_request(server.port, "GET", "/ping", {"Accept": "application/json"})
    if status != 200:
        raise RuntimeError(f"GET /ping answered {status}")
    floor_file = nginx.dir / "www" / "floor" / "ping"
    floor_file.parent.mkdir(parents=True, exist_ok=True)
    floor_file.write_bytes(ping)
    floor_file.chmod(0o644)
    floor_file.parent.chmod(0o755)
    floor = ctx.list_run(server.port, ["/ping"], "application/json", label="eventfeed /ping",
                         server=server.process.pid)
    floor_nginx = ctx.list_run(nginx.port, ["/floor/ping"], "application/json", label="nginx the same bytes",
                               server=nginx.process.pid)
    result["floor"] = {"bytes": len(ping), "eventfeed": floor, "nginx": floor_nginx,
                       "eventfeed_over_nginx": ratio(floor["rps"], floor_nginx["rps"])}
    result["body_floor"] = body_floor(ctx, server, nginx)
    result["read_store_restart"] = ctx.read_store_restart


def copying_reference(ctx, nginx, representations):
    """nginx over the same pages with `sendfile off`: it reads each file and
    writes its bytes, a copy into the socket on its own core, as eventfeed
    makes of every kept page; with `sendfile` the kernel sends the file's
    pages by reference and no copy is on nginx's core. Context for the
    ratio, not the target's reference."""
    directory = ctx.workdir / "nginx-copying"
    directory.mkdir(exist_ok=True)
    directory.chmod(0o755)
    www = directory / "www"
    if not www.exists():
        www.symlink_to(nginx.dir / "www")
    copying = Nginx(directory, ctx.pinning, sendfile=False)
    try:
        return {representation: ctx.read_run(copying.port, representation, ctx.settings.read_streams,
                                             prefix=f"/{representation}", label="nginx without sendfile",
                                             server=copying.process.pid)
                for representation in representations}
    finally:
        copying.stop()


def body_floor(ctx, server, nginx):
    """The floor for a body of a page's size: the web UI's largest file,
    embedded in the binary (no store read, no rendering, its headers and
    ETag made once), against nginx sending the same bytes from a file. A
    page cannot cost less than constant bytes of its size."""
    largest = max((path for path in (ROOT / "static").iterdir() if path.is_file()), key=lambda p: p.stat().st_size)
    status, _, body = http_request(server.port, "GET", f"/ui/{largest.name}", {"Accept": "*/*"})
    if status != 200:
        raise RuntimeError(f"GET /ui/{largest.name} answered {status}")
    copy = nginx.dir / "www" / "floor" / largest.name
    copy.write_bytes(body)
    copy.chmod(0o644)
    mine = ctx.list_run(server.port, [f"/ui/{largest.name}"], "*/*", label=f"eventfeed /ui/{largest.name}",
                        server=server.process.pid)
    reference = ctx.list_run(nginx.port, [f"/floor/{largest.name}"], "*/*", label="nginx the same bytes",
                             server=nginx.process.pid)
    return {"path": f"/ui/{largest.name}", "bytes": len(body), "eventfeed": mine, "nginx": reference,
            "eventfeed_over_nginx": ratio(mine["rps"], reference["rps"])}


def target_cell(row):
    key, share = SHARES[row["representation"]]
    measured = row.get("eventfeed_over_nginx")
    return f"{targets.target(key)}: {verdict(measured is not None and measured >= share)}"


def summary(result):
    """The README's rows: each representation against nginx."""
    names = {"atom": "uncached 20-entry Atom page", "json": "uncached 20-entry JSON page, `embed=body`"}
    rows = []
    for row in result.get("rows", []):
        reference = row.get("nginx") or {}
        rows.append([names[row["representation"]], f"{fmt(row['eventfeed']['rps'])} req/s",
                     f"nginx, same bytes: {fmt(reference.get('rps'))} req/s "
                     f"({times(row.get('eventfeed_over_nginx'), 'nginx')})", target_cell(row)])
    return rows


def render(result, settings):
    rows = []
    for row in result["rows"]:
        mine, reference = row["eventfeed"], row.get("nginx") or {}
        without = row.get("without_page_cache") or {}
        rows.append([LABELS[row["representation"]], fmt(mine["rps"]), ms(mine, "p99_us"), errors(mine),
                     fmt(without.get("rps")), times(row.get("over_without"), "without"),
                     fmt(reference.get("rps")), ms(reference, "p99_us"),
                     times(row.get("eventfeed_over_nginx"), "nginx"), others(mine, reference), target_cell(row)])
    out = [table(["representation", "eventfeed req/s", "p99 ms", "errors", "without the page cache req/s",
                  "eventfeed ÷ without", "nginx req/s", "nginx p99 ms", "eventfeed ÷ nginx",
                  "others on server CPU (eventfeed / nginx)", "target"], rows), ""]
    floor = result.get("floor")
    if floor:
        parts = [f"**The HTTP floor.** `GET /ping` ({floor['bytes']} bytes; no store read, no rendering) on the same "
                 f"server: {fmt(floor['eventfeed']['rps'])} req/s (p99 {ms(floor['eventfeed'], 'p99_us')} ms); nginx "
                 f"sending the same bytes from a file: {fmt(floor['nginx']['rps'])} req/s."]
        for row in result["rows"]:
            mine, reference = row["eventfeed"], row.get("nginx")
            if not reference:
                continue
            # Per request on one core: a target of s × nginx's rate allows
            # 1/s times nginx's time per page; eventfeed's HTTP stack takes
            # its floor out of that before anything is read or rendered.
            share = SHARES[row["representation"]][1]
            floor_us, allowed_us = 1e6 / floor["eventfeed"]["rps"], 1e6 / (share * reference["rps"])
            took_us = 1e6 / mine["rps"]
            name = "Atom" if row["representation"] == "atom" else "JSON"
            parts.append(f"{fmt(share, 1)} × nginx on {name} pages allows {fmt(allowed_us, 1)} µs per page, "
                         f"{fmt(allowed_us - floor_us, 1)} µs above the floor ({fmt(floor_us, 1)} µs) to read 20 "
                         f"events, render them and send the larger body; eventfeed took {fmt(took_us, 1)} µs, "
                         f"{fmt(took_us - floor_us, 1)} µs above it.")
        out += [" ".join(parts), ""]
    body = result.get("body_floor")
    if body:
        parts = [f"**The floor for a page-sized body.** `GET {body['path']}` ({fmt(body['bytes'])} bytes: a web UI "
                 f"file embedded in the binary, no store read, no rendering): {fmt(body['eventfeed']['rps'])} req/s "
                 f"against nginx's {fmt(body['nginx']['rps'])} for the same bytes "
                 f"({times(body.get('eventfeed_over_nginx'), 'nginx')}). No page can be served faster than constant "
                 "bytes of its size;"]
        parts.append(", ".join(f"{'Atom' if row['representation'] == 'atom' else 'JSON'} pages ran at "
                               f"{times(ratio(row['eventfeed']['rps'], body['eventfeed']['rps']), 'this floor')}"
                               for row in result["rows"]) + ".")
        out += [" ".join(parts), ""]
    copying = result.get("copying")
    if copying:
        names = {"atom": "Atom", "json": "JSON"}
        figures = "; ".join(
            f"{names[row['representation']]} {fmt(copying[row['representation']]['rps'])} req/s (eventfeed "
            f"{times(row.get('over_copying'), 'that')})" for row in result["rows"] if row["representation"] in copying)
        out += ["**nginx copying the bytes.** The same pages from nginx with `sendfile off`, which reads each file "
                "and writes its bytes into the socket, a copy on its own core as eventfeed makes of every kept page "
                f"(with `sendfile` the kernel sends the file's pages by reference): {figures}. Context, not the "
                "target's reference.", ""]
    restart = result.get("read_store_restart")
    if restart:
        out += [f"Restarting the server on this store ({fmt(restart['events'])} events) took "
                f"{fmt(restart['seconds'], 2)} s to the first answered /ping (the start-up target is for 10M events: "
                "see the start-up section).", ""]
    sizes = result.get("page_sizes")
    size_note = (f" Pages average {fmt(sizes['atom']['identity'] / 1024, 1)} KiB (Atom) and "
                 f"{fmt(sizes['json']['identity'] / 1024, 1)} KiB (JSON)." if sizes else "")
    out.append(f"Method: full 20-entry forward pages picked at random from a store of {fmt(result['events'])} events "
               f"({result['streams']} streams × {EVENTS_PER_READ_STREAM}), {settings.read_connections} connections, "
               f"no compression, after {settings.warmup} s of unrecorded warm-up. The server keeps rendered pages that "
               "can no longer change in memory (`--page-cache-mb`, default 128 MiB: every page of this store fits); "
               "*without the page cache*: the same store and pages, served by a server started with "
               "`--page-cache-mb 0`, which reads and renders every page. Reference: nginx (one worker) "
               f"serving the same bytes from files, {reference_pages(result)}, with the same Content-Type."
               f"{size_note}")
    return out


def reference_pages(result):
    """Which pages nginx served: every page eventfeed was read over, or,
    in runs before 2026-12-07, a sample of them (a smaller working set, which
    favoured nginx: see `Context.ensure_nginx`)."""
    if "reference_pages" in result:
        return f"the same {fmt(result['reference_pages'])} pages"
    return f"for a sample of {result['sample_pages']} pages"
