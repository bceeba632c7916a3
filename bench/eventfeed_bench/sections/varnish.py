"""Cached pages: the read store's pages through varnishd running the shipped
VCL against nginx serving the same bytes (gzip and identity), and the same
Atom hits through Varnish's builtin VCL, the reference for the shipped VCL's
own share."""

from .. import targets
from ..common import ATOM_JSON, ATOM_XML, PAGES_PER_READ_STREAM, http_request
from ..fmt import errors, fmt, ms, others, ratio, table, times, verdict
from ..servers import Varnish

TITLE = "Cached page reads through Varnish"


def warm(ctx, varnish, representations):
    """Every sampled page once per encoding (the shipped VCL stores a gzip
    copy and an uncompressed one), so that every measured read is a hit."""
    for representation, accept in representations:
        for stream in range(ctx.settings.sample_streams):
            for page in range(PAGES_PER_READ_STREAM):
                path = ctx.page_path(representation, stream, page)
                for encoding in ({"Accept-Encoding": "gzip"}, {}):
                    status, _, _ = http_request(varnish.port, "GET", path, {"Accept": accept, **encoding})
                    if status != 200:
                        raise RuntimeError(f"GET {path} through Varnish answered {status}")


def hit_check(ctx, varnish):
    """After the measurement, one more read of a sampled page must be a hit."""
    _, headers, _ = http_request(varnish.port, "GET", ctx.page_path("atom", 0, 0), {"Accept": ATOM_XML})
    return len(headers.get("X-Varnish", "").split()) == 2


def measure(ctx, result):
    settings = ctx.settings
    server = ctx.ensure_read_server()
    nginx = ctx.ensure_nginx()
    result.update(sample_pages=settings.sample_streams * PAGES_PER_READ_STREAM, rows=[], builtin=[])
    # The reference for what the shipped VCL itself is worth: the same
    # Atom hits through Varnish with its builtin VCL (only a backend).
    builtin = Varnish(ctx.workdir / "varnish-builtin", ctx.pinning, server.port, builtin=True)
    builtin_figures = {}
    try:
        warm(ctx, builtin, (("atom", ATOM_XML),))
        for encoding in ("gzip", "identity"):
            builtin_figures[encoding] = ctx.read_run(
                builtin.port, "atom", settings.sample_streams, encoding="gzip" if encoding == "gzip" else "-",
                label=f"varnish builtin VCL {encoding}", server=builtin.process.pid)
    finally:
        builtin.stop()
    varnish = Varnish(ctx.workdir / "varnish", ctx.pinning, server.port)
    try:
        warm(ctx, varnish, (("atom", ATOM_XML), ("json", ATOM_JSON)))
        for representation in ("atom", "json"):
            for encoding in ("gzip", "identity"):
                accept_encoding = "gzip" if encoding == "gzip" else "-"
                nginx_prefix = f"/{representation}-gzip" if encoding == "gzip" else f"/{representation}"
                mine = ctx.read_run(varnish.port, representation, settings.sample_streams, encoding=accept_encoding,
                                    label=f"varnish {encoding}", server=varnish.process.pid)
                reference = ctx.read_run(nginx.port, representation, settings.sample_streams, prefix=nginx_prefix,
                                         encoding=accept_encoding, label=f"nginx {encoding}",
                                         server=nginx.process.pid)
                result["rows"].append({"representation": representation, "encoding": encoding, "varnish": mine,
                                       "nginx": reference, "varnish_over_nginx": ratio(mine["rps"], reference["rps"])})
        result["hit_after"] = hit_check(ctx, varnish)
    finally:
        varnish.stop()
    shipped = {row["encoding"]: row["varnish"] for row in result["rows"] if row["representation"] == "atom"}
    for encoding, figures in builtin_figures.items():
        result["builtin"].append({"encoding": encoding, "varnish_builtin": figures,
                                  "shipped_over_builtin": ratio(shipped[encoding]["rps"], figures["rps"])})


def render(result, settings):
    rows = []
    for row in result["rows"]:
        mine, reference, share = row["varnish"], row["nginx"], row.get("varnish_over_nginx")
        rows.append([row["representation"], row["encoding"], fmt(mine["rps"]), ms(mine, "p99_us"), errors(mine),
                     fmt(reference["rps"]), ms(reference, "p99_us"), times(share, "nginx"), others(mine, reference),
                     f"{targets.target('cached')}: {verdict(share is not None and share >= targets.CACHED_SHARE)}"])
    out = [table(["representation", "encoding", "Varnish req/s", "p99 ms", "errors", "nginx req/s", "nginx p99 ms",
                  "Varnish ÷ nginx", "others on server CPU (Varnish / nginx)", "target"], rows), ""]
    if result.get("builtin"):
        out.append("| the same Atom hits, builtin VCL | Varnish req/s | shipped VCL ÷ builtin |")
        out.append("|---|---|---|")
        for row in result["builtin"]:
            out.append(f"| {row['encoding']} | {fmt(row['varnish_builtin']['rps'])} | "
                       f"{times(row.get('shipped_over_builtin'), 'builtin')} |")
        out.append("")
    if "hit_after" in result:
        out.append(f"A read after the measurement was a cache hit: {'yes' if result['hit_after'] else '**no**'}.\n")
    out.append(f"Method: the uncached section's pages through `varnishd` running `deploy/varnish/eventfeed.vcl` (all "
               f"{result['sample_pages']} sampled pages cached before measuring), default parameters, vs nginx "
               "serving the same bytes. *gzip*: clients send `Accept-Encoding: gzip`; Varnish serves the gzip copy "
               "it stored, nginx the same gzip bytes. *identity*: no compression; Varnish serves the uncompressed "
               "copy the VCL stores, nginx plain files. The builtin-VCL reference declares only a backend (Varnish's "
               "builtin VCL stores the gzip copy alone and gunzips it for clients without gzip). Hits never reach "
               "eventfeed: what separates Varnish from nginx here is Varnish's own hit path.")
    return out
