"""Basic credentials on every request against none, same workloads, same
server, same run: uncached 20-entry Atom pages from the read store and
durable single-event appends (64 clients), anonymous and as a plain user
(not an admin, so every request goes through the real permission check),
in alternating rounds; and what one failed login costs, a full argon2id
verification, against the same request made anonymously."""

import http.client
import json
import random
import secrets
import statistics
import time

from .. import targets
from ..common import ADMIN, ADMIN_AUTHORIZATION, ATOM_XML, basic_authorization, http_request, log, longpoll
from ..fmt import errors, fmt, fmt_share, ms, others, ratio, table, times, verdict
from ..servers import Eventfeed

TITLE = "Basic authentication on every request"
LOGIN = "bench"
LABELS = {"reads": "uncached 20-entry Atom pages", "appends": "durable single-event appends"}


def create_user(port, password):
    """The plain user (no groups) the authenticated workloads send, created
    by the built-in admin."""
    body = json.dumps({"loginName": LOGIN, "fullName": "bench/run", "password": password, "groups": []})
    status, _, answer = http_request(port, "POST", "/users/", {"Content-Type": "application/json", **ADMIN},
                                     body.encode())
    if status != 201:
        raise RuntimeError(f"POST /users/ answered {status}: {answer[:200]!r}")


def check(port, page, user):
    """What the credentials may do, before anything is measured: the plain
    user reads a public page (200) but not `$all` (401: not an admin, so
    the permission check is the real one), and a wrong password is refused
    even where anonymous requests are allowed (401)."""
    def status_of(path, authorization=None):
        headers = {"Accept": ATOM_XML, **({"Authorization": authorization} if authorization else {})}
        return http_request(port, "GET", path, headers)[0]

    found = {
        "user_page": status_of(page, user),
        "user_all": status_of("/streams/$all/head/backward/1", user),
        "admin_all": status_of("/streams/$all/head/backward/1", ADMIN_AUTHORIZATION),
        "wrong_password_page": status_of(page, basic_authorization(LOGIN, "not-the-password")),
    }
    expected = {"user_page": 200, "user_all": 401, "admin_all": 200, "wrong_password_page": 401}
    if found != expected:
        raise RuntimeError(f"the credentials do not work as expected: {found}, expected {expected}")
    return found


def combined(runs, rate):
    """Several rounds of one workload as one: `rate` over all of them, the
    highest p50 and p99, the errors added up."""
    seconds = sum(f["seconds"] for f in runs)
    shares = [f["others_cpu_share"] for f in runs if f.get("others_cpu_share") is not None]
    return {
        rate: sum(f[rate] * f["seconds"] for f in runs) / seconds,
        "p50_us": max(f["p50_us"] for f in runs),
        "p99_us": max(f["p99_us"] for f in runs),
        "errors": sum(f["errors"] for f in runs),
        **{kind: sum(f[kind] for f in runs) for kind in ("timeouts", "connect_errors", "read_errors",
                                                          "write_errors", "status_errors", "non_2xx")},
        "others_cpu_share": statistics.mean(shares) if shares else None,
    }


def rounds(ctx, measure_one, rate):
    """`measure_one(authorization)` anonymous and authenticated, in rounds
    whose order alternates (anonymous first, then authenticated first), so
    that a drift of the machine's speed or a store's growth weighs on both
    alike."""
    runs = {"anonymous": [], "authenticated": []}
    for round_index in range(ctx.settings.auth_rounds):
        order = ("anonymous", "authenticated") if round_index % 2 == 0 else ("authenticated", "anonymous")
        for kind in order:
            runs[kind].append(measure_one(kind))
    anonymous, authenticated = combined(runs["anonymous"], rate), combined(runs["authenticated"], rate)
    return {"anonymous_rounds": runs["anonymous"], "authenticated_rounds": runs["authenticated"],
            "anonymous": anonymous, "authenticated": authenticated,
            "authenticated_over_anonymous": ratio(authenticated[rate], anonymous[rate]),
            "per_round": [ratio(a[rate], b[rate]) for a, b in zip(runs["authenticated"], runs["anonymous"])]}


