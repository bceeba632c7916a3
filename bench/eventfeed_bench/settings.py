"""The sizes and durations of every workload, full or --quick. A run's
settings are written into its results, and the report's method paragraphs
quote them from there."""


class Settings:
    def __init__(self, quick):
        self.quick = quick
        self.duration = 2 if quick else 8  # seconds per measurement
        self.warmup = 1 if quick else 2  # seconds of unrecorded load before read measurements
        self.read_streams = 100 if quick else 1000  # x 100 events
        self.sample_streams = 50 if quick else 200  # streams read through Varnish and proxy_cache (x 5 pages)
        self.fsync_probe_seconds = 1 if quick else 2
        self.page_probe_mib = 256 if quick else 2048
        self.waiter_counts = [1, 100, 1000]
        self.idle_waiters = 1000 if quick else 10000
        self.read_connections = 16
        self.append_clients = [1, 16, 64]
        self.batch_clients = 16
        self.batch_size = 20
        self.append_streams = 100
        self.atombus_workers = 16
        # projections: each workload with the projections on and off, in
        # rounds ordered on/off, off/on, ...; streams `{category}-...`.
        self.projection_rounds = 1 if quick else 2
        self.projection_workloads = [(64, 1), (16, 20)]  # (clients, events per request)
        self.projection_streams = 1000 if quick else 10000
        self.projection_categories = 8
        self.projection_event_types = 16
        # scavenge: streams x events, each keeping its newest `keep` ($maxCount).
        self.scavenge_streams = 40 if quick else 200
        self.scavenge_events = 500 if quick else 1000
        self.scavenge_keep = 50 if quick else 100
        self.scavenge_clients = 16
        # auth: each workload anonymous and with a plain user's Basic
        # credentials, in rounds ordered anonymous/authenticated, then
        # authenticated/anonymous, ... (four in a full run: a ratio of two
        # figures moves more than either on a shared machine); then failed
        # logins, one at a time.
        self.auth_rounds = 1 if quick else 4
        self.auth_append_clients = 64
        self.auth_failed_logins = 100 if quick else 300
        # metrics: each workload with metrics on (scraped every second) and
        # off, in rounds ordered on/off, off/on, ...
        self.metrics_rounds = 1 if quick else 4
        # postgres: single-event appends from this many clients, alternating
        # with the pgbench baseline in this many rounds (then the batches and
        # pages of the other settings).
        self.postgres_clients = 64
        self.postgres_rounds = 1 if quick else 2
        # ui: a store of streams x 100 events (1M), and how often each view
        # is opened with a cold and with a warm browser cache.
        self.ui_streams = 1000 if quick else 10000
        self.ui_runs = 3 if quick else 10
        # startup: streams x 1,000 events, written in 100-event appends.
        self.startup_streams = 200 if quick else 10000
        # backup: streams x 1,000 events (1M), written in 1,000-event
        # appends; single-event appends from this many clients meanwhile.
        self.backup_streams = 100 if quick else 1000
        self.backup_clients = 8

    def as_dict(self):
        return {name: value for name, value in vars(self).items()}


class Recorded:
    """A run's settings as read back from its results file: attributes as
    in Settings, the values the run had (full-run defaults where a file
    predates a setting)."""

    def __init__(self, values):
        defaults = Settings(bool(values.get("quick")))
        for name, value in defaults.as_dict().items():
            setattr(self, name, values.get(name, value))
