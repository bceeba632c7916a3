"""Every process a run starts (eventfeed, nginx, varnishd, Starman with
AtomBus, a PostgreSQL cluster): each in its own process group, on a
loopback port, stopped (the group, by its id) at the end, whatever
happens."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .common import (BENCH, NGINX_CONF, SERVER_LOG, VCL, eventfeed_binary, free_port, http_request, log,
                     wait_until)
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
    """eventfeed on a free loopback port; `binary` defaults to the release
    build (the PostgreSQL section passes the build with that backend),
    `log_filter` to the suite's (a section that reads more of the server's
    log widens it)."""

    def __init__(self, workdir, pinning, data_dir, durability="fsync", options=(), binary=None,
                 log_filter=SERVER_LOG):
        self.data_dir = data_dir
        self.log = workdir / f"eventfeed-{data_dir.name}-{durability}-{int(time.time() * 1000)}.log"
        argv = pinning.server([str(binary or eventfeed_binary()), "serve", "--data-dir", str(data_dir), "--bind", "127.0.0.1:0",
                               "--durability", durability, "--log", log_filter, *options])
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


# The main context and http settings every nginx of the suite runs in: one
# worker, sendfile, long keep-alive, an open file cache, no access log; the
# static reference and the shipped proxy_cache configuration differ only in
# what `{http}` holds.
NGINX_MAIN = """
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
    sendfile {sendfile};
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    open_file_cache max=20000 inactive=60s;
{http}
}}
"""


def nginx_main(directory, http, sendfile=True):
    """nginx.conf for a server under `directory`. Workers of a root master
    run as `user`: this user, so they can read the files under the
    temporary directory. `sendfile=False`: nginx reads each file and writes
    its bytes to the socket, copying them as a server answering from its
    memory must."""
    user = ""
    if os.geteuid() == 0:
        import pwd

        user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n"
    return NGINX_MAIN.format(user=user, dir=directory, http=http, sendfile="on" if sendfile else "off")


class Nginx:
    """nginx as an unprivileged-style process: its own prefix, config, pid
    and logs under `directory`, one worker, no access log."""

    SERVER = """
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
"""

    def __init__(self, directory, pinning, sendfile=True):
        self.dir = directory
        (directory / "tmp").mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = free_port()
            server = self.SERVER.format(dir=directory, port=self.port)
            (directory / "nginx.conf").write_text(nginx_main(directory, server, sendfile))
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


class NginxCache:
    """nginx running the shipped proxy_cache configuration
    (deploy/nginx/eventfeed.conf, which belongs in an `http` block) in front
    of eventfeed: its four machine-specific values (eventfeed's address, the
    listening address, the cache directory, the relay's socket) replaced,
    inside the same main context and http settings as the static reference
    (Nginx above: one worker, sendfile, the same keep-alive, the same open
    file cache, no access log), so that what differs between the two is the
    shipped file."""


    SHIPPED = {
        "backend": "server 127.0.0.1:2113;",
        "listen": "listen 127.0.0.1:6092;",
        "cache": "/var/lib/nginx/eventfeed-cache",
        "relay": "unix:/run/nginx-eventfeed-relay.sock",
    }

    # The reference under the shipped file (minimal=True): nginx's
    # proxy_cache and nothing else. One key of the URL and the encoding (so
    # that the gzip and identity copies do not replace each other), no maps,
    # no relay, no location for live reads: what any proxy_cache hit costs
    # nginx, whatever its configuration says.
    MINIMAL = """
proxy_cache_path {cache} keys_zone=eventfeed:32m;
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://127.0.0.1:{backend};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_cache eventfeed;
        proxy_cache_key $request_uri|$http_accept_encoding;
        add_header X-Cache-Status $upstream_cache_status always;
    }}
}}
"""

    def __init__(self, directory, pinning, backend_port, minimal=False):
        self.dir = directory
        (directory / "tmp").mkdir(parents=True, exist_ok=True)
        shipped = NGINX_CONF.read_text()
        for value in self.SHIPPED.values():
            assert value in shipped, f"{NGINX_CONF} names {value}"
        for attempt in range(3):
            self.port = free_port()
            if minimal:
                conf = self.MINIMAL.format(cache=directory / "cache", port=self.port, backend=backend_port)
            else:
                conf = (shipped.replace(self.SHIPPED["backend"], f"server 127.0.0.1:{backend_port};")
                        .replace(self.SHIPPED["listen"], f"listen 127.0.0.1:{self.port};")
                        .replace(self.SHIPPED["cache"], str(directory / "cache"))
                        .replace(self.SHIPPED["relay"], f"unix:{directory / f'relay{attempt}.sock'}"))
            (directory / "eventfeed.conf").write_text(conf)
            (directory / "nginx.conf").write_text(nginx_main(directory, f"    include {directory}/eventfeed.conf;"))
            argv = pinning.server([executable("nginx"), "-p", str(directory), "-c", str(directory / "nginx.conf"),
                                   "-e", str(directory / "error.log")])
            self.process = PROCESSES.start(argv, log=directory / "nginx.out")
            try:
                wait_until(lambda: self.process.poll() is None and http_request(self.port, "GET", "/ping")[0] == 200,
                           20, "nginx proxy_cache")
                return
            except (RuntimeError, OSError):
                PROCESSES.stop(self.process)
        raise RuntimeError("nginx (proxy_cache) did not start: "
                           + (directory / "error.log").read_text(errors="replace"))

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


def postgres_binaries():
    """The newest PostgreSQL's binaries: Debian keeps them in
    /usr/lib/postgresql/<version>/bin, off the PATH."""
    found = sorted((int(entry.name), entry / "bin") for entry in Path("/usr/lib/postgresql").glob("*")
                   if entry.name.isdigit() and (entry / "bin" / "postgres").is_file())
    if not found:
        raise SystemExit("bench/run: no /usr/lib/postgresql/<version>/bin/postgres (Debian: postgresql)")
    return found[-1][1]


def unprivileged(directory):
    """Creates `directory` for a server that refuses to run as root
    (PostgreSQL, Patroni): when this run is root, owned by `nobody`, and
    the argv prefix that runs a program as `nobody`; otherwise `[]`."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return []
    import pwd

    nobody = pwd.getpwnam("nobody")
    os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    # The user must be able to reach the directory.
    for parent in directory.parents:
        if parent.stat().st_uid == 0 and not parent.stat().st_mode & 0o001:
            parent.chmod(parent.stat().st_mode | 0o011)
    return [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
            "--clear-groups", "--"]


