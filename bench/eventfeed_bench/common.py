"""Paths, constants and the small helpers every other module uses: logging,
free ports, waiting for a condition, one-shot HTTP requests, server logs,
the release binary's path and the built-in admin's credentials."""

import base64
import datetime
import functools
import http.client
import json
import re
import subprocess
import socket
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
BENCH = PACKAGE.parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
VCL = ROOT / "deploy" / "varnish" / "eventfeed.vcl"
NGINX_CONF = ROOT / "deploy" / "nginx" / "eventfeed.conf"
ATOM_XML = "application/atom+xml"
ATOM_JSON = "application/vnd.eventstore.atom+json"
PAGE_SIZE = 20
EVENTS_PER_READ_STREAM = 100
PAGES_PER_READ_STREAM = EVENTS_PER_READ_STREAM // PAGE_SIZE
READ_STREAM_PREFIX = "bench-read-"
# ES-LongPoll of the wake-up rounds, and of the idle round: that one must
# outlast opening 10,000 connections, settling and reading the RSS, so that
# no waiter is answered (empty) before the append (the server's default cap
# is 300 s).
LONG_POLL_SECS = 30
IDLE_LONG_POLL_SECS = 240
# The server's options that turn every system projection off.
PROJECTIONS_OFF = ["--projection-by-category", "false", "--projection-by-event-type", "false",
                   "--projection-streams", "false"]
SCAVENGE_STREAM_PREFIX = "scavenge-"
# eventfeed logs its listening address at info; everything else at warn.
SERVER_LOG = "warn,eventfeed::server=info"


def basic_authorization(login, password):
    """The value of an `Authorization: Basic` header."""
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


# The built-in admin of a fresh store, with v5's default password: what
# only `$admins` (or `$ops`) may do needs it ($all, `$ce-`, `$et-`,
# `$streams`, metadata writes, scavenges, persistent subscription groups,
# users). Everything else the suite measures is read and appended
# anonymously, as before eventfeed had security.
ADMIN_AUTHORIZATION = basic_authorization("admin", "changeit")
ADMIN = {"Authorization": ADMIN_AUTHORIZATION}


@functools.cache
def eventfeed_binary():
    """The release binary where `cargo build --release` (run at the
    repository root, as `bench/run` builds) puts it: cargo's target
    directory, which CARGO_TARGET_DIR or a cargo config may move, else
    target/ at the root."""
    try:
        metadata = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=60)
        target_dir = Path(json.loads(metadata.stdout)["target_directory"]) if metadata.returncode == 0 else None
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        target_dir = None
    return (target_dir or ROOT / "target") / "release" / "eventfeed"


def eventfeed_postgres_binary():
    """The release binary with the PostgreSQL backend (cargo feature
    `postgres`, off in the default build): `bench/run postgres` builds it
    and keeps it beside the default one as `eventfeed-postgres`. Without
    it (`--no-build` before any such build), the default binary, which
    serves PostgreSQL only if it was built with the feature."""
    beside = eventfeed_binary().with_name("eventfeed-postgres")
    return beside if beside.exists() else eventfeed_binary()

# bench/longpoll.py, the long-poll client (a script too: its send-floor
# sender runs as a process of its own), lives beside the package.
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
import longpoll  # noqa: E402


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def logged_number(path, field):
    """The last `field=N` in a server's log (text format), or None."""
    found = re.findall(rf"\b{re.escape(field)}=(\d+)", Path(path).read_text(errors="replace"))
    return int(found[-1]) if found else None


def http_request(port, method, path, headers=None, body=None, timeout=60):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def format_position(position):
    """A position in $all as eventfeed writes it: 32 hex digits."""
    return f"{position:016X}{position:016X}"


def rfc3339_seconds(text):
    """`2026-01-02T03:04:05.123456Z` → seconds since the epoch."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def event_data(stream, number):
    """The payload of every event the suite writes to fill a store."""
    return {"orderId": f"order-{stream}-{number}", "amount": number + 0.5, "currency": "EUR",
            "lines": [{"sku": f"SKU-{number % 97}", "quantity": 1 + number % 3}], "note": "benchmark event"}


def fill_streams(port, prefix, streams, per_stream, event_type):
    """`streams` streams `{prefix}{i}` of `per_stream` events each, one
    append per stream from 8 threads; `event_type(n)` names event `n`."""
    def fill(stream_index):
        events = [{"eventId": str(uuid.uuid4()), "eventType": event_type(n),
                   "data": event_data(stream_index, n)} for n in range(per_stream)]
        status, _, body = http_request(port, "POST", f"/streams/{prefix}{stream_index}",
                                       {"Content-Type": "application/vnd.eventstore.events+json"},
                                       json.dumps(events).encode())
        if status != 201:
            raise RuntimeError(f"fill append answered {status}: {body[:200]!r}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fill, range(streams)))
