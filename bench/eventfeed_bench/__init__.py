"""eventfeed's benchmark harness, as a package; `bench/run` is its entry point.

    cli.py        the command line: which sections, then measure, record, render
    common.py     paths, constants and small helpers (logging, HTTP, waiting)
    settings.py   durations and sizes of every workload (full and --quick)
    install.py    the Debian packages the sections need, and the release build
    servers.py    the processes started: eventfeed, nginx, Varnish, AtomBus
    load.py       wrk, CPU pinning and the CPU and write accounting around it
    probes.py     the disk's fdatasync rate and the cost of new file pages
    context.py    what the sections of one run share: the read store, nginx
    sections/     one module per section: its workload and its measurement,
                  and how its results read as Markdown
    results.py    the machine-readable results: one JSON file per run
    report.py     BENCHMARKS.md and README's summary, rendered from the newest results per section
    fmt.py        number and table formatting for the report
    targets.py    the performance targets the report holds figures to
"""
