"""Long-poll wake-up latency and idle-waiter memory, measured from outside.

N clients long-poll (`ES-LongPoll`) the forward page just past the end of
one stream over plain sockets. Once the server reports all N waiting (GET
/info), one event is appended, and each waiter's wake-up latency is the time
from the arrival of the append's `201` to the arrival of that waiter's
response.

Both arrival times are the kernel's receive timestamps (SO_TIMESTAMPNS on
each TCP socket), not the time this Python process gets around to reading a
socket: with a thousand sockets becoming readable at once, the client's own
speed would otherwise be most of what is measured. Where the kernel gives no
timestamp, the time of the read is used and the result says so.

The N connections are opened in parallel (non-blocking connects, a bounded
number in flight), each sending its request as soon as it is connected: one
blocking connect after the other, 10,000 of them took about a minute on a
shared VM, longer than the first ones' long-polls lasted.

`send_floor` is the reference: the same response bytes written by a bare
loop, from the server's CPUs, to as many already-connected sockets. It is
what the kernel alone needs to deliver that many answers over loopback,
the floor under any server's wake-up on this machine.
"""

import errno
import json
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import time

# SO_TIMESTAMPNS (and its control message SCM_TIMESTAMPNS) on Linux; Python
# does not name it. A `struct timespec` of two 64-bit integers.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC_SIZE = 16


def raise_open_file_limit():
    """The soft limit to the hard limit: 10,000 waiters need 10,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def http_get_json(host, port, path, timeout=10.0):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        body = dechunk(body)
    return json.loads(body)


def dechunk(body):
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def wait_for_waiters(host, port, count, timeout, sockets=None):
    """Until the server reports `count` open waiters, or, given the clients'
    `sockets`, until every request either waits or was answered already
    (a long-poll answered before any append is a server fault the caller
    reports). Returns how many were answered already."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = http_get_json(host, port, "/info")["waiters"]
        if waiting >= count:
            return 0
        answered = sum(1 for sock in sockets if has_data(sock)) if sockets else 0
        if answered and waiting + answered >= count:
            return answered
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {waiting} of {count} long-polls are waiting after {timeout} s")
        time.sleep(0.05)


def has_data(sock):
    """Whether the server answered (or closed) on `sock`, without waiting.
    The socket must be non-blocking: on a socket with a timeout, Python
    waits for readability before any recv, MSG_DONTWAIT or not, and a
    silent waiter would then block this for its whole timeout."""
    if sock.gettimeout() != 0.0:
        sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def kernel_timestamp(ancillary):
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC_SIZE:
            seconds, nanoseconds = struct.unpack("qq", data[:TIMESPEC_SIZE])
            return seconds + nanoseconds / 1e9
    return None


