"""Every process a run starts (eventfeed, nginx, varnishd, Starman with
AtomBus): each in its own process group, on a loopback port, stopped (the
group, by its id) at the end, whatever happens."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .common import BENCH, SERVER_LOG, VCL, eventfeed_binary, free_port, http_request, wait_until
from .install import executable


class Processes:
    def __init__(self):
        self.running = []

    def start(self, argv, *, log, env=None, cwd=None, pipe_stderr=False):
        log_file = open(log, "ab")
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.PIPE if pipe_stderr else log_file,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        process.log_path = log
        process.log_file = log_file
        self.running.append(process)
        return process

    def stop(self, process, timeout=15):
        if process not in self.running:
            return
        self.running.remove(process)
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        # The group may hold children that outlive the leader (workers).
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.log_file.close()

    def stop_all(self):
        for process in list(reversed(self.running)):
            self.stop(process)


PROCESSES = Processes()

class Eventfeed:
    def __init__(self, workdir, pinning, data_dir, durability="fsync", options=()):
        self.data_dir = data_dir
        self.log = workdir / f"eventfeed-{data_dir.name}-{durability}-{int(time.time() * 1000)}.log"
        argv = pinning.server([str(eventfeed_binary()), "serve", "--data-dir", str(data_dir), "--bind", "127.0.0.1:0",
                               "--durability", durability, "--log", SERVER_LOG, *options])
        started = time.monotonic()
        self.process = PROCESSES.start(argv, log=self.log, pipe_stderr=True)
        self.port = None
        self.listening = threading.Event()
        # Copies its log to the file, and finds the address it listens on.
        threading.Thread(target=self._drain, daemon=True).start()
        # Opening a large store can take a while.
        if not self.listening.wait(timeout=300) or self.port is None:
            PROCESSES.stop(self.process)
            raise RuntimeError("eventfeed did not start listening:\n" + self.log.read_text(errors="replace"))
        wait_until(lambda: http_request(self.port, "GET", "/ping")[0] == 200, 60, "eventfeed /ping")
        self.startup_seconds = time.monotonic() - started

    def _drain(self):
        with open(self.log, "ab") as out:
            for line in self.process.stderr:
                out.write(line)
                out.flush()
                if self.port is None:
                    match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
                    if match:
                        self.port = int(match.group(1))
                        self.listening.set()
        self.listening.set()  # exited: let the waiter see it

    def rss_bytes(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        PROCESSES.stop(self.process, timeout=60)

    def kill(self):
        """SIGKILL, as a crash would: no shutdown, no checkpoint."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        PROCESSES.stop(self.process)


class Nginx:
    """nginx as an unprivileged-style process: its own prefix, config, pid
    and logs under `directory`, one worker, no access log."""

    CONF = """
{user}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    open_file_cache max=20000 inactive=60s;
    types {{ }}
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        add_header Cache-Control "max-age=31536000, public";
        add_header Vary Accept;
        location /atom/ {{ default_type "application/atom+xml; charset=utf-8"; }}
        location /json/ {{ default_type "application/vnd.eventstore.atom+json; charset=utf-8"; }}
        location /floor/ {{ default_type "application/json"; }}
        location /atom-gzip/ {{
            default_type "application/atom+xml; charset=utf-8";
            add_header Cache-Control "max-age=31536000, public";
            add_header Vary "Accept, Accept-Encoding";
            add_header Content-Encoding gzip;
        }}
        location /json-gzip/ {{
            default_type "application/vnd.eventstore.atom+json; charset=utf-8";
            add_header Cache-Control "max-age=31536000, public";
            add_header Vary "Accept, Accept-Encoding";
            add_header Content-Encoding gzip;
        }}
    }}
}}
"""

    def __init__(self, directory, pinning):
        self.dir = directory
        (directory / "tmp").mkdir(parents=True, exist_ok=True)
        # Workers of a root master run as `user`: make that this user, so they
        # can read the files under the temporary directory.
        user = ""
        if os.geteuid() == 0:
            import pwd

            user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n"
        for attempt in range(3):
            self.port = free_port()
            (directory / "nginx.conf").write_text(self.CONF.format(user=user, dir=directory, port=self.port))
            argv = pinning.server([executable("nginx"), "-p", str(directory), "-c", str(directory / "nginx.conf"),
                                   "-e", str(directory / "error.log")])
            self.process = PROCESSES.start(argv, log=directory / "nginx.out")
            try:
                wait_until(lambda: self.process.poll() is None and http_request(self.port, "GET", "/")[0] > 0,
                           20, "nginx")
                return
            except (RuntimeError, OSError):
                PROCESSES.stop(self.process)
        raise RuntimeError("nginx did not start: " + (directory / "error.log").read_text(errors="replace"))

    def stop(self):
        PROCESSES.stop(self.process)


