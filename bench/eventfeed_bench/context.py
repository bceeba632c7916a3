"""What the sections of one run share: settings, pinning, the work
directory, wrk, the disk probes (measured once per run), the read store (a
100,000-event store served by one eventfeed), nginx serving copies of its
pages, and the figures already measured, which later sections reuse instead
of measuring again (AtomBus compares with the appends and reads)."""

import gzip
import os
import random
import statistics
import time

from . import probes
from .common import (ATOM_JSON, ATOM_XML, EVENTS_PER_READ_STREAM, PAGE_SIZE, PAGES_PER_READ_STREAM,
                     READ_STREAM_PREFIX, fill_streams, http_request, log)
from .fmt import fmt_share
from .load import Wrk
from .servers import Eventfeed, Nginx


class Context:
    def __init__(self, settings, pinning, workdir, sections):
        self.settings = settings
        self.pinning = pinning
        self.workdir = workdir
        self.sections = sections
        self.wrk = Wrk(workdir, pinning, settings)
        # Figures measured so far, keyed as the sections key them.
        self.cache = {}
        self.read_server = None
        self.read_store_restart = None
        self.nginx = None
        self.page_sizes = None

    def fsync_probe(self):
        if "fsync" not in self.cache:
            self.cache["fsync"] = probes.fsync_probe(self.workdir, self.settings)
        return self.cache["fsync"]

    def page_probe(self):
        if "pages" not in self.cache:
            self.cache["pages"] = probes.page_probe(self.workdir, self.settings)
        return self.cache["pages"]

    # -- the read store ------------------------------------------------------

    def ensure_read_server(self):
        """A store of read_streams x 100 events, filled with --durability none
        (quick), then served by a server restarted in the default mode."""
        if self.read_server:
            return self.read_server
        data_dir = self.workdir / "reads"
        streams = self.settings.read_streams
        log(f"filling the read store: {streams} streams x {EVENTS_PER_READ_STREAM} events")
        filler = Eventfeed(self.workdir, self.pinning, data_dir, "none")
        started = time.monotonic()
        try:
            fill_streams(filler.port, READ_STREAM_PREFIX, streams, EVENTS_PER_READ_STREAM, lambda n: "OrderPlaced")
        finally:
            filler.stop()
        self.cache["fill_seconds"] = time.monotonic() - started
        self.read_server = Eventfeed(self.workdir, self.pinning, data_dir, "fsync")
        self.read_store_restart = {"events": streams * EVENTS_PER_READ_STREAM,
                                   "seconds": self.read_server.startup_seconds}
        log(f"read store ready ({streams * EVENTS_PER_READ_STREAM} events); restart took "
            f"{self.read_server.startup_seconds:.2f} s")
        return self.read_server

    def read_runs_without_page_cache(self, representations, label="eventfeed without the page cache", run=None):
        """The read store's pages, one run per representation, served by a
        server started with `--page-cache-mb 0` (the workload without the
        rendered-page cache); the default server serves the store again
        afterwards (sled opens a store in one process at a time). `run`
        (port, representation, label, pid) replaces the stream-page run."""
        server = self.ensure_read_server()
        server.stop()
        without = Eventfeed(self.workdir, self.pinning, server.data_dir, "fsync", options=["--page-cache-mb", "0"])
        run = run or (lambda port, representation, label, pid: self.read_run(
            port, representation, self.settings.read_streams, label=label, server=pid))
        try:
            return {representation: run(without.port, representation, label, without.process.pid)
                    for representation in representations}
        finally:
            without.stop()
            self.read_server = Eventfeed(self.workdir, self.pinning, server.data_dir, "fsync")

    def page_path(self, representation, stream, page):
        query = "?embed=body" if representation == "json" else ""
        return f"/streams/{READ_STREAM_PREFIX}{stream}/{page * PAGE_SIZE}/forward/{PAGE_SIZE}{query}"

    def ensure_nginx(self):
        """nginx serving the exact bytes of every page of the read store,
        identity and gzip, per representation: the reference must be read
        over the same pages as eventfeed, whose working set (about 40 MiB of
        Atom pages, 100 MiB of JSON) is larger than this machine's 32 MiB
        L3 cache. A sample of 1,000 pages fits in it: nginx served such a
        sample at 11.3-13.4 µs of CPU per Atom page, the whole set at
        13.5-15.7 (by hand, 2026-12-07, four alternating rounds). Varnish
        and nginx's proxy_cache read the first `sample_streams` streams'
        pages."""
        if self.nginx:
            return self.nginx
        server = self.ensure_read_server()
        root = self.workdir / "nginx"
        www = root / "www"
        sizes = {"atom": [], "json": []}
        for representation, accept in (("atom", ATOM_XML), ("json", ATOM_JSON)):
            for stream in range(self.settings.read_streams):
                for page in range(PAGES_PER_READ_STREAM):
                    path = self.page_path(representation, stream, page)
                    status, headers, body = http_request(server.port, "GET", path, {"Accept": accept})
                    if status != 200:
                        raise RuntimeError(f"GET {path} answered {status}")
                    status, headers, zipped = http_request(server.port, "GET", path,
                                                           {"Accept": accept, "Accept-Encoding": "gzip"})
                    if headers.get("content-encoding", headers.get("Content-Encoding")) != "gzip":
                        zipped = gzip.compress(body)  # eventfeed without compression: gzip it here
                    file_path = path.split("?")[0]
                    for prefix, content in ((representation, body), (f"{representation}-gzip", zipped)):
                        target = www / prefix / file_path.lstrip("/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(content)
                    sizes[representation].append((len(body), len(zipped)))
        self.page_sizes = {
            rep: (statistics.mean(s[0] for s in values), statistics.mean(s[1] for s in values))
            for rep, values in sizes.items()
        }
        for directory in [root, *root.rglob("*")]:
            if directory.is_dir():
                directory.chmod(0o755)
        os.chmod(self.workdir, 0o755)
        self.nginx = Nginx(root, self.pinning)
        return self.nginx

    def read_run(self, port, representation, streams, prefix="-", encoding="-", label="", server=None,
                 authorization="-"):
        """Random full pages of the read store's first `streams` streams;
        `authorization`, when given, is sent with every request."""
        accept = ATOM_JSON if representation == "json" else ATOM_XML
        query = "?embed=body" if representation == "json" else "-"
        args = [prefix, READ_STREAM_PREFIX, streams, PAGES_PER_READ_STREAM, PAGE_SIZE, query, accept, encoding,
                authorization]
        self.wrk.run(port, "read_pages", args, self.settings.read_connections, duration=self.settings.warmup)
        figures = self.wrk.run(port, "read_pages", args, self.settings.read_connections, server=server)
        log(f"{label} {representation}: {figures['rps']:.0f} req/s, p99 {figures['p99_us'] / 1000:.2f} ms, "
            f"errors {figures['errors']}, others on the server CPU {fmt_share(figures.get('others_cpu_share'))}")
        return figures

    def list_run(self, port, paths, accept, label="", server=None, authorization="-"):
        """Like read_run, for GETs of the given paths picked at random."""
        paths_file = self.workdir / f"paths-{random.getrandbits(32):08x}.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        args = [paths_file, accept, authorization]
        self.wrk.run(port, "read_list", args, self.settings.read_connections, duration=self.settings.warmup)
        figures = self.wrk.run(port, "read_list", args, self.settings.read_connections, server=server)
        log(f"{label}: {figures['rps']:.0f} req/s, p99 {figures['p99_us'] / 1000:.2f} ms, "
            f"errors {figures['errors']}, others on the server CPU {fmt_share(figures.get('others_cpu_share'))}")
        return figures

    def close(self):
        if self.nginx:
            self.nginx.stop()
        if self.read_server:
            self.read_server.stop()
