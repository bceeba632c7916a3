"""The web UI in a real browser: Debian's headless Chromium, driven over
WebDriver (chromedriver) with plain HTTP calls from urllib, and Chrome's
DevTools protocol through chromedriver's `goog/cdp/execute` for what
WebDriver has no call for (a script run before every page, the cache, the
main thread's task time). Nothing is needed beyond the chromium and
chromium-driver packages.

  first render  of the dashboard (`/#/`) and of a stream's newest 20-event
                page (`/#/stream/{s}`) on a store of 1,000,000 events: from
                navigation start to the view's content being in the DOM,
                timed in the page (performance.now() in a MutationObserver
                installed before the page's own scripts), from an empty
                browser cache (cold) and from a warm one. References in the
                same run: the same API call made from Python (what curl
                would see), and a blank static page's first render.
  live tail     `/#/tail/{s}` while 1,000 events/s are appended for 10 s:
                events received and shown against events appended, whether
                the rows on screen are exactly the newest ones (nothing
                dropped from the window), and the main thread's busy share
                (Chrome's own task time over wall time), against the same
                tail idle.
"""

import http.client
import http.server
import json
import shutil
import statistics
import threading
import time
import urllib.error
import urllib.request
import uuid

from .. import targets
from ..common import ATOM_JSON, fill_streams, free_port, http_request, log, wait_until
from ..fmt import fmt, fmt_share, table, verdict
from ..install import executable
from ..servers import PROCESSES, Eventfeed

TITLE = "Web UI in the browser"

STREAM_PREFIX = "bench-ui-"
EVENTS_PER_STREAM = 100
TAIL_STREAM = "bench-ui-tail"
TAIL_RATE = 1000  # events per second
TAIL_BATCH = 20  # events per append: 50 appends per second
TAIL_SECONDS = 10
IDLE_SECONDS = 3

# Installed before every page's own scripts: records when the view's
# content is in the DOM (and the frame after it), from navigation start.
PROBE = r"""
(() => {
  const view = location.pathname.endsWith("/blank.html") ? "blank"
    : location.hash.startsWith("#/stream/") ? "stream"
    : location.hash === "" || location.hash === "#/" ? "dashboard" : null;
  if (!view) return;
  const ready = {
    blank: () => document.getElementById("blank-content"),
    stream: () => document.querySelectorAll("#events tbody tr").length >= 20,
    dashboard: () => (document.getElementById("head-position")?.textContent || "") !== "",
  }[view];
  const probe = window.__uiBench = { view, rendered: null, painted: null };
  const check = () => {
    if (probe.rendered !== null || !ready()) return;
    probe.rendered = performance.now();
    observer.disconnect();
    requestAnimationFrame(() => requestAnimationFrame(() => { probe.painted = performance.now(); }));
  };
  const observer = new MutationObserver(check);
  observer.observe(document, { childList: true, subtree: true, characterData: true });
  document.addEventListener("DOMContentLoaded", check);
})();
"""

# Runs in the tail's page: long tasks and the gaps between animation frames.
TAIL_PROBE = r"""
const probe = window.__tailBench = { started: performance.now(), longTaskMs: 0, longTasks: 0, gaps: [], stop: false };
try {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) { probe.longTaskMs += entry.duration; probe.longTasks++; }
  }).observe({ type: "longtask" });
} catch (error) { probe.noLongTasks = String(error); }
let last = performance.now();
const frame = (now) => { probe.gaps.push(now - last); last = now; if (!probe.stop) requestAnimationFrame(frame); };
requestAnimationFrame(frame);
"""

# The events the tail received so far (see TAIL_READ).
TAIL_RECEIVED = r"""
if (window.tailStats) return window.tailStats.received;
const status = document.getElementById("tail-status")?.innerText || "";
return parseInt((status.match(/\d[\d,]*/) || ["-1"])[0].replace(/,/g, ""), 10);
"""