def reads(ctx, user):
    settings = ctx.settings
    server = ctx.ensure_read_server()

    def measure_one(kind):
        return ctx.read_run(server.port, "atom", settings.read_streams, label=f"eventfeed uncached, {kind}",
                            server=server.process.pid, authorization=user if kind == "authenticated" else "-")

    return dict(rounds(ctx, measure_one, "rps"), connections=settings.read_connections)


def appends(ctx, password):
    """On a fresh store of their own, served in the default mode, so that
    the read store stays as the other sections read it."""
    settings = ctx.settings
    clients = settings.auth_append_clients
    server = Eventfeed(ctx.workdir, ctx.pinning, ctx.workdir / "auth-appends", "fsync")
    user = basic_authorization(LOGIN, password)
    try:
        create_user(server.port, password)
        # Verified once before the measurement, as on the read server, so
        # that the first requests do not queue behind its verification.
        status, _, _ = http_request(server.port, "GET", f"/users/{LOGIN}", {"Authorization": user})
        if status != 200:
            raise RuntimeError(f"GET /users/{LOGIN} as {LOGIN} answered {status}")

        # Unrecorded, as the reads' warm-up: the first seconds on a fresh
        # store are faster than any after (its files are new), and would
        # favour whichever kind came first.
        ctx.wrk.run(server.port, "append", [f"{random.getrandbits(32):08x}", settings.append_streams, 1],
                    clients, duration=settings.warmup)

        def measure_one(kind):
            nonce = f"{random.getrandbits(32):08x}"
            figures = ctx.wrk.run(server.port, "append",
                                  [nonce, settings.append_streams, 1, 0, 0, "ordered",
                                   user if kind == "authenticated" else "-"],
                                  clients, server=server.process.pid)
            figures["events_per_second"] = (figures["requests"] - figures["errors"]) / figures["seconds"]
            log(f"appends {kind}, {clients} clients x1: {figures['events_per_second']:.0f} events/s, "
                f"p99 {figures['p99_us'] / 1000:.2f} ms, errors {figures['errors']}, "
                f"others on the server CPU {fmt_share(figures.get('others_cpu_share'))}")
            return figures

        return dict(rounds(ctx, measure_one, "events_per_second"), clients=clients, streams=settings.append_streams,
                    warmup_seconds=settings.warmup)
    finally:
        server.stop()


