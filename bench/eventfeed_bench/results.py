"""The machine-readable results: one JSON file per run in bench/results/,
named `<YYYY-MM-DD>-<HHMM>-<revision>[-quick].json`, holding the machine,
the settings, the revision and the times of the run, and per section its
own start, end and revision with every figure its tables show (wrk's raw
figures, the references and the ratios computed from them). The report is
rendered from these files only.

    {"format": 1, "started": "2026-11-23T01:05:12Z", "finished": ..., "revision": "cf2d4d4",
     "quick": false, "command": "bench/run reads", "machine": {...}, "pinning": {...},
     "settings": {...}, "load_average": {"before": "...", "after": "..."}, "notes": [...],
     "sections": {"reads": {"started": ..., "finished": ..., "revision": ..., "figures": {...}}},
     "failed": {"<section>": {"error": "...", "figures": {...partial...}}}}
"""

import datetime
import json
import os
import platform
import re
import subprocess
from pathlib import Path

from .common import RESULTS, ROOT

FORMAT = 1


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def revision():
    """The short git revision of the working tree, `-dirty` if tracked files
    differ from it (results files, the report and the README, whose
    summary table the report rewrites, left out)."""
    short = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)bench/results", ":(exclude)BENCHMARKS.md", ":(exclude)README.md"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return short + ("-dirty" if dirty else "")


def load_average():
    with open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or "unknown")
    memory = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    source = subprocess.run(["findmnt", "-T", str(ROOT), "-no", "SOURCE,FSTYPE"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    rotational = "unknown"
    device = source.split()[0] if source != "unknown" else ""
    name = Path(device).name
    for candidate in (name, re.sub(r"p?\d+$", "", name)):
        flag = Path(f"/sys/block/{candidate}/queue/rotational")
        if candidate and flag.exists():
            rotational = "the kernel reports it " + ("rotational" if flag.read_text().strip() == "1" else "non-rotational")
            break
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": memory / 2**20, "kernel": platform.release(),
            "disk": f"{source} ({rotational})"}


class RunRecord:
    """One run's results file, written again after every section so that
    an interrupted run keeps what it measured."""

    def __init__(self, started, settings, pinning, command, directory=RESULTS):
        self.data = {
            "format": FORMAT, "started": iso(started), "finished": None, "revision": revision(),
            "quick": settings.quick, "command": command, "machine": machine(),
            "pinning": {"enabled": pinning.enabled, "server_cpus": pinning.server_cpus,
                        "load_cpus": pinning.load_cpus, "description": pinning.describe()},
            "settings": settings.as_dict(), "load_average": {"before": load_average(), "after": None},
            "notes": [], "sections": {}, "failed": {},
        }
        name = f"{started.strftime('%Y-%m-%d-%H%M')}-{self.data['revision']}{'-quick' if settings.quick else ''}"
        self.path = directory / f"{name}.json"
        suffix = 2
        while self.path.exists():
            self.path = directory / f"{name}-{suffix}.json"
            suffix += 1

    def start_section(self):
        return {"started": iso(utc_now()), "revision": revision()}

    def section_done(self, name, record, figures):
        self.data["sections"][name] = dict(record, finished=iso(utc_now()), figures=figures)
        self.save()

    def section_failed(self, name, record, figures, error):
        self.data["failed"][name] = dict(record, finished=iso(utc_now()), error=str(error), figures=figures)
        self.data["notes"].append(f"Section `{name}` failed: {error}")
        self.save()

    def finish(self):
        self.data["finished"] = iso(utc_now())
        self.data["load_average"]["after"] = load_average()
        self.save()

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, ensure_ascii=False, default=str) + "\n")


def load_runs(directory=RESULTS):
    """Every results file, as (file name, contents)."""
    return [(path.name, json.loads(path.read_text())) for path in sorted(Path(directory).glob("*.json"))]


def newest_per_section(runs, sections):
    """For each section, the run whose record of it started last: full runs
    first, --quick runs only for sections no full run holds. Returns
    {section: (file name, run, section record)}."""
    chosen = {}
    for section in sections:
        held = [(name, run, run["sections"][section]) for name, run in runs if section in run.get("sections", {})]
        full = [entry for entry in held if not entry[1].get("quick")]
        candidates = full or held
        if candidates:
            chosen[section] = max(candidates, key=lambda entry: parse_iso(entry[2]["started"]))
    return chosen