class Response:
    """Accumulates one HTTP/1.1 response read off a non-blocking socket."""

    def __init__(self):
        self.data = b""
        self.first_byte_at = None
        self.kernel_time = True

    def feed(self, sock):
        data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(TIMESPEC_SIZE))
        if self.first_byte_at is None and data:
            stamp = kernel_timestamp(ancillary)
            if stamp is None:
                stamp, self.kernel_time = time.time(), False
            self.first_byte_at = stamp
        self.data += data
        return bool(data)

    def complete(self):
        head, separator, body = self.data.partition(b"\r\n\r\n")
        if not separator:
            return False
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            return body.endswith(b"0\r\n\r\n")
        for line in lower.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                return len(body) >= int(line.split(b":", 1)[1])
        return True

    def status(self):
        try:
            return int(self.data.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return 0

    def body(self):
        head, _, body = self.data.partition(b"\r\n\r\n")
        return dechunk(body) if b"transfer-encoding: chunked" in head.lower() else body


def open_socket(host, port):
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return sock


def open_requests(host, port, request, count, *, in_flight=100, timeout=120.0):
    """Opens `count` connections and sends `request` on each as soon as it
    is connected; returns the (non-blocking) sockets.

    Connections are opened in parallel, non-blocking, at most `in_flight`
    still connecting or sending at once (below the listen backlog of 128
    that eventfeed's listener has; the kernel still drops some handshakes
    when the server accepts more slowly than they complete, and TCP
    retransmits them a second later). Opened one after the other with
    blocking connects, 10,000 of them took about a minute on a shared VM,
    longer than the first ones' long-polls lasted. A connection that fails
    is opened again, a bounded number of times."""
    selector = selectors.DefaultSelector()
    opened = []
    connecting = 0
    started = 0
    failures = 0
    last_error = None
    deadline = time.monotonic() + timeout
    try:
        while len(opened) < count:
            while connecting < in_flight and started < count:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                error = sock.connect_ex((host, port))
                if error not in (0, errno.EINPROGRESS):
                    sock.close()
                    failures += 1
                    last_error = errno.errorcode.get(error, str(error))
                    if failures > max(10, count // 100):
                        raise RuntimeError(f"could not open {count} connections: {failures} failed ({last_error})")
                    break  # try again after the next select
                selector.register(sock, selectors.EVENT_WRITE, request)
                connecting += 1
                started += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(opened)} of {count} connections opened after {timeout} s")
            for key, _ in selector.select(timeout=0.5):
                sock, unsent = key.fileobj, key.data
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if not error:
                    try:
                        unsent = unsent[sock.send(unsent):]
                    except BlockingIOError:
                        continue
                    except OSError as failure:
                        error = failure.errno or errno.EIO
                if error:
                    selector.unregister(sock)
                    sock.close()
                    connecting -= 1
                    started -= 1  # to be opened again
                    failures += 1
                    last_error = errno.errorcode.get(error, str(error))
                    if failures > max(10, count // 100):
                        raise RuntimeError(f"could not open {count} connections: {failures} failed ({last_error})")
                elif unsent:
                    selector.modify(sock, selectors.EVENT_WRITE, unsent)
                else:
                    selector.unregister(sock)
                    connecting -= 1
                    opened.append(sock)
    except BaseException:
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        for sock in opened:
            sock.close()
        raise
    finally:
        selector.close()
    return opened, failures


def append_one(host, port, stream, event_id, timeout=30.0):
    """Appends one event; returns when the request was sent and the kernel
    arrival time of the 201 (both on the realtime clock)."""
    body = json.dumps([{"eventId": event_id, "eventType": "Wake", "data": {"wake": True}}]).encode()
    request = (
        f"POST /streams/{stream} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/vnd.eventstore.events+json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    sock = open_socket(host, port)
    sock.settimeout(timeout)
    try:
        sent_at = time.time()
        sock.sendall(request)
        response = Response()
        while not response.complete():
            if not response.feed(sock):
                break
    finally:
        sock.close()
    if response.status() != 201:
        raise RuntimeError(f"the waking append answered {response.status()}: {response.data[:200]!r}")
    return sent_at, response.first_byte_at


def measure(host, port, stream, next_number, waiters, *, event_id, long_poll_secs=30, rss_of=None,
            sockstat=None, settle=0.0, timeout=120.0, append_port=None):
    """Opens `waiters` long-polls on `stream` past event `next_number - 1`,
    wakes them with one append, and returns the figures.

    `rss_of()`, if given, is read once all waiters wait (the server's RSS),
    together with the number of waiters the server reports then (/info);
    `sockstat()` likewise (kernel TCP memory) before and after they connect.
    `long_poll_secs` must outlast the connecting, the settling and the RSS
    reading, or the first waiters would be answered (empty) before the append.
    `append_port`, if given, is another server's port the append goes to
    (a node on the same database as the waiters' one).
    """
    path = f"/streams/{stream}/{next_number}/forward/20?embed=body"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept: application/vnd.eventstore.atom+json\r\n"
        f"ES-LongPoll: {long_poll_secs}\r\n\r\n"
    ).encode()
    result = {"waiters": waiters}
    kernel_before = sockstat() if sockstat else None
    rss_before = rss_of() if rss_of else None
    sockets = []
    selector = selectors.DefaultSelector()
    try:
        started = time.monotonic()
        sockets, result["connect_failures"] = open_requests(host, port, request, waiters, timeout=timeout)
        result["open_seconds"] = time.monotonic() - started
        try:
            # `timeout` is for opening and waiting together.
            answered_early = wait_for_waiters(host, port, waiters, max(1.0, timeout - result["open_seconds"]),
                                              sockets)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; {what_the_sockets_got(sockets)}") from None
        result["connect_seconds"] = time.monotonic() - started
        # Answered before the append: they did not wait, so they are not
        # woken by it (counted apart, and as failed).
        early = {sock for sock in sockets if has_data(sock)} if answered_early else set()
        result["answered_before_append"] = len(early)
        if settle:
            time.sleep(settle)
        if rss_of:
            result["rss_before_bytes"] = rss_before
            result["rss_bytes"] = rss_of()
            result["waiting_at_rss"] = http_get_json(host, port, "/info")["waiters"]
        if sockstat:
            result["kernel_tcp_bytes"] = sockstat() - kernel_before

        responses = {}
        for sock in sockets:
            if sock in early:
                continue
            responses[sock.fileno()] = Response()
            selector.register(sock, selectors.EVENT_READ)
        # How long the first waiter had been waiting when the append went out:
        # it must stay well below `long_poll_secs`.
        result["oldest_wait_seconds"] = time.monotonic() - started
        sent_at, acknowledged_at = append_one(host, append_port or port, stream, event_id)

        read_responses(selector, responses, long_poll_secs + 30)
    finally:
        selector.close()
        for sock in sockets:
            sock.close()

    expected_title = f"{next_number}@{stream}".encode()
    woken = [r for r in responses.values() if r.status() == 200 and expected_title in r.body()]
    # One woken waiter's whole answer, for send_floor.
    result["response"] = woken[0].data if woken else None
    # After the 201: what a reader waits once the writer knows its event is
    # durable (negative: the reader had it before the writer's 201 arrived).
    # After the POST: the whole path, the append's own fsync included.
    after_ack = sorted(r.first_byte_at - acknowledged_at for r in woken)
    after_post = sorted(r.first_byte_at - sent_at for r in woken)
    result.update(
        woken=len(woken),
        failed=waiters - len(woken),
        kernel_timestamps=all(r.kernel_time for r in woken),
        append_ms=(acknowledged_at - sent_at) * 1000,
        long_poll_secs=long_poll_secs,
    )
    for name, values in (("", after_ack), ("post_", after_post)):
        result[f"{name}p50_ms"] = percentile(values, 50) * 1000 if values else None
        result[f"{name}p99_ms"] = percentile(values, 99) * 1000 if values else None
        result[f"{name}max_ms"] = values[-1] * 1000 if values else None
    return result


def read_responses(selector, responses, timeout):
    """Reads each socket registered with `selector` into its Response in
    `responses` (by file number) until every one is complete or closed, or
    `timeout` seconds have passed; returns how many are still pending."""
    pending = len(responses)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            response = responses[key.fd]
            try:
                alive = response.feed(key.fileobj)
            except BlockingIOError:
                continue
            if response.complete() or not alive:
                selector.unregister(key.fileobj)
                pending -= 1
    return pending


def idle_connections(host, port, count, rss_of, *, settle=1.0, timeout=120.0):
    """The reference under idle long-polls' memory: `count` keep-alive
    connections that have each had one `GET /ping` answered and stay open,
    idle, the server's RSS read before and once they all are. What a
    connection costs the server between requests, before any long-poll
    holds anything: no long-poll can cost less."""
    request = f"GET /ping HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    rss_before = rss_of()
    sockets = []
    selector = selectors.DefaultSelector()
    try:
        sockets, failures = open_requests(host, port, request, count, timeout=timeout)
        responses = {}
        for sock in sockets:
            responses[sock.fileno()] = Response()
            selector.register(sock, selectors.EVENT_READ)
        pending = read_responses(selector, responses, timeout)
        answered = sum(1 for response in responses.values() if response.status() == 200)
        if pending or answered != count:
            raise RuntimeError(f"{count - answered} of {count} /ping requests were not answered 200")
        time.sleep(settle)
        rss = rss_of()
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
    return {"connections": count, "connect_failures": failures, "rss_before_bytes": rss_before, "rss_bytes": rss,
            "per_connection_bytes": (rss - rss_before) / count}


def send_floor(count, response, cpus=None, timeout=60.0):
    """Writes `response` (the exact bytes of one waiter's answer) to `count`
    connected loopback sockets from a bare loop in a separate process on
    `cpus` (the server's, when it is pinned), and returns when each answer
    arrived, in ms after the first write (kernel receive timestamps, as for
    the waiters): p50, p99 and max. No HTTP, no store, no wake-ups: only the
    writes and the kernel's delivery of them, so what a server adds on top
    of this is what it costs itself."""
    sender = subprocess.Popen(
        [sys.executable, __file__, "send-floor", str(count), ",".join(map(str, sorted(cpus or [])))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sockets = []
    selector = selectors.DefaultSelector()
    try:
        port = int(sender.stdout.readline())
        for _ in range(count):
            sockets.append(open_socket("127.0.0.1", port))
        if sender.stdout.readline().strip() != "accepted":
            raise RuntimeError("the send-floor sender did not accept every connection")
        sender.stdin.write(response.hex() + "\n")
        sender.stdin.flush()
        responses = {}
        for sock in sockets:
            sock.setblocking(False)
            responses[sock.fileno()] = Response()
            selector.register(sock, selectors.EVENT_READ)
        started = float(sender.stdout.readline())
        pending = read_responses(selector, responses, timeout)
        if pending:
            raise RuntimeError(f"{pending} of {count} send-floor answers did not arrive")
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
        if sender.stdin and not sender.stdin.closed:
            sender.stdin.close()
        sender.wait(timeout=30)
    arrivals = sorted(answer.first_byte_at - started for answer in responses.values())
    return {
        "p50_ms": percentile(arrivals, 50) * 1000,
        "p99_ms": percentile(arrivals, 99) * 1000,
        "max_ms": arrivals[-1] * 1000,
        "kernel_timestamps": all(answer.kernel_time for answer in responses.values()),
    }


def _send_floor_sender(count, cpus):
    """The sending side of send_floor, run as `longpoll.py send-floor N CPUS`:
    prints its port, accepts `count` connections, prints `accepted`, reads
    the response (hex) from stdin, writes it to every connection in turn,
    prints when it started (realtime clock), and exits when stdin closes."""
    if cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(count)
    print(listener.getsockname()[1], flush=True)
    connections = [listener.accept()[0] for _ in range(count)]
    for connection in connections:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("accepted", flush=True)
    response = bytes.fromhex(sys.stdin.readline().strip())
    started = time.time()
    for connection in connections:
        connection.sendall(response)
    print(repr(started), flush=True)
    sys.stdin.read()


def what_the_sockets_got(sockets):
    """For a failed wait: how many waiters were answered already (and with
    which status lines), closed, or are still silent."""
    answered, closed, silent = {}, 0, 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            silent += 1
            continue
        except OSError:
            closed += 1
            continue
        if not data:
            closed += 1
        else:
            status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
            answered[status_line] = answered.get(status_line, 0) + 1
    return f"the clients' sockets: {silent} still waiting, {closed} closed, answered: {answered or 'none'}"


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


if __name__ == "__main__" and sys.argv[1:2] == ["send-floor"]:
    _send_floor_sender(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