class Timed:
    """One keep-alive connection; times each request to its last byte,
    reconnecting (untimed) when the server closed it."""

    def __init__(self, port):
        self.port = port
        self.connection = None

    def get(self, path, headers):
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.connection.connect()
            started = time.perf_counter()
            try:
                self.connection.request("GET", path, headers=headers)
                response = self.connection.getresponse()
                response.read()
            except (http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = None
                if attempt == 2:
                    raise
                continue
            took = time.perf_counter() - started
            if response.will_close:
                self.connection.close()
                self.connection = None
            return response.status, took * 1e6

    def close(self):
        if self.connection:
            self.connection.close()


def failed_logins(ctx):
    """One client, one request at a time: a wrong password for a login never
    seen (each a new one, so that none reaches the lockout after 5 failures;
    an unknown login is verified against a real hash, so it costs what a
    wrong password for a real account costs), alternating with the same
    request made anonymously. The difference of the medians is what one
    login's verification costs the server."""
    server = ctx.ensure_read_server()
    count = ctx.settings.auth_failed_logins
    page = ctx.page_path("atom", 0, 0)
    nonce = secrets.token_hex(4)
    failed, anonymous = Timed(server.port), Timed(server.port)
    times_us = {"failed": [], "anonymous": []}
    statuses = {"failed": {}, "anonymous": {}}
    try:
        # Unrecorded: the first unknown login makes the server hash the
        # default password it checks unknown logins against.
        warmup = 5
        for index in range(-warmup, count):
            for kind, client, headers in (
                    ("failed", failed, {"Accept": ATOM_XML,
                                        "Authorization": basic_authorization(f"nobody-{nonce}-{index + warmup}",
                                                                             "wrong")}),
                    ("anonymous", anonymous, {"Accept": ATOM_XML})):
                status, took_us = client.get(page, headers)
                if index >= 0:
                    times_us[kind].append(took_us)
                    statuses[kind][str(status)] = statuses[kind].get(str(status), 0) + 1
    finally:
        failed.close()
        anonymous.close()
    figures = {"count": count, "statuses": statuses}
    for kind, values in times_us.items():
        values.sort()
        figures[kind] = {"p50_us": longpoll.percentile(values, 50), "p90_us": longpoll.percentile(values, 90),
                         "p99_us": longpoll.percentile(values, 99), "mean_us": statistics.mean(values)}
    figures["verification_us"] = figures["failed"]["p50_us"] - figures["anonymous"]["p50_us"]
    if statuses["failed"] != {"401": count} or statuses["anonymous"] != {"200": count}:
        raise RuntimeError(f"failed logins answered {statuses['failed']}, anonymous reads {statuses['anonymous']}")
    log(f"failed logins: p50 {figures['failed']['p50_us'] / 1000:.2f} ms, the same read anonymous p50 "
        f"{figures['anonymous']['p50_us'] / 1000:.2f} ms: one verification about "
        f"{figures['verification_us'] / 1000:.1f} ms")
    return figures


def measure(ctx, result):
    settings = ctx.settings
    password = secrets.token_urlsafe(18)
    user = basic_authorization(LOGIN, password)
    server = ctx.ensure_read_server()
    create_user(server.port, password)
    result.update(login=LOGIN, rounds=settings.auth_rounds, events=ctx.read_store_restart["events"],
                  streams=settings.read_streams)
    result["check"] = check(server.port, ctx.page_path("atom", 0, 0), user)
    result["reads"] = reads(ctx, user)
    result["appends"] = appends(ctx, password)
    result["failed_logins"] = failed_logins(ctx)


def met(workload):
    share = workload.get("authenticated_over_anonymous")
    return (share is not None and share >= targets.BASIC_AUTH_SHARE
            and workload["authenticated"]["errors"] == 0 and workload["anonymous"]["errors"] == 0)


def target_cell(workload):
    return f"≥ {fmt(targets.BASIC_AUTH_SHARE, 1)} × anonymous: {verdict(met(workload))}"


def cpu_per_request(runs):
    """The server's CPU time (all threads) per request over `runs`, in µs:
    steadier than a rate on a shared machine, since other work on the
    server's core slows the server but does not bill it."""
    cpu = [f["server_cpu_seconds"] for f in runs if f.get("server_cpu_seconds") is not None]
    requests = sum(f["requests"] for f in runs if f.get("server_cpu_seconds") is not None)
    return sum(cpu) * 1e6 / requests if cpu and requests else None


def rate_of(workload):
    return ("rps", "req/s") if "rps" in workload["anonymous"] else ("events_per_second", "events/s")


def summary(result):
    """The README's rows: authenticated reads and appends against the same
    workload anonymous."""
    rows = []
    for key in ("reads", "appends"):
        workload = result.get(key)
        if not workload:
            continue
        rate, unit = rate_of(workload)
        what = (f"{LABELS[key]}, Basic auth on every request"
                + (f", {workload['clients']} clients" if key == "appends" else ""))
        rows.append([what, f"{fmt(workload['authenticated'][rate])} {unit}",
                     f"anonymous: {fmt(workload['anonymous'][rate])} {unit} "
                     f"({times(workload.get('authenticated_over_anonymous'), 'anonymous')})",
                     target_cell(workload)])
    return rows


def render(result, settings):
    rows = []
    for key in ("reads", "appends"):
        workload = result.get(key)
        if not workload:
            continue
        rate, unit = rate_of(workload)
        anonymous, authenticated = workload["anonymous"], workload["authenticated"]
        what = LABELS[key] + (f", {workload['clients']} clients" if key == "appends"
                              else f", {workload['connections']} connections")
        rows.append([what, f"{fmt(anonymous[rate])} {unit}", ms(anonymous, "p50_us"), ms(anonymous, "p99_us"),
                     errors(anonymous), f"{fmt(authenticated[rate])} {unit}", ms(authenticated, "p50_us"),
                     ms(authenticated, "p99_us"), errors(authenticated),
                     f"**{times(workload.get('authenticated_over_anonymous'), 'anonymous')}**",
                     ", ".join(fmt(r, 2) for r in workload["per_round"]),
                     f"{fmt(cpu_per_request(workload['authenticated_rounds']), 1)} / "
                     f"{fmt(cpu_per_request(workload['anonymous_rounds']), 1)}",
                     others(authenticated, anonymous), target_cell(workload)])
    out = [table(["workload", "anonymous", "p50 ms", "p99 ms", "errors", "Basic auth", "p50 ms", "p99 ms", "errors",
                  "auth ÷ anonymous", "per round", "server CPU µs/request (auth / anonymous)",
                  "others on server CPU (auth / anonymous)", "target"], rows), ""]
    failed = result.get("failed_logins")
    if failed:
        out.append(f"**One login's verification.** {fmt(failed['count'])} requests for the same page, each with a "
                   f"wrong password for a login never seen before: p50 {ms(failed['failed'], 'p50_us')} ms, p90 "
                   f"{ms(failed['failed'], 'p90_us')} ms, p99 {ms(failed['failed'], 'p99_us')} ms (all 401); the "
                   f"same request anonymous, alternating with them: p50 {ms(failed['anonymous'], 'p50_us')} ms. "
                   f"**A password verification (argon2id) costs about {ms(failed, 'verification_us', 1)} ms** of "
                   "the server's time, paid by every failed login and by the first request with credentials the "
                   "server has not verified yet; the workloads above paid it once, before they were measured, "
                   "and the server remembered the user's credentials from then on.\n")
    checks = result.get("check")
    if checks:
        out.append(f"Before measuring: the plain user read a page ({checks['user_page']}) but not `$all` "
                   f"({checks['user_all']}; the admin: {checks['admin_all']}), and a wrong password for it was "
                   f"refused on a public page ({checks['wrong_password_page']}).\n")
    rounds = result["rounds"]
    appends = result.get("appends") or {}
    out.append(f"Method: the same server for both halves of each comparison, in {rounds} round"
               + ("s whose order alternates (anonymous then authenticated, authenticated then anonymous, ...); "
                  "rates over all rounds, p50 and p99 the highest round's, *per round* the ratio of each round"
                  if rounds > 1 else "")
               + ". *Basic auth*: every request carries `Authorization: Basic` for a plain user (no groups, "
               "created through `POST /users/` by the admin at the start: not the admin, whose requests skip the "
               "permission check). Reads: full 20-entry forward Atom pages picked at random from the read store "
               f"({fmt(result['events'])} events, {result['streams']} streams × 100), "
               f"{settings.read_connections} connections, no compression, after {settings.warmup} s of unrecorded "
               "warm-up each, as in the uncached reads section. Appends: POST events+json, one event per request, "
               f"to one of {appends.get('streams', settings.append_streams)} streams at random, "
               f"{appends.get('clients', settings.auth_append_clients)} wrk connections, default durability (fsync), "
               "on a fresh store of their own"
               + (f", after {appends['warmup_seconds']} s of unrecorded appends" if appends.get("warmup_seconds") else "")
               + ". *Server CPU*: the server's CPU time (all threads) per request over all rounds. "
               "Verification: one client, one request at a time; an unknown login "
               "is checked against a real hash, so it takes as long to refuse as a wrong password for a real "
               "account, and a new login each time keeps clear of the lockout after 5 failures.")
    return out
