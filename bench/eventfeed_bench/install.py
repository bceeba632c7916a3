"""What a run needs before it measures: the Debian packages of the sections
it runs (wrk, nginx, Varnish, AtomBus and Starman, PostgreSQL with
pgbench), installed when missing, and the release build of eventfeed (and,
for the PostgreSQL section, a second one with that backend)."""

import os
import shutil
import subprocess
from pathlib import Path

from .common import ROOT, eventfeed_binary, log


def installed(package):
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    return result.returncode == 0 and "install ok installed" in result.stdout


def ensure_packages(packages):
    missing = [p for p in packages if not installed(p)]
    if not missing:
        return
    as_root = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if as_root is None:
        raise SystemExit(f"bench/run: missing Debian packages {missing} and no sudo to install them")
    log(f"installing {' '.join(missing)}")
    install = [*as_root, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
               "--no-install-recommends", *missing]
    # apt's output is shown only if it fails; the package lists are updated
    # only when the install fails (a fresh machine may have none yet).
    attempt = subprocess.run(install, capture_output=True, text=True)
    if attempt.returncode != 0:
        update = subprocess.run([*as_root, "apt-get", "update", "-q"], capture_output=True, text=True)
        attempt = subprocess.run(install, capture_output=True, text=True)
        if attempt.returncode != 0:
            raise SystemExit(f"bench/run: installing {missing} failed:\n{update.stderr}{attempt.stdout}{attempt.stderr}")


def packages_for(sections):
    packages = {"wrk"}
    if {"reads", "varnish", "nginxcache"} & sections and not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        packages.add("nginx-light")
    if "varnish" in sections or "stories" in sections:
        packages.add("varnish")
    if "stories" in sections and not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        packages.add("nginx-light")
    if "ui" in sections:
        # Headless Chromium and its WebDriver server, for the web UI.
        packages.update({"chromium", "chromium-driver"})
    if "atombus" in sections:
        # AtomBus, the Plack server its documentation deploys it on, and the
        # SQLite driver for its database.
        packages.update({"libatombus-perl", "starman", "libdbd-sqlite3-perl"})
    if {"postgres", "nodes"} & sections:
        # The server, initdb, psql and pgbench (Debian's postgresql-NN
        # holds them all).
        packages.add("postgresql")
    if "nodes" in sections:
        # The failover: Patroni and its etcd.
        packages.update({"patroni", "etcd-server"})
    return sorted(packages)


def build(sections=()):
    """The release build; with the PostgreSQL section, first the build
    with the `postgres` feature, copied to `eventfeed-postgres`, so that
    `eventfeed` stays the default build (cargo keeps both builds' objects:
    switching back only links again)."""
    if {"postgres", "nodes"} & set(sections):
        log("cargo build --release --locked --features postgres")
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "--features", "postgres"], cwd=ROOT,
                       check=True)
        shutil.copy2(eventfeed_binary(), eventfeed_binary().with_name("eventfeed-postgres"))
    log("cargo build --release --locked")
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)


def executable(name):
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/usr/local/sbin"]:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SystemExit(f"bench/run: {name} not found")
