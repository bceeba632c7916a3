"""References for the disk, measured on the disk the stores use: the rate of
4 KiB pwrite + fdatasync, and what the kernel charges for a page of file the
first time it is written (new file pages) against a page already cached."""

import os
import time

from .common import log, longpoll


def fsync_probe(workdir, settings):
    """pwrite 4 KiB + fdatasync in a loop, on the disk the stores use."""
    path = workdir / "fsync-probe"
    block = os.urandom(4096)
    slots = 256
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"\0" * 4096 * slots, 0)
        os.fsync(fd)
        samples = []
        deadline = time.perf_counter() + settings.fsync_probe_seconds
        index = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            os.pwrite(fd, block, (index % slots) * 4096)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - started)
            index += 1
    finally:
        os.close(fd)
        path.unlink()
    samples.sort()
    figures = {
        "per_second": len(samples) / sum(samples),
        "p50_us": samples[len(samples) // 2] * 1e6,
        "p99_us": longpoll.percentile(samples, 99) * 1e6,
        "count": len(samples),
    }
    log(f"fdatasync: {figures['per_second']:.0f}/s, p50 {figures['p50_us']:.0f} µs")
    return figures


def page_probe(workdir, settings):
    """Writes a new file (no sync) in 1 MiB pwrites, then writes the same
    range again: what the kernel charges for each page of file the first
    time it is written, against a page already cached. On a virtual
    machine whose memory the host backs on first touch the first is many
    times the second, and every byte a store's file grows by pays it."""
    path = workdir / "page-probe"
    chunk = os.urandom(1 << 20)
    total = settings.page_probe_mib
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    passes = []
    try:
        for _ in range(2):
            started, system = time.perf_counter(), os.times().system
            for index in range(total):
                os.pwrite(fd, chunk, index << 20)
            passes.append((time.perf_counter() - started, os.times().system - system))
    finally:
        os.close(fd)
        path.unlink()
    (first, first_system), (again, _) = passes
    figures = {"mib": total, "first_mib_s": total / first, "again_mib_s": total / again,
               "first_us_per_kib": first_system * 1e6 / (total * 1024)}
    log(f"new file pages: {figures['first_mib_s']:.0f} MiB/s the first time, "
        f"{figures['again_mib_s']:.0f} MiB/s again")
    return figures
