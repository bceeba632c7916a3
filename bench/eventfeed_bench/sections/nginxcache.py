"""Cached pages through nginx's proxy_cache: the read store's pages through
nginx running the shipped configuration (deploy/nginx/eventfeed.conf)
against nginx serving the same bytes statically (gzip and identity), in the
same run. The counterpart of the varnish section for the other cache
eventfeed ships a configuration for."""

import http.client

from .. import targets
from ..common import ATOM_JSON, ATOM_XML, PAGES_PER_READ_STREAM
from ..fmt import errors, fmt, ms, others, ratio, table, times, verdict
from ..servers import NginxCache

TITLE = "Cached page reads through nginx proxy_cache"


def get(port, path, headers):
    """A GET with exactly `headers` (http.client would add an
    `Accept-Encoding: identity` of its own): the cache keeps a copy per
    wording of the headers eventfeed's Vary names, so warming up must send
    what wrk sends. Returns (status, headers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()


def warm(ctx, cache, representations):
    """Every sampled page once per encoding, so that every measured read is
    a hit; a page must come back a hit the second time."""
    for representation, accept in representations:
        for stream in range(ctx.settings.sample_streams):
            for page in range(PAGES_PER_READ_STREAM):
                path = ctx.page_path(representation, stream, page)
                for encoding in ({"Accept-Encoding": "gzip"}, {}):
                    status, _ = get(cache.port, path, {"Accept": accept, **encoding})
                    if status != 200:
                        raise RuntimeError(f"GET {path} through nginx proxy_cache answered {status}")
    status, headers = get(cache.port, ctx.page_path("atom", 0, 0), {"Accept": ATOM_XML})
    if status != 200 or headers.get("x-cache-status") != "HIT":
        raise RuntimeError(f"a warmed page is no hit: {status} {headers}")


def hit_check(ctx, cache):
    """After the measurement, one more read of a sampled page must be a hit."""
    _, headers = get(cache.port, ctx.page_path("json", 0, 0), {"Accept": ATOM_JSON, "Accept-Encoding": "gzip"})
    return headers.get("x-cache-status") == "HIT"


def measure(ctx, result):
    settings = ctx.settings
    server = ctx.ensure_read_server()
    nginx = ctx.ensure_nginx()
    result.update(sample_pages=settings.sample_streams * PAGES_PER_READ_STREAM, rows=[])
    representations = (("atom", ATOM_XML), ("json", ATOM_JSON))
    cache = minimal = None
    try:
        cache = NginxCache(ctx.workdir / "nginx-proxy-cache", ctx.pinning, server.port)
        warm(ctx, cache, representations)
        minimal = NginxCache(ctx.workdir / "nginx-proxy-cache-minimal", ctx.pinning, server.port, minimal=True)
        warm(ctx, minimal, representations)
        for representation in ("atom", "json"):
            for encoding in ("gzip", "identity"):
                accept_encoding = "gzip" if encoding == "gzip" else "-"
                nginx_prefix = f"/{representation}-gzip" if encoding == "gzip" else f"/{representation}"
                mine = ctx.read_run(cache.port, representation, settings.sample_streams, encoding=accept_encoding,
                                    label=f"nginx proxy_cache {encoding}", server=cache.process.pid)
                bare = ctx.read_run(minimal.port, representation, settings.sample_streams, encoding=accept_encoding,
                                    label=f"nginx minimal proxy_cache {encoding}", server=minimal.process.pid)
                reference = ctx.read_run(nginx.port, representation, settings.sample_streams, prefix=nginx_prefix,
                                         encoding=accept_encoding, label=f"nginx static {encoding}",
                                         server=nginx.process.pid)
                result["rows"].append({"representation": representation, "encoding": encoding, "cache": mine,
                                       "minimal": bare, "nginx": reference,
                                       "cache_over_nginx": ratio(mine["rps"], reference["rps"]),
                                       "minimal_over_nginx": ratio(bare["rps"], reference["rps"]),
                                       "cache_over_minimal": ratio(mine["rps"], bare["rps"])})
        result["hit_after"] = hit_check(ctx, cache) and hit_check(ctx, minimal)
    finally:
        for each in (cache, minimal):
            if each:
                each.stop()


def met(row):
    share = row.get("cache_over_nginx")
    return share is not None and share >= targets.NGINX_CACHED_SHARE


def summary(result):
    """The README's row: the four cached reads against nginx static."""
    rows = result.get("rows", [])
    if not rows:
        return []
    figures = ", ".join(f"{row['representation']} {row['encoding']} {fmt(row['cache']['rps'])}" for row in rows)
    references = ", ".join(f"{fmt(row['nginx']['rps'])} ({times(row.get('cache_over_nginx'), 'nginx')})"
                           for row in rows)
    return [["cached 20-entry pages through nginx `proxy_cache`, shipped configuration", f"{figures} req/s",
             f"nginx static, same bytes: {references}",
             f"{targets.target('cached_nginx')}: {verdict(all(met(row) for row in rows))}"]]


