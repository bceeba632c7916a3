#!/usr/bin/env python3
"""Persistent subscriptions: how fast competing consumers drain a group.

    bench/subscriptions.py                  # 100,000 events, default durability
    bench/subscriptions.py --events 20000   # a shorter run
    bench/subscriptions.py --help

Builds the release binary (unless --binary is given), starts it on a
loopback ephemeral port with a temporary data directory, then:

  1. appends N events with 4 clients, 20 events per request (the reference:
     the append rate of the same server, clients and machine, same minute);
  2. creates a group with default settings on that stream (as the built-in
     admin: managing groups is for `$admins` and `$ops`) and lets 4
     consumers (ES-Consumer: consumer-0..3) take 20-message batches with
     `?embed=body` and acknowledge each batch through its `ackAll` link,
     until every event is acknowledged. Appending, taking messages and
     acknowledging them need only the stream's read and write rights,
     which anonymous clients have on a user stream: they send no
     credentials.

Prints messages/s, the append rate, their ratio and the date, and checks
that every event was acknowledged (duplicates, which at-least-once delivery
allows after a timeout, are reported). Python standard library only; the
clients and the server share the machine.
"""

import argparse
import base64
import datetime
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_MESSAGES_PER_SECOND = 100_000  # the project target, as in eventfeed_bench/targets.py
COMPETING_JSON = "application/vnd.eventstore.competingatom+json"
EVENTS_JSON = "application/vnd.eventstore.events+json"
STREAM = "bench-orders"
GROUP = "bench"
# The built-in admin of a fresh store, with v5's default password.
ADMIN_AUTHORIZATION = "Basic " + base64.b64encode(b"admin:changeit").decode()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events to append and consume")
    parser.add_argument("--consumers", type=int, default=4, help="consumers (and appending clients)")
    parser.add_argument("--batch", type=int, default=20, help="messages per GET, events per append")
    parser.add_argument(
        "--durability", default="fsync", choices=["fsync", "flush", "none"], help="the server's --durability"
    )
    parser.add_argument("--binary", help="a built eventfeed binary (default: build the release binary, in cargo's "
                        "target directory)")
    return parser.parse_args()


def build():
    print("building the release binary (cargo build --release --locked) ...", flush=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    # Where cargo put it: CARGO_TARGET_DIR or a cargo config may move it.
    metadata = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT,
                              capture_output=True, text=True, check=True)
    return os.path.join(json.loads(metadata.stdout)["target_directory"], "release", "eventfeed")


class Server:
    """The binary on 127.0.0.1:0 with its own data directory."""

    def __init__(self, binary, durability):
        self.dir = tempfile.mkdtemp(prefix="eventfeed-bench-subs-")
        self.process = subprocess.Popen(
            [binary, "serve", "--data-dir", os.path.join(self.dir, "data"), "--bind", "127.0.0.1:0",
             "--durability", durability, "--log", "info"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.host, self.port = self._address()
        # Keep draining the log so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()

    def _address(self):
        for line in self.process.stderr:
            if "listening on http://" in line:
                address = line.split("listening on http://", 1)[1].split()[0]
                host, port = address.rsplit(":", 1)
                return host, int(port)
        raise RuntimeError("the server exited before listening")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, server):
        self.connection = http.client.HTTPConnection(server.host, server.port, timeout=60)

    def request(self, method, path, body=None, headers=None):
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        data = response.read()
        return response.status, data


def run_threads(count, work):
    """Runs `work(index)` on `count` threads; re-raises the first failure."""
    failures = []

    def guarded(index):
        try:
            work(index)
        except BaseException as error:  # reported below, then the run fails
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def append_phase(server, events, clients, batch):
    """Appends `events` events, `batch` per request, from `clients` clients."""
    shares = [events // clients + (1 if index < events % clients else 0) for index in range(clients)]

    def append(index):
        client = Client(server)
        sent = 0
        while sent < shares[index]:
            size = min(batch, shares[index] - sent)
            body = json.dumps([
                {"eventId": str(uuid.uuid4()), "eventType": "OrderPlaced",
                 "data": {"client": index, "n": sent + i, "total": 99.5, "customer": "c-42"}}
                for i in range(size)
            ])
            status, data = client.request("POST", f"/streams/{STREAM}", body, {"Content-Type": EVENTS_JSON})
            if status != 201:
                raise RuntimeError(f"append answered {status}: {data[:200]!r}")
            sent += size

    started = time.perf_counter()
    run_threads(clients, append)
    return events / (time.perf_counter() - started)


def consume_phase(server, events, consumers, batch):
    """Drains the group; returns (messages/s, acked event numbers)."""
    client = Client(server)
    status, data = client.request("PUT", f"/subscriptions/{STREAM}/{GROUP}", "{}",
                                  {"Content-Type": "application/json", "Authorization": ADMIN_AUTHORIZATION})
    if status != 201:
        raise RuntimeError(f"creating the group answered {status}: {data[:200]!r}")

    lock = threading.Lock()
    acked = []
    finished_at = [0.0]

    def consume(index):
        client = Client(server)
        headers = {"Accept": COMPETING_JSON, "ES-Consumer": f"consumer-{index}", "ES-LongPoll": "1"}
        while True:
            with lock:
                if len(acked) >= events:
                    return
            status, data = client.request("GET", f"/subscriptions/{STREAM}/{GROUP}/{batch}?embed=body", None, headers)
            if status != 200:
                raise RuntimeError(f"taking messages answered {status}: {data[:200]!r}")
            feed = json.loads(data)
            entries = feed["entries"]
            if not entries:
                continue
            ack_all = next(link["uri"] for link in feed["links"] if link["relation"] == "ackAll")
            path = ack_all.split(f"{server.port}", 1)[1]
            status, data = client.request("POST", path, None, {"ES-Consumer": f"consumer-{index}"})
            if status != 202:
                raise RuntimeError(f"ackAll answered {status}: {data[:200]!r}")
            with lock:
                acked.extend(entry["eventNumber"] for entry in entries)
                finished_at[0] = time.perf_counter()

    started = time.perf_counter()
    run_threads(consumers, consume)
    return len(acked) / (finished_at[0] - started), acked


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}"


def main():
    args = parse_args()
    binary = args.binary or build()
    server = Server(binary, args.durability)
    try:
        append_rate = append_phase(server, args.events, args.consumers, args.batch)
        message_rate, acked = consume_phase(server, args.events, args.consumers, args.batch)
    finally:
        server.stop()

    distinct = set(acked)
    missing = args.events - len(distinct)
    duplicates = len(acked) - len(distinct)
    ratio = message_rate / append_rate
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(f"Persistent subscriptions, {date}")
    print(f"machine: {machine()}; server and clients on the same machine, loopback")
    print(f"{args.events} events, durability {args.durability}, {args.consumers} clients, batches of {args.batch}")
    print()
    print("| measurement | rate |")
    print("|---|---|")
    print(f"| appends, {args.consumers} clients x {args.batch}-event batches (reference) | {append_rate:,.0f} events/s |")
    print(f"| consumed, {args.consumers} consumers x {args.batch}-message batches, ackAll | {message_rate:,.0f} messages/s |")
    print(f"| consumed / appended | {ratio:.2f} |")
    print()
    verdict = "meets" if message_rate >= TARGET_MESSAGES_PER_SECOND else "MISSES"
    print(f"target >= {TARGET_MESSAGES_PER_SECOND:,} messages/s: {verdict}")
    print(f"every event acknowledged: {'yes' if missing == 0 else f'NO, {missing} missing'}; duplicates: {duplicates}")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
