"""The clients of the stories section (docs/recipes.md), written as the
teams in those stories wrote theirs, over plain HTTP/1.1 keep-alive
connections: read-side instances sharing a persistent subscription (run as
processes of their own), a projection replaying a category page by page
with a checkpoint per page, a client that only walks a category counting
its entries (the ceiling of any such replay), a cache following a category
with long-polls, writers that retry an unanswered append with the same ids,
and a supervisor that restarts a killed server as the shipped systemd unit
does."""

import http.client
import json
import os
import re
import socket
import threading
import time
import uuid

from .common import ADMIN, ATOM_JSON, ROOT
from .servers import PROCESSES

COMPETING_JSON = "application/vnd.eventstore.competingatom+json"
EVENTS_JSON = "application/vnd.eventstore.events+json"
UNIT = ROOT / "deploy" / "systemd" / "eventfeed.service"


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened after a failure."""

    def __init__(self, port, timeout=60):
        self.port, self.timeout, self.connection = port, timeout, None
        self.requests = 0

    def request(self, method, path, body=None, headers=None):
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.connection.request(method, path, body=body, headers=headers or {})
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        self.requests += 1
        return response.status, response.getheader("Location"), data

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class LeanConnection:
    """One keep-alive HTTP/1.1 connection for GETs that does as little as
    a client can: the request written in one send, of the answer's head
    only the status and Content-Length read, the body read in one piece
    through a 1 MiB buffer. (http.client, which parses every header into a
    message and reads through 8 KiB, walked nginx's copy of the `$ce-`
    pages at 0.65-0.9 × this rate on the 2-core machine, busy 0.35-0.4 of
    the walk against this one's 0.2-0.25.)"""

    def __init__(self, port, headers, timeout=60):
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.socket.makefile("rb", buffering=1 << 20)
        self.head = "".join(f"{name}: {value}\r\n" for name, value in {"Host": "127.0.0.1", **headers}.items())

    def get(self, path):
        """(status, body) of `GET path`."""
        self.socket.sendall(f"GET {path} HTTP/1.1\r\n{self.head}\r\n".encode())
        status, length = int(self.line(path).split()[1]), None
        while (line := self.line(path)) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"GET {path}: an answer without Content-Length")
        body = self.reader.read(length)
        if len(body) != length:
            raise ConnectionError(f"GET {path}: the connection closed within the body")
        return status, body

    def line(self, path):
        line = self.reader.readline()
        if not line:
            raise ConnectionError(f"GET {path}: the connection closed before the answer")
        return line

    def close(self):
        self.reader.close()
        self.socket.close()


def path_of(uri):
    """`http://host:port/path?q` → `/path?q`."""
    return "/" + uri.split("://", 1)[1].split("/", 1)[1]


def with_bodies(uri):
    """A page's link → its path with `embed=body`."""
    return path_of(uri) + "?embed=body"


def link(feed, relation):
    return next((entry["uri"] for entry in feed["links"] if entry["relation"] == relation), None)


# -- story 1: read-side instances on one persistent subscription --------------


def care_instance(port, group, name, take, total, handled_counter, start_barrier, results):
    """A read-side instance in a process of its own: take `take` messages
    with bodies (long-polling 1 s when idle), count the pages, acknowledge
    the batch through `ackAll`; until the instances together handled
    `total`. Puts (event numbers handled, requests, time of its last ack)
    on `results`."""
    # Every core: the instances and the server share the machine.
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    connection = Connection(port)
    headers = {"Accept": COMPETING_JSON, "ES-Consumer": name, "ES-LongPoll": "1"}
    numbers, counts, last_ack = [], {}, 0.0
    start_barrier.wait()
    while handled_counter.value < total:
        status, _, data = connection.request("GET", f"/subscriptions/Cares/{group}/{take}?embed=body", None, headers)
        if status != 200:
            raise RuntimeError(f"{name}: taking messages answered {status}: {data[:200]!r}")
        feed = json.loads(data)
        if not feed["entries"]:
            continue
        for entry in feed["entries"]:
            page = json.loads(entry["data"])["page"]
            counts[page] = counts.get(page, 0) + (1 if entry["eventType"] == "Cared" else -1)
            numbers.append(entry["eventNumber"])
        status, _, data = connection.request("POST", path_of(link(feed, "ackAll")), None, {"ES-Consumer": name})
        if status != 202:
            raise RuntimeError(f"{name}: ackAll answered {status}: {data[:200]!r}")
        last_ack = time.monotonic()
        with handled_counter.get_lock():
            handled_counter.value += len(feed["entries"])
    results.put((numbers, connection.requests, last_ack))


# -- story 2: a projection replaying a category -------------------------------