# Whether the tail has drawn all it received (a renderer that batches
# draws a moment later): true without `window.tailStats`, which cannot say.
TAIL_DRAWN = r"""
const stats = window.tailStats;
return !stats || stats.shown + (stats.skipped || 0) >= stats.received;
"""

# What the tail shows: `window.tailStats` where tail.js exposes it, else
# the count in its status line; the event numbers of the rows on screen.
TAIL_READ = r"""
const probe = window.__tailBench;
probe.stop = true;
const rows = [...document.querySelectorAll("#tail tbody tr")];
const numbers = rows.map((row) => parseInt(row.querySelector("td")?.innerText ?? "", 10));
const status = document.getElementById("tail-status")?.innerText || "";
const counted = parseInt((status.match(/\d[\d,]*/) || ["-1"])[0].replace(/,/g, ""), 10);
return {
  stats: window.tailStats ? { received: window.tailStats.received, shown: window.tailStats.shown } : null,
  counted, status, numbers, elapsedMs: performance.now() - probe.started,
  longTaskMs: probe.longTaskMs, longTasks: probe.longTasks, noLongTasks: probe.noLongTasks || null,
  gaps: probe.gaps,
};
"""


class WebDriver:
    """chromedriver and one headless Chromium session, in a process group
    of their own (stopped with every other process of the run)."""

    def __init__(self, workdir, pinning):
        self.port = free_port()
        self.process = PROCESSES.start(pinning.load([executable("chromedriver"), f"--port={self.port}"]),
                                       log=workdir / "chromedriver.log")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: self._raw("GET", "/status") is not None, 30, "chromedriver")
        profile = workdir / "chromium-profile"
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", f"--user-data-dir={profile}", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"]
        capabilities = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": executable("chromium"), "args": args},
        }}}
        self.session = self._call("POST", "/session", capabilities)["sessionId"]

    def _raw(self, method, path, body=None, timeout=120):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.endpoint}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def _call(self, method, path, body=None):
        try:
            answer = self._raw(method, path, body)
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"WebDriver {path}: {error.read()[:500]!r}") from None
        value = (answer or {}).get("value")
        if isinstance(value, dict) and value.get("error"):
            raise RuntimeError(f"WebDriver {path}: {value}")
        return value

    def open(self, url):
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def run(self, script, args=()):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": list(args)})

    def cdp(self, command, params=None):
        return self._call("POST", f"/session/{self.session}/goog/cdp/execute",
                          {"cmd": command, "params": params or {}})

    def wait_for(self, expression, timeout=30):
        deadline = time.monotonic() + timeout
        script = f"try {{ return ({expression}) || null; }} catch (e) {{ return null; }}"
        while True:
            value = self.run(script)
            if value is not None:
                return value
            if time.monotonic() > deadline:
                page = self.run("return document.body ? document.body.innerText.slice(0, 500) : ''")
                raise RuntimeError(f"waited {timeout} s for `{expression}`; the page shows: {page!r}")
            time.sleep(0.02)

    def close(self):
        try:
            self._raw("DELETE", f"/session/{self.session}", timeout=30)
        except OSError:
            pass
        PROCESSES.stop(self.process)


class BlankSite:
    """A blank static page served from a directory by Python's own HTTP
    server, for the reference first render."""

    def __init__(self, directory):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "blank.html").write_text(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>blank</title>'
            '<link rel="icon" href="data:,"></head><body><p id="blank-content">blank</p></body></html>\n')

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def fill_store(ctx, data_dir, streams):
    """streams x 100 events, one 100-event append per stream, durability
    none (quick), then served by a server restarted in the default mode."""
    filler = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "none")
    started = time.monotonic()
    try:
        fill_streams(filler.port, STREAM_PREFIX, streams, EVENTS_PER_STREAM, lambda n: f"Order{n % 5}")
    finally:
        fill_seconds = time.monotonic() - started
        filler.stop()
    return fill_seconds


