"""The sections, in the order a run measures them and the report shows
them. Each module has TITLE, `measure(ctx, result)`, which runs the section's
workload and fills `result` (a JSON-ready dict: every figure the report
shows, with its reference figures and the ratios between them), and
`render(result, settings)`, which returns the section's Markdown: tables
first, then a short method paragraph. A module may also have
`summary(result)`, which returns its rows of the README's summary table
([what, figure, reference in the same run, target and verdict]); the
sections without one are left out of it."""

from . import (appends, atombus, auth, backup, longpoll, metrics, multiappend, nginxcache, nodes, postgres,
               projections, reads, scavenge, startup, stories, subscriptions, ui, varnish)

MODULES = {
    "appends": appends,
    "multiappend": multiappend,
    "reads": reads,
    "varnish": varnish,
    "nginxcache": nginxcache,
    "projections": projections,
    "scavenge": scavenge,
    "longpoll": longpoll,
    "subscriptions": subscriptions,
    "auth": auth,
    "metrics": metrics,
    "postgres": postgres,
    "nodes": nodes,
    "atombus": atombus,
    "ui": ui,
    "startup": startup,
    "stories": stories,
    "backup": backup,
}
SECTIONS = list(MODULES)
# Run only when named: `startup` writes a 10M-event store (about 7 GB and
# five minutes); `stories` writes a 1M-event store besides its own
# workloads (about five minutes); `backup` writes a 1M-event store and
# backs it up twice, under appends that last as long (about ten minutes).
OPT_IN = {"startup", "stories", "backup"}