def render(result, settings):
    rows = []
    for row in result["rows"]:
        mine, reference, share = row["cache"], row["nginx"], row.get("cache_over_nginx")
        bare = row.get("minimal")
        rows.append([row["representation"], row["encoding"], fmt(mine["rps"]), ms(mine, "p99_us"), errors(mine),
                     fmt(reference["rps"]), ms(reference, "p99_us"), times(share, "nginx"),
                     fmt(bare["rps"]) if bare else "—", times(row.get("minimal_over_nginx"), "nginx") if bare else "—",
                     times(row.get("cache_over_minimal"), "minimal") if bare else "—", others(mine, reference),
                     f"{targets.target('cached_nginx')}: {verdict(met(row))}"])
    out = [table(["representation", "encoding", "proxy_cache req/s", "p99 ms", "errors", "nginx static req/s",
                  "nginx static p99 ms", "proxy_cache ÷ static", "minimal proxy_cache req/s", "minimal ÷ static",
                  "shipped ÷ minimal", "others on server CPU (proxy_cache / static)", "target"], rows), ""]
    floors = [row for row in result["rows"] if row.get("minimal")]
    if floors:
        lowest = min(row["minimal_over_nginx"] for row in floors)
        highest = max(row["minimal_over_nginx"] for row in floors)
        shipped = ", ".join(f"{row['representation']} {row['encoding']} {times(row['cache_over_minimal'], 'minimal')}"
                            for row in floors)
        if highest < targets.NGINX_CACHED_SHARE:
            verdict_text = (f"so {targets.target('cached_nginx')} is beyond what nginx's cache does on this machine, "
                            "whatever a configuration says")
        else:
            verdict_text = (f"which reached {targets.target('cached_nginx')} in this run in "
                            f"{sum(row['minimal_over_nginx'] >= targets.NGINX_CACHED_SHARE for row in floors)} "
                            f"of {len(floors)} rows")
        out.append(f"**The floor under it.** nginx's proxy_cache with nothing else configured (the same nginx, one "
                   "location: `proxy_pass`, `proxy_cache` and a key of the URL and the encoding; no maps, no relay, "
                   f"no location for live reads) served the same hits at {times(lowest, 'nginx')} to "
                   f"{times(highest, 'nginx')} static in the same run. A hit costs nginx more than a file (the lookup "
                   "in shared memory, a read of the cached file's header, one more write per answer: "
                   f"bench/HISTORY.md), {verdict_text}. What the shipped file adds to that (its maps, its key, the "
                   f"live reads' test): {shipped}.\n")
    if "hit_after" in result:
        out.append(f"A read after the measurement was a cache hit: {'yes' if result['hit_after'] else '**no**'}.\n")
    out.append(f"Method: the uncached section's pages through nginx running `deploy/nginx/eventfeed.conf` (all "
               f"{result['sample_pages']} sampled pages cached before measuring, once per encoding), inside the same "
               "main context as the static reference (one worker, sendfile, the same keep-alive and open file cache, "
               "no access log), vs that nginx serving the same bytes from files. *gzip*: clients send "
               "`Accept-Encoding: gzip`; the cache serves the gzip copy eventfeed compressed, the static nginx the "
               "same gzip bytes. *identity*: no compression. Hits never reach eventfeed (nor the configuration's "
               "relay, which only fetches): what separates the two is nginx's cache lookup (the key's hash, the "
               "shared-memory index, the cached file's header and its Vary check) against a plain file.")
    return out