class Postgres:
    """A PostgreSQL cluster of the run's own: `initdb` into `directory`
    (on the data disk, beside the other stores), `postgres` on a free
    loopback port with its socket in that directory, pinned with the other
    servers; as the unprivileged user `nobody` when the run is root, since
    PostgreSQL refuses to run as root. Clients connect over TCP as the
    superuser `postgres` (trust authentication, loopback only).

    The settings (SETTINGS, recorded in the results) are those of a 2-core
    machine's dedicated database, the same for every client of the run:
    durability is PostgreSQL's default (fsync, full-page writes,
    synchronous_commit on), so a commit is acknowledged once its WAL is
    fdatasynced; concurrent commits share WAL flushes as PostgreSQL always
    does (no commit_delay). The checkpoint distance is set so that no
    checkpoint falls inside a measurement (it would penalise whichever
    client ran then); JIT is off (it only slows short queries);
    pg_stat_statements is loaded to tell where the database's time goes."""

    SETTINGS = {
        "shared_buffers": "512MB",
        "max_connections": "200",
        "fsync": "on",
        "full_page_writes": "on",
        "synchronous_commit": "on",
        "wal_level": "replica",
        "wal_buffers": "16MB",
        "max_wal_size": "8GB",
        "checkpoint_timeout": "30min",
        "jit": "off",
        "shared_preload_libraries": "pg_stat_statements",
        "pg_stat_statements.track": "top",
    }

    def __init__(self, directory, pinning):
        self.bin = postgres_binaries()
        self.dir = directory
        as_user = unprivileged(directory)
        data = directory / "data"
        initdb = subprocess.run([*as_user, str(self.bin / "initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8", "--no-locale"],
                                cwd=directory, capture_output=True, text=True)
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stdout}{initdb.stderr}")
        settings = [arg for name, value in self.SETTINGS.items() for arg in ("-c", f"{name}={value}")]
        for attempt in range(3):
            self.port = free_port()
            argv = pinning.server([*as_user, str(self.bin / "postgres"), "-D", str(data), "-k", str(directory),
                                   "-p", str(self.port), "-c", "listen_addresses=127.0.0.1", *settings])
            self.process = PROCESSES.start(argv, log=directory / "postgres.log", cwd=directory)
            try:
                wait_until(lambda: self.process.poll() is None and self.psql("postgres", "SELECT 1")[0] == 0,
                           60, "postgres")
                log(f"PostgreSQL {self.bin.parent.name} on port {self.port}")
                return
            except (RuntimeError, OSError):
                PROCESSES.stop(self.process)
        raise RuntimeError("postgres did not start: " + (directory / "postgres.log").read_text(errors="replace"))

    def url(self, database):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, database, sql):
        """Runs SQL in `database`: (exit status, output), tuples only."""
        result = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                                 "-d", database, "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        return result.returncode, result.stdout + result.stderr

    def sql(self, database, sql):
        """Runs SQL in `database`; its rows (tab-separated fields), or an error."""
        status, output = self.psql(database, sql)
        if status != 0:
            raise RuntimeError(f"psql failed: {sql[:200]}: {output}")
        return [line.split("\t") for line in output.splitlines() if line]

    def stop(self):
        # A fast shutdown (SIGINT): a smart one (SIGTERM) would wait for
        # clients to disconnect.
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGINT)
                self.process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        PROCESSES.stop(self.process)