def first_render(driver, url, runs, cold):
    """Navigation start → the view's content in the DOM, in ms, `runs`
    times (each from about:blank; `cold`: the browser cache emptied first)."""
    figures = {"rendered_ms": [], "painted_ms": [], "fcp_ms": [], "response_end_ms": []}
    for _ in range(runs):
        driver.open("about:blank")
        if cold:
            driver.cdp("Network.clearBrowserCache")
        driver.open(url)
        driver.wait_for("window.__uiBench && window.__uiBench.painted !== null")
        timing = driver.run("""
            const navigation = performance.getEntriesByType("navigation")[0];
            const paint = performance.getEntriesByName("first-contentful-paint")[0];
            return { rendered: window.__uiBench.rendered, painted: window.__uiBench.painted,
                     fcp: paint ? paint.startTime : null, responseEnd: navigation ? navigation.responseEnd : null };""")
        figures["rendered_ms"].append(timing["rendered"])
        figures["painted_ms"].append(timing["painted"])
        figures["fcp_ms"].append(timing["fcp"])
        figures["response_end_ms"].append(timing["responseEnd"])
    for name in list(figures):
        values = [value for value in figures[name] if value is not None]
        figures[name.replace("_ms", "_median_ms")] = statistics.median(values) if values else None
    figures["rendered_max_ms"] = max(figures["rendered_ms"])
    return figures


def api_time(port, path, accept, runs=30):
    """The same call the view makes, from Python on a new connection each
    time (as curl would): median ms."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        status, _, _ = http_request(port, "GET", path, {"Accept": accept})
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
    return statistics.median(times)


def tail_run(driver, server, first_number=None):
    """Opens the tail, measures for the run's length while appending from
    event `first_number` on (`None`: idle), returns what the page showed
    and how busy it was."""
    driver.open("about:blank")
    driver.open(f"http://127.0.0.1:{server.port}/#/tail/{TAIL_STREAM}")
    driver.wait_for("document.getElementById('tail-status')")
    wait_until(lambda: json.loads(http_request(server.port, "GET", "/info")[2])["waiters"] >= 1, 30,
               "the tail's event stream")
    driver.cdp("Performance.enable")
    driver.run(TAIL_PROBE)
    before = {m["name"]: m["value"] for m in driver.cdp("Performance.getMetrics")["metrics"]}
    wall_started = time.monotonic()
    appended, behind_ms = 0, 0.0
    if first_number is not None:
        appended, behind_ms = append_at_rate(server.port, first_number)
        # Let the last events arrive (and a batched renderer draw them).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (driver.run(TAIL_RECEIVED) < appended
                                               or not driver.run(TAIL_DRAWN)):
            time.sleep(0.1)
    else:
        time.sleep(IDLE_SECONDS)
    wall = time.monotonic() - wall_started
    after = {m["name"]: m["value"] for m in driver.cdp("Performance.getMetrics")["metrics"]}
    shown = driver.run(TAIL_READ)
    task_seconds = after.get("TaskDuration", 0) - before.get("TaskDuration", 0)
    script_seconds = after.get("ScriptDuration", 0) - before.get("ScriptDuration", 0)
    layout_seconds = (after.get("LayoutDuration", 0) - before.get("LayoutDuration", 0)
                      + after.get("RecalcStyleDuration", 0) - before.get("RecalcStyleDuration", 0))
    gaps = sorted(shown.pop("gaps"))
    frame_ms = 1000 / 60
    elapsed_ms = shown["elapsedMs"]
    return {
        "appended": appended, "appender_behind_ms": behind_ms, "seconds": wall,
        "busy_share": task_seconds / wall if wall else None,
        "script_share": script_seconds / wall if wall else None,
        "layout_share": layout_seconds / wall if wall else None,
        "long_task_share": shown["longTaskMs"] / elapsed_ms if elapsed_ms else None,
        "long_tasks": shown["longTasks"],
        "frames": len(gaps),
        "frame_gap_p50_ms": gaps[len(gaps) // 2] if gaps else None,
        "frame_gap_p99_ms": gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] if gaps else None,
        "frame_gap_max_ms": gaps[-1] if gaps else None,
        "frame_overrun_share": sum(max(0.0, gap - frame_ms) for gap in gaps) / elapsed_ms if elapsed_ms else None,
        **{key: shown[key] for key in ("stats", "counted", "status", "numbers", "noLongTasks")},
    }


def appended_before(server):
    """The tail stream's next event number (the number its next event gets)."""
    status, _, body = http_request(server.port, "GET", f"/streams/{TAIL_STREAM}/head",
                                   {"Accept": "application/vnd.eventstore.event+json"})
    return json.loads(body)["eventNumber"] + 1 if status == 200 else 0


