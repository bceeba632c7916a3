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

The clients are lean so that the server, not they, sets the pace: each is
a process of its own (no interpreter lock shared), on a keep-alive socket
that writes each request in one send and reads the answer by its
Content-Length (or its chunks), the appends' bodies built before the
clock starts; a consumer finds the event numbers and the `ackAll` link of
a batch by byte search, without decoding the JSON. With 2 or more cores
the server runs on the first half of them and the clients on the other
(taskset, as `bench/run` pins servers and load; --no-pin to share them).

Prints messages/s, the append rate, their ratio, the server's CPU time
per message and the share of their CPUs the server and the clients kept
busy while draining (the side near 100% is the bottleneck), and the date,
and checks that every event was acknowledged (duplicates, which
at-least-once delivery allows after a timeout, are reported). --json
writes the same figures to a file. Python standard library and the
suite's pinning (eventfeed_bench.load) only.
"""

import argparse
import base64
import datetime
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from eventfeed_bench.load import Pinning, cpu_set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_MESSAGES_PER_SECOND = 100_000  # the project target, as in eventfeed_bench/targets.py
COMPETING_JSON = "application/vnd.eventstore.competingatom+json"
EVENTS_JSON = "application/vnd.eventstore.events+json"
STREAM = "bench-orders"
GROUP = "bench"
# The built-in admin of a fresh store, with v5's default password.
ADMIN_AUTHORIZATION = "Basic " + base64.b64encode(b"admin:changeit").decode()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# What a consumer reads of a batch: every entry's event number, and the
# `ackAll` link (its URI comes before its relation in each link object).
EVENT_NUMBER = re.compile(rb'"eventNumber":\s*(\d+)')
ACK_ALL = re.compile(rb'"uri":\s*"[a-z]+://[^/"]*(/[^"]*)",\s*"relation":\s*"ackAll"')
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)


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
    parser.add_argument("--no-pin", action="store_true", help="let the server and the clients share every core")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    return parser.parse_args()


def build():
    print("building the release binary (cargo build --release --locked) ...", flush=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    # Where cargo put it: CARGO_TARGET_DIR or a cargo config may move it.
    metadata = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT,
                              capture_output=True, text=True, check=True)
    return os.path.join(json.loads(metadata.stdout)["target_directory"], "release", "eventfeed")


class Server:
    """The binary on 127.0.0.1:0 with its own data directory, on the
    server CPUs of `pinning`."""

    def __init__(self, binary, durability, pinning):
        self.dir = tempfile.mkdtemp(prefix="eventfeed-bench-subs-")
        # taskset execs the binary: the pid is the server's.
        self.process = subprocess.Popen(
            pinning.server([binary, "serve", "--data-dir", os.path.join(self.dir, "data"), "--bind", "127.0.0.1:0",
                            "--durability", durability, "--log", "info"]),
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

    def cpu_seconds(self):
        """The server's CPU time so far, user and system, all its threads."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

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
    """One keep-alive HTTP/1.1 connection that does as little as a client
    can: a request, given as bytes, written in one send; of the answer's
    head only the status and its framing looked at, the body taken by its
    Content-Length (or, should the server send one, chunk by chunk)."""

    def __init__(self, server):
        self.socket = socket.create_connection((server.host, server.port), timeout=60)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"{server.host}:{server.port}"
        self.buffer = b""

    def request(self, method, path, body=b"", headers=None):
        """The bytes of a request, to pass to `exchange` (once or often)."""
        headers = {"Host": self.host, **(headers or {})}
        if method != "GET":
            headers["Content-Length"] = len(body)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body

    def exchange(self, request):
        """(status, body) of one request made by `request`."""
        self.socket.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
        status = int(head[9:12])
        if length := CONTENT_LENGTH.search(head):
            return status, self._take(int(length.group(1)))
        if CHUNKED.search(head):
            return status, self._chunks()
        if status in (204, 304) or 100 <= status < 200:
            return status, b""
        raise RuntimeError(f"an answer framed neither by length nor by chunks: {head[:200]!r}")

    def _take(self, length):
        while len(self.buffer) < length:
            self._fill()
        taken, self.buffer = self.buffer[:length], self.buffer[length:]
        return taken

    def _chunks(self):
        """A chunked body (trailers, which eventfeed never sends, are not
        expected)."""
        chunks = []
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                self._fill()
            size = int(self.buffer[:end].split(b";")[0], 16)
            self._take(end + 2)
            chunks.append(self._take(size))
            self._take(2)
            if size == 0:
                return b"".join(chunks)

    def _fill(self):
        # 64 KiB at a time: asking for 1 MiB costs Python a 1 MiB buffer
        # per call, which took longer than the receive itself.
        data = self.socket.recv(1 << 16)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data


