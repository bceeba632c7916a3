"""The command line: parses it, installs and builds what the chosen sections
need, runs each section on loopback servers with a reference measured next
to it, writes the run's results file after every section, then renders
BENCHMARKS.md and README.md's summary table from all results files. Every
server started is stopped when it ends, also on error or Ctrl-C."""

import argparse
import datetime
import shlex
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from . import report
from .common import BENCH, RESULTS, ROOT, eventfeed_binary, log
from .context import Context
from .install import build, ensure_packages, packages_for
from .load import Pinning
from .results import RunRecord
from .sections import MODULES, OPT_IN, SECTIONS
from .servers import PROCESSES
from .settings import Settings


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def parse(argv, description):
    parser = argparse.ArgumentParser(prog="bench/run", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"what to measure: {', '.join(SECTIONS)} (default: all but {', '.join(sorted(OPT_IN))})")
    parser.add_argument("--quick", action="store_true",
                        help="short runs and a smaller store, to check the harness (its results are marked quick "
                             "and the report prefers full runs)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and load to separate CPUs")
    parser.add_argument("--no-build", action="store_true", help="use the existing release binary")
    parser.add_argument("--keep", action="store_true", help="keep bench/work/ (logs, data) after the run")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: render the report and README.md's summary again from bench/results/")
    parser.add_argument("--results", default=str(RESULTS), help="the directory of results files (bench/results/)")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"), help="where to write the report")
    args = parser.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.report_only and args.sections:
        parser.error("--report-only measures nothing: name no sections")
    return args


def measure(args, sections):
    """Runs the sections; returns whether every one of them succeeded."""
    settings = Settings(args.quick)
    pinning = Pinning(not args.no_pin)
    started = datetime.datetime.now(datetime.timezone.utc)
    ensure_packages(packages_for(sections))
    if not args.no_build:
        build(sections)
    if not eventfeed_binary().exists():
        raise SystemExit(f"bench/run: no release binary at {eventfeed_binary()}; run without --no-build")

    command = " ".join(["bench/run", *(shlex.quote(a) for a in sys.argv[1:] if not a.startswith("--output")
                                       and not a.startswith("--results"))])
    record = RunRecord(started, settings, pinning, command, Path(args.results))
    record.data["sections_run"] = [section for section in SECTIONS if section in sections]
    work_root = BENCH / "work"
    work_root.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"run-{started.strftime('%Y%m%d-%H%M%S')}-", dir=work_root))
    pinning.pin_this_process()
    ctx = Context(settings, pinning, workdir, sections)
    succeeded = True
    try:
        for section in SECTIONS:
            if section not in sections:
                continue
            log(f"== {section}")
            meta, figures = record.start_section(), {}
            try:
                MODULES[section].measure(ctx, figures)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # a broken section must not lose the others' figures
                succeeded = False
                log(f"section {section} failed: {error}")
                traceback.print_exc()
                record.section_failed(section, meta, figures, error)
            else:
                record.section_done(section, meta, figures)
    finally:
        ctx.close()
        PROCESSES.stop_all()
        record.finish()
        if args.keep:
            log(f"work files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"results written to {record.path.relative_to(ROOT) if record.path.is_relative_to(ROOT) else record.path}")
    return succeeded


def main(argv=None, description=None):
    args = parse(argv, description)
    # Explicitly, also for SIGINT: a shell that starts this in the background
    # hands it SIGINT ignored, and Python then installs no handler.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    succeeded = True
    if not args.report_only:
        sections = set(args.sections or [section for section in SECTIONS if section not in OPT_IN])
        succeeded = measure(args, sections)
    markdown = report.write(args.output, Path(args.results))
    if not args.report_only:
        print(markdown)
    log(f"report written to {args.output}")
    if not succeeded:
        raise SystemExit(1)


def entry(description):
    try:
        main(description=description)
    except KeyboardInterrupt:
        PROCESSES.stop_all()
        print("\nbench/run: interrupted; every server it started is stopped", file=sys.stderr)
        sys.exit(130)