class Patroni:
    """A Patroni cluster of the run's own: one etcd and two PostgreSQL
    members, a primary and a synchronous standby, on free loopback ports
    in `directory`, as `nobody` when the run is root. The settings are the
    failover test's (tests/common/patroni.rs): deploy/patroni/'s with a
    10 s leader-key time to live and 1 s loop, so a dead primary is
    replaced about 10 s after it died; synchronous_mode on, so the
    promoted standby holds every acknowledged commit. fsync off: the run
    kills processes, not the machine."""

    MEMBER = """scope: eventfeed-bench
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 0
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        synchronous_commit: "on"
        wal_log_hints: "on"
        max_connections: 200
        fsync: "off"
  initdb:
    - encoding: UTF8
    - no-locale
    - auth: trust
  pg_hba:
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{port}
  connect_address: 127.0.0.1:{port}
  data_dir: {data}
  bin_dir: {bin}
  pgpass: {pgpass}
  parameters:
    unix_socket_directories: {dir}
  authentication:
    replication:
      username: replicator
      password: replicator
    superuser:
      username: postgres
      password: postgres
"""

    def __init__(self, directory, pinning):
        for program in ("patroni", "etcd"):
            if not shutil.which(program):
                raise SystemExit(f"bench/run: no `{program}` (Debian: patroni, etcd-server)")
        self.dir = directory
        self.as_user = unprivileged(directory)
        self.pinning = pinning
        etcd_client, etcd_peer = free_port(), free_port()
        self.members = []
        for index in (1, 2):
            member = {"name": f"pg{index}", "port": free_port(), "api": free_port(),
                      "config": directory / f"pg{index}.yml", "data": directory / f"pg{index}"}
            member["config"].write_text(self.MEMBER.format(
                name=member["name"], api=member["api"], etcd=etcd_client, port=member["port"],
                data=json.dumps(str(member["data"])), bin=json.dumps(str(postgres_binaries())),
                pgpass=json.dumps(str(directory / f"pg{index}.pgpass")), dir=json.dumps(str(directory))))
            self.members.append(member)
        if self.as_user:
            subprocess.run(["chown", "-R", "nobody:", str(directory)], check=True)
        self.etcd = PROCESSES.start(
            pinning.server([*self.as_user, "etcd", "--name", "etcd", "--data-dir", str(directory / "etcd"),
                            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
                            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
                            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                            "--initial-cluster", f"etcd=http://127.0.0.1:{etcd_peer}"]),
            log=directory / "etcd.log", cwd=directory)
        self.patronis = [None, None]
        self.start_member(0)
        wait_until(lambda: self.primary() == 0, 90, "a Patroni primary")
        self.start_member(1)
        wait_until(lambda: self.answers(1, "/sync"), 90, "a synchronous standby")
        log("Patroni: a primary and a synchronous standby")

    def start_member(self, index):
        member = self.members[index]
        self.patronis[index] = PROCESSES.start(
            self.pinning.server([*self.as_user, "patroni", str(member["config"])]),
            log=self.dir / f"{member['name']}.log", cwd=self.dir)

    def url(self):
        hosts = ",".join(f"127.0.0.1:{member['port']}" for member in self.members)
        return f"postgres://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def answers(self, index, path):
        """Whether member `index`'s REST API answers 200 to `path`."""
        try:
            return http_request(self.members[index]["api"], "GET", path, timeout=2)[0] == 200
        except OSError:
            return False

    def primary(self):
        return next((index for index in range(len(self.members)) if self.answers(index, "/primary")), None)

    def kill_member(self, index):
        """`kill -9` of member `index` as its machine dies: its Patroni and
        its postmaster, with no chance to hand over."""
        postmaster = self.members[index]["data"] / "postmaster.pid"
        pid = int(postmaster.read_text().split()[0]) if postmaster.exists() else None
        os.killpg(self.patronis[index].pid, signal.SIGKILL)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self):
        for process in [*self.patronis, self.etcd]:
            if process is not None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                PROCESSES.stop(process)
        # The postmasters Patroni started outlive it; their pid files say which.
        for member in self.members:
            pid_file = member["data"] / "postmaster.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
