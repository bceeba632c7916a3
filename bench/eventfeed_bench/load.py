"""Load generation and what is accounted around it: wrk with the suite's Lua
scripts, the pinning of servers and load to separate CPUs, the CPU time
others took on the server CPUs, and a server's CPU time and written bytes."""

import json
import os
import shutil
import signal
import subprocess
import threading

from .common import BENCH


def cpu_set(spec):
    """`0-2,5` → {0, 1, 2, 5}"""
    cpus = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


class Pinning:
    """Servers on the first half of the cores, load generators on the
    other: they do not compete for a core, so figures are steadier."""

    def __init__(self, enabled):
        cores = os.cpu_count() or 1
        self.enabled = enabled and cores >= 2 and shutil.which("taskset") is not None
        half = cores // 2
        self.server_cpus = f"0-{half - 1}" if half > 1 else "0"
        self.load_cpus = f"{half}-{cores - 1}" if cores - half > 1 else str(half)

    def server(self, argv):
        return ["taskset", "-c", self.server_cpus, *argv] if self.enabled else list(argv)

    def load(self, argv):
        return ["taskset", "-c", self.load_cpus, *argv] if self.enabled else list(argv)

    def server_cpu_set(self):
        return cpu_set(self.server_cpus) if self.enabled else None

    def pin_this_process(self):
        if self.enabled:
            os.sched_setaffinity(0, cpu_set(self.load_cpus))

    def describe(self):
        if not self.enabled:
            return "no CPU pinning"
        return f"servers pinned to CPU {self.server_cpus}, load generators to CPU {self.load_cpus} (taskset)"


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpus_busy_seconds(cpus):
    """CPU time that processes (user, nice, system) and the hypervisor
    (steal) took on `cpus` since boot. Interrupt time is left out: it is
    mostly the kernel's loopback work for the measured traffic itself."""
    busy = 0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu" and int(name[3:]) in cpus:
                user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(f) for f in fields[:8])
                busy += user + nice + system + steal
    return busy / CLOCK_TICKS


def written_bytes(pid):
    """Bytes of file pages a process has dirtied so far (its `write_bytes`:
    what it sent towards the disk, sockets left out), or None when the
    kernel does not say."""
    try:
        with open(f"/proc/{pid}/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("write_bytes:"))
    except (OSError, StopIteration, ValueError):
        return None


def group_cpu_seconds(process_group):
    """CPU time of every process in a process group (all their threads),
    and of the group leader's children that left it, running or ended:
    PostgreSQL's backends each start a session of their own (setsid), so
    that the postmaster can signal each one's group, and its autovacuum
    workers come and go (an ended child's time is in its parent's
    cutime and cstime once reaped)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == process_group or int(fields[1]) == process_group:
            total += int(fields[11]) + int(fields[12])
        if int(entry) == process_group:
            total += int(fields[13]) + int(fields[14])
    return total / CLOCK_TICKS


class Wrk:
    def __init__(self, workdir, pinning, settings):
        self.workdir = workdir
        self.pinning = pinning
        self.settings = settings
        self.common = (BENCH / "wrk" / "common.lua").read_text()

    def run(self, port, script, args, connections, duration=None, server=None):
        """Runs wrk; returns the figures its done() printed, and how much of
        the server CPUs something other than `server` (a process group, or a
        tuple of them: eventfeed and its database) used meanwhile: other work
        on a shared machine, the main source of noise."""
        duration = duration or self.settings.duration
        return self.start(port, script, args, connections, duration, server).finish(timeout=duration + 120)

    def start(self, port, script, args, connections, duration, server=None):
        """Starts wrk for at most `duration` seconds and returns at once: the
        run's `finish()` waits for it, its `stop()` ends it early (SIGINT:
        wrk then reports what it measured until then, as at its end)."""
        return WrkRun(self, port, script, args, connections, duration, server)


class WrkRun:
    """One wrk process, with what is accounted around it (see Wrk.run)."""

    def __init__(self, wrk, port, script, args, connections, duration, server):
        self.connections = connections
        self.cpus = wrk.pinning.server_cpu_set()
        self.groups = server if isinstance(server, tuple) else (server,)
        self.server = self.groups[0]
        self.before = ((cpus_busy_seconds(self.cpus), sum(map(group_cpu_seconds, self.groups)))
                       if self.server and self.cpus else None)
        self.written_before = written_bytes(self.server) if self.server else None
        # A file per run: runs in parallel (two nodes at once) must not
        # rewrite each other's script while wrk loads it.
        combined = wrk.workdir / f"{script}.{threading.get_ident()}.combined.lua"
        combined.write_text(wrk.common + "\n" + (BENCH / "wrk" / f"{script}.lua").read_text())
        argv = wrk.pinning.load(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
                                 "-s", str(combined), f"http://127.0.0.1:{port}", "--", *map(str, args)])
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)

    def stop(self, timeout=60):
        self.process.send_signal(signal.SIGINT)
        return self.finish(timeout)

    def finish(self, timeout):
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise
        line = next((l for l in stdout.splitlines() if l.startswith("BENCH_RESULT ")), None)
        if self.process.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({self.process.returncode}): {stdout}\n{stderr}")
        figures = json.loads(line[len("BENCH_RESULT "):])
        seconds = figures["duration_us"] / 1e6
        figures["seconds"] = seconds
        figures["rps"] = figures["requests"] / seconds if seconds else 0.0
        figures["errors"] = (figures["connect_errors"] + figures["read_errors"] + figures["write_errors"]
                             + figures["timeouts"] + max(figures["status_errors"], figures["non_2xx"]))
        figures["connections"] = self.connections
        if self.before:
            busy = cpus_busy_seconds(self.cpus) - self.before[0]
            own = sum(map(group_cpu_seconds, self.groups)) - self.before[1]
            figures["others_cpu_share"] = max(0.0, busy - own) / (seconds * len(self.cpus)) if seconds else None
            figures["server_cpu_seconds"] = own
        if self.written_before is not None:
            written_after = written_bytes(self.server)
            if written_after is not None:
                figures["server_written_bytes"] = written_after - self.written_before
        return figures