class Varnish:
    """varnishd with the shipped VCL and default parameters (README's
    "Behind Varnish" says why: none of the tunings measured helped). Its
    working directory (the shared-memory log every request writes to) is on
    tmpfs when the machine has one, as Varnish's documentation advises: on a
    disk, the page cache's write-back of that log competes with the
    measurement."""

    def __init__(self, directory, pinning, backend_port, storage="256m", builtin=False):
        directory.mkdir(parents=True, exist_ok=True)
        shm = Path("/dev/shm")
        self.work = Path(tempfile.mkdtemp(prefix="eventfeed-bench-varnish-",
                                          dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else directory))
        if builtin:
            # Only the backend: Varnish's builtin VCL does the rest.
            vcl = 'vcl 4.1;\nbackend eventfeed { .host = "127.0.0.1"; .port = "2113"; }\n'
        else:
            vcl = VCL.read_text()
        assert '.port = "2113";' in vcl, "the shipped VCL's backend port is 2113"
        vcl_path = directory / ("builtin.vcl" if builtin else "eventfeed.vcl")
        vcl_path.write_text(vcl.replace('.port = "2113";', f'.port = "{backend_port}";', 1))
        # The shipped VCL includes its rules from the file next to it.
        shutil.copy(VCL.parent / "eventfeed-rules.vcl", directory / "eventfeed-rules.vcl")
        for attempt in range(3):
            self.port = free_port()
            argv = pinning.server([executable("varnishd"), "-F", "-j", "none", "-n", str(self.work / f"n{attempt}"),
                                   "-a", f"127.0.0.1:{self.port}", "-f", str(vcl_path), "-s", f"malloc,{storage}",
                                   "-T", "none"])
            self.process = PROCESSES.start(argv, log=directory / "varnishd.log")
            try:
                wait_until(lambda: self.process.poll() is None and http_request(self.port, "GET", "/ping")[0] == 200,
                           60, "varnishd")
                return
            except (RuntimeError, OSError):
                PROCESSES.stop(self.process)
        raise RuntimeError("varnishd did not start: " + (directory / "varnishd.log").read_text(errors="replace"))

    def stop(self):
        PROCESSES.stop(self.process)
        shutil.rmtree(self.work, ignore_errors=True)


class AtomBus:
    def __init__(self, directory, pinning, workers):
        directory.mkdir(parents=True, exist_ok=True)
        self.db = directory / "atombus.db"
        env = dict(os.environ, ATOMBUS_DB=str(self.db))
        for attempt in range(3):
            self.port = free_port()
            argv = pinning.server([executable("starman"), "--listen", f"127.0.0.1:{self.port}", "--workers",
                                   str(workers), "--preload-app", str(BENCH / "atombus" / "app.psgi")])
            self.log = directory / "starman.log"
            self.process = PROCESSES.start(argv, log=self.log, env=env, cwd=directory)
            try:
                # A feed that does not exist answers 404 once the app is loaded.
                wait_until(lambda: self.process.poll() is None
                           and http_request(self.port, "GET", "/feeds/none")[0] == 404, 60, "AtomBus")
                return
            except (RuntimeError, OSError):
                PROCESSES.stop(self.process)
        raise RuntimeError("AtomBus did not start: " + (directory / "starman.log").read_text(errors="replace"))

    def stop(self):
        PROCESSES.stop(self.process)