def replay(port, start_path, page_path=with_bodies, checkpoint_port=None, checkpoints=None, authorization=True):
    """Walks a category from `start_path` (pages with bodies, following
    `previous` links) to its head, applying every event to a dict as a
    projection does and, when `checkpoints` names a stream, writing one
    checkpoint event per page there (on `checkpoint_port`). Returns the
    events applied and the pages read."""
    connection = Connection(port)
    writer = Connection(checkpoint_port or port)
    headers = {"Accept": ATOM_JSON, **(ADMIN if authorization else {})}
    orders, events, pages, path = {}, 0, 0, start_path
    while path:
        status, _, data = connection.request("GET", path, None, headers)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        page = json.loads(data)
        pages += 1
        for entry in reversed(page["entries"]):
            row = orders.setdefault(entry["streamId"], {"version": -1, "items": 0, "total": 0})
            if entry["eventNumber"] <= row["version"]:
                continue
            if entry["eventType"] == "ItemAdded":
                row["items"] += 1
                row["total"] += json.loads(entry["data"])["price"]
            row["version"] = entry["eventNumber"]
            events += 1
        if checkpoints and page["entries"]:
            body = json.dumps({"position": page["entries"][0]["positionEventNumber"]})
            status, _, _ = writer.request("POST", f"/streams/{checkpoints}", body, {
                "Content-Type": "application/json", "ES-EventType": "checkpoint", "ES-EventId": str(uuid.uuid4())})
            if status != 201:
                raise RuntimeError(f"a checkpoint append answered {status}")
        onwards = link(page, "previous")
        path = None if page["headOfStream"] or not onwards else page_path(onwards)
    return events, pages


# The feed's own `previous` link (the entries' links are `edit` and
# `alternate` only), whether the page is the head, and one key every entry
# has once: events' data is a JSON string, its quotes escaped, so the key
# cannot match inside it.
PREVIOUS = re.compile(rb'"uri":\s*"([^"]+)",\s*"relation":\s*"previous"')
HEAD_OF_STREAM = re.compile(rb'"headOfStream":\s*(true|false)')
ENTRY_KEY = b'"positionEventNumber":'


def walk(port, start_path, page_path=with_bodies, authorization=True):
    """Walks a category from `start_path` to its head as a client that only
    counts: one keep-alive connection, each page read whole, its entries
    counted and its `previous` link found by byte searches, nothing
    decoded (LeanConnection). Returns the entries seen and the pages
    read."""
    connection = LeanConnection(port, {"Accept": ATOM_JSON, **(ADMIN if authorization else {})})
    entries, pages, path = 0, 0, start_path
    try:
        while path:
            status, data = connection.get(path)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")
            pages += 1
            entries += data.count(ENTRY_KEY)
            onwards = PREVIOUS.search(data)
            at_head = HEAD_OF_STREAM.search(data).group(1) == b"true"
            path = None if at_head or not onwards else page_path(onwards.group(1).decode())
    finally:
        connection.close()
    return entries, pages


# -- story 3: a cache following a category ------------------------------------


class CacheFollower(threading.Thread):
    """Reads `$ce-Product` from the start, then long-polls the head; records
    when each event id was reflected."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.reflected, self.ready, self.stopping = port, {}, threading.Event(), False
        self.error = None

    def run(self):
        try:
            connection = Connection(self.port)
            path, products = "/streams/$ce-Product/0/forward/100?embed=body", {}
            while not self.stopping:
                status, _, data = connection.request("GET", path, None,
                                                     {"Accept": ATOM_JSON, "ES-LongPoll": "5", **ADMIN})
                if status != 200:
                    raise RuntimeError(f"GET {path} answered {status}")
                page = json.loads(data)
                now = time.monotonic()
                for entry in reversed(page["entries"]):
                    products.setdefault(entry["streamId"], {}).update(json.loads(entry["data"]))
                    self.reflected[entry["eventId"]] = now
                if page["headOfStream"]:
                    self.ready.set()
                onwards = link(page, "previous")
                if onwards:
                    path = path_of(onwards) + "?embed=body"
        except Exception as error:  # reported by the section
            self.error = error
            self.ready.set()


# -- story 4: retrying writers and a supervisor -------------------------------


def restart_delay():
    """The shipped unit's RestartSec, in seconds."""
    value = re.search(r"^RestartSec=(\S+)$", UNIT.read_text(), re.M).group(1)
    return float(value[:-2]) / 1000 if value.endswith("ms") else float(value.rstrip("s"))


class RetryingWriter(threading.Thread):
    """Appends 5-event batches to its stream; an append that is not
    answered (refused, cut, 503) is sent again, same ids, until it is
    acknowledged. Records every acknowledgement: its time, Location, ids."""

    def __init__(self, port, index, stop):
        super().__init__(daemon=True)
        self.port, self.stream, self.stop, self.acked = port, f"Account-{index}", stop, []

    def run(self):
        connection = Connection(self.port, timeout=10)
        while not self.stop.is_set():
            ids = [str(uuid.uuid4()) for _ in range(5)]
            body = json.dumps([{"eventId": event_id, "eventType": "Deposited", "data": {"amount": 10}}
                               for event_id in ids])
            while True:
                try:
                    status, location, _ = connection.request("POST", f"/streams/{self.stream}", body,
                                                             {"Content-Type": EVENTS_JSON})
                    if status == 201:
                        self.acked.append((time.monotonic(), int(location.rsplit("/", 1)[1]), ids))
                        break
                except (OSError, http.client.HTTPException):
                    pass
                time.sleep(0.01)


class Supervisor(threading.Thread):
    """Starts the server with `start()`, waits for it to exit, waits the
    unit's RestartSec, starts it again; records when each start began."""

    def __init__(self, start):
        super().__init__(daemon=True)
        self.start_server, self.delay = start, restart_delay()
        self.server, self.starts, self.stopping = None, [], threading.Event()
        self.up = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.starts.append(time.monotonic())
            self.server = self.start_server()
            self.up.set()
            self.server.process.wait()
            PROCESSES.stop(self.server.process)  # its log closed, its group gone
            if self.stopping.is_set():
                return
            time.sleep(self.delay)