def run_processes(count, work):
    """Runs `work(index, ready)` in `count` processes of their own (forked:
    on the CPUs this process may use); each calls `ready()` when set up,
    and all start at once. Returns (the start, their results by index);
    re-raises the first failure."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(count + 1), context.Queue()

    def guarded(index):
        try:
            results.put((index, work(index, lambda: barrier.wait(timeout=120)), None))
        except BaseException as error:  # reported below, then the run fails
            barrier.abort()
            results.put((index, None, f"{type(error).__name__}: {error}"))

    processes = [context.Process(target=guarded, args=(index,), daemon=True) for index in range(count)]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass  # a process failed while setting up: its error is on the queue
    started = time.monotonic()
    outcomes = sorted(results.get(timeout=1800) for _ in processes)
    for process in processes:
        process.join()
    failures = [failure for _, _, failure in outcomes if failure]
    if failures:
        raise RuntimeError(failures[0])
    return started, [result for _, result, _ in outcomes]


def append_phase(server, events, clients, batch):
    """Appends `events` events, `batch` per request, from `clients` clients;
    returns events/s."""
    shares = [events // clients + (1 if index < events % clients else 0) for index in range(clients)]

    def append(index, ready):
        client = Client(server)
        requests = []
        for sent in range(0, shares[index], batch):
            body = json.dumps([
                {"eventId": str(uuid.uuid4()), "eventType": "OrderPlaced",
                 "data": {"client": index, "n": sent + i, "total": 99.5, "customer": "c-42"}}
                for i in range(min(batch, shares[index] - sent))
            ]).encode()
            requests.append(client.request("POST", f"/streams/{STREAM}", body, {"Content-Type": EVENTS_JSON}))
        ready()
        for request in requests:
            status, data = client.exchange(request)
            if status != 201:
                raise RuntimeError(f"append answered {status}: {data[:200]!r}")
        return time.monotonic()

    started, finished = run_processes(clients, append)
    return events / (max(finished) - started)


def create_group(server):
    client = Client(server)
    status, data = client.exchange(client.request(
        "PUT", f"/subscriptions/{STREAM}/{GROUP}", b"{}",
        {"Content-Type": "application/json", "Authorization": ADMIN_AUTHORIZATION}))
    if status != 201:
        raise RuntimeError(f"creating the group answered {status}: {data[:200]!r}")


def consume_phase(server, events, consumers, batch):
    """Drains the group. Returns the drain's figures: messages/s, seconds,
    the server's and the consumers' CPU seconds meanwhile, and the acked
    event numbers."""
    create_group(server)
    context = multiprocessing.get_context("fork")
    acked_count = context.Value("q", 0)
    # When the last needed ack was answered, and the server's CPU time then.
    end = context.Array("d", 2)

    def consume(index, ready):
        client, name = Client(server), f"consumer-{index}"
        take = client.request("GET", f"/subscriptions/{STREAM}/{GROUP}/{batch}?embed=body", b"",
                              {"Accept": COMPETING_JSON, "ES-Consumer": name, "ES-LongPoll": "1"})
        numbers = []
        ready()
        cpu_before = time.process_time()
        while acked_count.value < events:
            status, data = client.exchange(take)
            if status != 200:
                raise RuntimeError(f"taking messages answered {status}: {data[:200]!r}")
            taken = EVENT_NUMBER.findall(data)
            if not taken:
                continue
            ack_all = ACK_ALL.search(data)
            if not ack_all or ack_all.group(1).count(b",") + 1 != len(taken):
                raise RuntimeError(f"no ackAll link naming the {len(taken)} messages: {data[:2000]!r}")
            status, data = client.exchange(client.request("POST", ack_all.group(1).decode(), b"",
                                                          {"ES-Consumer": name}))
            if status != 202:
                raise RuntimeError(f"ackAll answered {status}: {data[:200]!r}")
            numbers += taken
            with acked_count.get_lock():
                acked_count.value += len(taken)
                if acked_count.value >= events and not end[0]:
                    end[0], end[1] = time.monotonic(), server.cpu_seconds()
        return time.process_time() - cpu_before, [int(number) for number in numbers]

    server_cpu_before = server.cpu_seconds()
    started, outcomes = run_processes(consumers, consume)
    seconds = end[0] - started
    acked = [number for _, numbers in outcomes for number in numbers]
    return {"messages_per_second": acked_count.value / seconds, "drain_seconds": seconds,
            "server_cpu_seconds": end[1] - server_cpu_before,
            "clients_cpu_seconds": sum(cpu for cpu, _ in outcomes)}, acked


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}"


def drain_figures(drain, events, pinning):
    """The drain's CPU accounting: the server's CPU time per message, and
    the share of the CPUs they may use that the server and the clients kept
    busy (the side near 1 is the bottleneck)."""
    cores = os.cpu_count() or 1
    server_cpus = len(cpu_set(pinning.server_cpus)) if pinning.enabled else cores
    client_cpus = len(cpu_set(pinning.load_cpus)) if pinning.enabled else cores
    return {"server_cpu_us_per_message": drain["server_cpu_seconds"] / events * 1e6,
            "server_cpu_share": drain["server_cpu_seconds"] / (drain["drain_seconds"] * server_cpus),
            "clients_cpu_share": drain["clients_cpu_seconds"] / (drain["drain_seconds"] * client_cpus)}


def report(args, figures):
    """Prints the figures as a table, with the verdicts."""
    consumers, batch = args.consumers, args.batch
    print()
    print(f"Persistent subscriptions, {figures['date']}")
    print(f"machine: {machine()}; server and clients on the same machine, loopback; {figures['pinning']}")
    print(f"{args.events} events, durability {args.durability}, {consumers} client processes, batches of {batch}")
    print()
    print("| measurement | figure |")
    print("|---|---|")
    print(f"| appends, {consumers} clients x {batch}-event batches (reference) | "
          f"{figures['append_events_per_second']:,.0f} events/s |")
    print(f"| consumed, {consumers} consumers x {batch}-message batches, ackAll | "
          f"{figures['messages_per_second']:,.0f} messages/s |")
    print(f"| consumed / appended | {figures['consumed_over_appended']:.2f} |")
    print(f"| server CPU per message, drain | {figures['server_cpu_us_per_message']:.1f} us |")
    print(f"| server's CPUs busy, drain | {figures['server_cpu_share']:.0%} |")
    print(f"| clients' CPUs busy, drain | {figures['clients_cpu_share']:.0%} |")
    print()
    verdict = "meets" if figures["messages_per_second"] >= TARGET_MESSAGES_PER_SECOND else "MISSES"
    print(f"target >= {TARGET_MESSAGES_PER_SECOND:,} messages/s: {verdict}")
    print(f"every event acknowledged: {figures['all_acknowledged']}; duplicates: {figures['duplicates']}")


def main():
    args = parse_args()
    binary = args.binary or build()
    pinning = Pinning(not args.no_pin)
    pinning.pin_this_process()
    server = Server(binary, args.durability, pinning)
    try:
        append_rate = append_phase(server, args.events, args.consumers, args.batch)
        drain, acked = consume_phase(server, args.events, args.consumers, args.batch)
    finally:
        server.stop()

    distinct = set(acked)
    missing = args.events - len(distinct)
    figures = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "pinning": pinning.describe(), "events": args.events,
        "append_events_per_second": append_rate, **drain,
        "consumed_over_appended": drain["messages_per_second"] / append_rate,
        **drain_figures(drain, args.events, pinning),
        "all_acknowledged": "yes" if missing == 0 else f"NO, {missing} missing",
        "duplicates": len(acked) - len(distinct),
    }
    report(args, figures)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