def append_at_rate(port, first_number):
    """TAIL_RATE events/s for TAIL_SECONDS, TAIL_BATCH per request on an
    absolute schedule from one connection; answers the events appended and
    how far behind schedule the appender ended (ms)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    requests = TAIL_RATE * TAIL_SECONDS // TAIL_BATCH
    interval = TAIL_BATCH / TAIL_RATE
    started = time.monotonic()
    number = first_number
    for index in range(requests):
        due = started + index * interval
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        events = [{"eventId": str(uuid.uuid4()), "eventType": "Tailed", "data": {"n": number + k, "amount": 1.5}}
                  for k in range(TAIL_BATCH)]
        connection.request("POST", f"/streams/{TAIL_STREAM}", body=json.dumps(events).encode(),
                           headers={"Content-Type": "application/vnd.eventstore.events+json"})
        response = connection.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"tail append answered {response.status}")
        number += TAIL_BATCH
    behind = (time.monotonic() - (started + requests * interval)) * 1000
    connection.close()
    return number - first_number, max(0.0, behind)


def judge_window(tail, first_number):
    """Whether the rows on screen are exactly the newest events appended."""
    numbers = [n for n in tail["numbers"] if n == n]  # drop NaN
    last = first_number + tail["appended"] - 1
    expected = set(range(last - len(numbers) + 1, last + 1))
    missing = sorted(expected - set(numbers))
    tail["rows"] = len(numbers)
    tail["window_missing"] = len(missing)
    tail["window_newest"] = max(numbers) if numbers else None
    tail["window_expected_newest"] = last
    tail["received"] = tail["stats"]["received"] if tail.get("stats") else tail["counted"]
    tail["received_source"] = "window.tailStats" if tail.get("stats") else "the #tail-status line"
    del tail["numbers"]


def measure(ctx, result):
    """A store of ui_streams x 100 events; the browser's first renders,
    cold and warm, against the API call from Python and a blank page;
    then the live tail at 1,000 events/s against the tail idle."""
    streams = ctx.settings.ui_streams
    data_dir = ctx.workdir / "ui"
    log(f"filling the UI store: {streams} streams x {EVENTS_PER_STREAM} events")
    fill_seconds = fill_store(ctx, data_dir, streams)
    server = Eventfeed(ctx.workdir, ctx.pinning, data_dir, "fsync")
    result["store"] = {"events": streams * EVENTS_PER_STREAM, "streams": streams, "fill_seconds": fill_seconds,
                       "bytes": sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file()),
                       "restart_seconds": server.startup_seconds}
    log(f"UI store ready: {streams * EVENTS_PER_STREAM} events in {fill_seconds:.0f} s")
    blank = BlankSite(ctx.workdir / "blank")
    driver = WebDriver(ctx.workdir, ctx.pinning)
    try:
        driver.cdp("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
        runs = ctx.settings.ui_runs
        stream = f"{STREAM_PREFIX}{streams // 2}"
        base = f"http://127.0.0.1:{server.port}"
        pages = {
            "dashboard": (f"{base}/#/", server.port, "/info", "application/json"),
            "stream": (f"{base}/#/stream/{stream}", server.port, f"/streams/{stream}?embed=body", ATOM_JSON),
            "blank": (f"http://127.0.0.1:{blank.port}/blank.html", blank.port, "/blank.html", "text/html"),
        }
        for view, (url, port, api_path, accept) in pages.items():
            figures = {"url": url.replace(str(port), "PORT"), "api_path": api_path}
            figures["cold"] = first_render(driver, url, runs, cold=True)
            figures["warm"] = first_render(driver, url, runs, cold=False)
            figures["api_ms"] = api_time(port, api_path, accept)
            result[view] = figures
            log(f"{view}: first render cold {figures['cold']['rendered_median_ms']:.0f} ms, warm "
                f"{figures['warm']['rendered_median_ms']:.0f} ms (median of {runs}); the call alone "
                f"{figures['api_ms']:.1f} ms")

        idle = tail_run(driver, server)
        judge_window(idle, 0)
        result["tail_idle"] = idle
        first_number = appended_before(server)
        tail = tail_run(driver, server, first_number)
        judge_window(tail, first_number)
        result["tail"] = tail
        log(f"tail: {tail['appended']} appended, {tail['received']} received ({tail['received_source']}), "
            f"{tail['rows']} rows shown, {tail['window_missing']} missing from the window; main thread busy "
            f"{fmt_share(tail['busy_share'])} (idle {fmt_share(idle['busy_share'])}), frame gap p99 "
            f"{fmt(tail['frame_gap_p99_ms'], 1)} ms")
    finally:
        driver.close()
        blank.close()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


# -- the report ----------------------------------------------------------------


def _render_ok(figures):
    return all(figures[view][run]["rendered_median_ms"] <= targets.UI_FIRST_RENDER_MS
               for view in ("dashboard", "stream") for run in ("cold", "warm"))


def _tail_ok(tail):
    return (tail["window_missing"] == 0 and tail["received"] >= tail["appended"]
            and tail["busy_share"] is not None and tail["busy_share"] <= targets.UI_TAIL_BUSY_SHARE)


def summary(figures):
    if "dashboard" not in figures:
        return []
    events = fmt(figures["store"]["events"] / 1e6, 0)
    rows = [[f"web UI first render, {events}M-event store",
             f"dashboard {fmt(figures['dashboard']['cold']['rendered_median_ms'])} ms cold / "
             f"{fmt(figures['dashboard']['warm']['rendered_median_ms'])} ms warm; 20-event stream page "
             f"{fmt(figures['stream']['cold']['rendered_median_ms'])} / "
             f"{fmt(figures['stream']['warm']['rendered_median_ms'])} ms",
             f"blank page {fmt(figures['blank']['cold']['rendered_median_ms'])} / "
             f"{fmt(figures['blank']['warm']['rendered_median_ms'])} ms",
             f"{targets.target('web_ui')}: {verdict(_render_ok(figures))}"]]
    if "tail" in figures:
        tail, idle = figures["tail"], figures["tail_idle"]
        rows.append([f"web UI live tail, {fmt(TAIL_RATE)} events/s",
                     f"main thread busy {fmt_share(tail['busy_share'])}, {fmt(tail['window_missing'])} missing "
                     f"from the window, {fmt(tail['received'])} of {fmt(tail['appended'])} received",
                     f"idle tail {fmt_share(idle['busy_share'])}",
                     f"{targets.target('web_ui_tail')}: {verdict(_tail_ok(tail))}"])
    return rows


def render(figures, settings):
    out = []
    store = figures["store"]
    rows = []
    labels = {"dashboard": "dashboard `/#/`", "stream": "a stream's newest 20 events `/#/stream/{s}`",
              "blank": "reference: a blank static page"}
    for view, label in labels.items():
        if view not in figures:
            continue
        page = figures[view]
        met = ("—" if view == "blank" else verdict(
            max(page["cold"]["rendered_median_ms"], page["warm"]["rendered_median_ms"]) <= targets.UI_FIRST_RENDER_MS))
        rows.append([label,
                     f"{fmt(page['cold']['rendered_median_ms'])} ms (max {fmt(page['cold']['rendered_max_ms'])})",
                     f"{fmt(page['warm']['rendered_median_ms'])} ms (max {fmt(page['warm']['rendered_max_ms'])})",
                     f"{fmt(page['cold']['fcp_median_ms'])} / {fmt(page['warm']['fcp_median_ms'])} ms",
                     f"`{page['api_path']}`: {fmt(page['api_ms'], 1)} ms", met])
    out += [table(["view", "first render, cold cache (median)", "warm cache (median)",
                   "first contentful paint, cold / warm", "the same call from Python", "target ≤ 300 ms"], rows), ""]
    if "tail" in figures:
        tail, idle = figures["tail"], figures["tail_idle"]
        out += [table(["live tail", "at 1,000 events/s", "idle (reference)"], [
            ["events appended / received", f"{fmt(tail['appended'])} / {fmt(tail['received'])}", "—"],
            ["rows on screen; missing from the newest", f"{fmt(tail['rows'])}; {fmt(tail['window_missing'])}",
             f"{fmt(idle['rows'])}; —"],
            ["main thread busy (Chrome's task time / wall time)", fmt_share(tail["busy_share"]),
             fmt_share(idle["busy_share"])],
            ["of which script; style and layout", f"{fmt_share(tail['script_share'])}; {fmt_share(tail['layout_share'])}",
             f"{fmt_share(idle['script_share'])}; {fmt_share(idle['layout_share'])}"],
            ["long tasks (≥ 50 ms): count, share of time", f"{fmt(tail['long_tasks'])}, {fmt_share(tail['long_task_share'])}",
             f"{fmt(idle['long_tasks'])}, {fmt_share(idle['long_task_share'])}"],
            ["frame gaps p50 / p99 / max", f"{fmt(tail['frame_gap_p50_ms'], 1)} / {fmt(tail['frame_gap_p99_ms'], 1)} / "
             f"{fmt(tail['frame_gap_max_ms'], 1)} ms",
             f"{fmt(idle['frame_gap_p50_ms'], 1)} / {fmt(idle['frame_gap_p99_ms'], 1)} / {fmt(idle['frame_gap_max_ms'], 1)} ms"],
            ["target: none dropped from the window, busy ≤ 50%", verdict(_tail_ok(tail)), "—"],
        ]), ""]
        source = tail.get("received_source", "")
    else:
        source = ""
    out.append(
        f"The store: {fmt(store['events'])} events ({fmt(store['streams'])} streams × {EVENTS_PER_STREAM}, written in "
        f"{EVENTS_PER_STREAM}-event appends in {fmt(store['fill_seconds'])} s with durability none, then served by a "
        f"server restarted with the default durability; {fmt(store['bytes'] / 2**20)} MiB on disk). Method: Debian's "
        "headless Chromium, driven over WebDriver from Python (urllib) with Chrome's DevTools protocol through "
        "chromedriver, on the load CPU. A script installed before each page's own scripts times, with "
        "`performance.now()` in a MutationObserver, the moment from navigation start at which the view's content is "
        "in the DOM (the dashboard's head position; the stream page's 20 rows; the blank page's paragraph); each "
        f"view is opened {settings.ui_runs} times from `about:blank` with the browser cache emptied (cold) and "
        f"{settings.ui_runs} times with it warm (the UI's files then revalidate: `304`). The reference call is the "
        "view's own API request made from Python on a new connection. The live tail: the view opened on a new "
        f"stream, then {fmt(TAIL_RATE)} events/s appended for {TAIL_SECONDS} s ({TAIL_BATCH}-event appends on a fixed "
        "schedule); the busy share is Chrome's own main-thread task time (`Performance.getMetrics`) over wall time, "
        "the frame gaps those between `requestAnimationFrame` callbacks; events received are read from "
        f"{source or 'the page'}, and the rows on screen are checked to be exactly the newest events appended. "
        f"The reference is the same tail with nothing appended for {IDLE_SECONDS} s.")
    return out
