"""``make demo``: thread-per-request connections against the bounded pool, under real load.

It starts PostgreSQL with a deliberately small ``max_connections`` (or uses DATABASE_URL), then
for each mode starts the demo app under gunicorn gthread (same settings both times) and runs
Locust headless in its own process against ``/per-request/*`` or ``/pooled/*`` with the same
users, spawn rate, duration and op mix. Every second it samples the server's connections
(``pg_stat_activity``) and connection churn (``pg_stat_database.sessions``). It writes
``load/results/<timestamp>/`` (Locust CSVs, samples, PNG charts, report.md, report.html) and
prints the summary table. Everything it starts is stopped, also on Ctrl-C and on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg

from demo_app import latency
from demo_app.app import PER_REQUEST_APP, POOLED_APP
from demo_app.serve import run_gunicorn
from threadpool_db.embedded import PgBouncer, Stopped, database, stop_on_signals

from . import cpu, report
from .phase import Phase

HERE = Path(__file__).resolve().parent
MODES = ("per-request", "pooled", "pgbouncer")
APP_NAMES = {"per-request": PER_REQUEST_APP, "pooled": POOLED_APP, "pgbouncer": POOLED_APP}
HOSTS_VIA_PGBOUNCER = 3  # gunicorn instances, stand-ins for app hosts


SAMPLE_EVERY = 0.1  # seconds: 10 Hz, fast enough to catch the peaks (charts plot each second's max)


class Sampler(threading.Thread):
    """Ten times a second: every client backend on the server (what PostgreSQL counts against
    max_connections, this sampler's own excepted), the app's, and the database's session count."""

    def __init__(self, admin_url: str, app_name: str, dbname: str, by_user: bool = False) -> None:
        super().__init__(name="conn-sampler", daemon=True)
        self.admin_url, self.app_name, self.dbname = admin_url, app_name, dbname
        # behind PgBouncer the backends carry the bouncer's application_name: count the role's
        self.filter = "usename = 'app' AND backend_type = 'client backend'" if by_user else "application_name = %s"
        self.samples: list[dict[str, float]] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        try:
            # a superuser connection: it uses a reserved slot, so it works when the server is full
            with psycopg.connect(self.admin_url, autocommit=True, application_name="tpdb-sampler") as conn:
                while not self.stop_event.is_set():
                    params = (self.dbname,) if "%s" not in self.filter else (self.app_name, self.dbname)
                    row = conn.execute(
                        f"SELECT (SELECT count(*) FROM pg_stat_activity WHERE {self.filter}),"
                        " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                        "  AND pid <> pg_backend_pid()),"
                        " (SELECT sessions FROM pg_stat_database WHERE datname = %s)",
                        params,
                    ).fetchone()
                    assert row is not None
                    self.samples.append({"t": round(time.monotonic() - self.t0, 2), "app_conns": row[0],
                                         "all_conns": row[1], "sessions": row[2] or 0})  # fmt: skip
                    self.stop_event.wait(SAMPLE_EVERY)
        except Exception as e:  # the report says the samples are missing rather than dying
            print(f"sampler stopped: {type(e).__name__}: {e}", file=sys.stderr)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


def _aggregated(path: Path) -> dict[str, str] | None:
    try:
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    except (OSError, csv.Error):
        return None
    return rows[-1] if rows else None


def _num(row: dict[str, str] | None, key: str) -> float:
    try:
        return float(row[key]) if row and row.get(key) not in (None, "", "N/A") else 0.0
    except ValueError:
        return 0.0


def run_locust(bases: list[str], mode: str, args: argparse.Namespace, out: Path, sampler: Sampler,
               tag: str | None = None) -> dict[str, float]:  # fmt: skip
    """Run one Locust phase with live progress (a line a second from the first one; plain
    lines, not carriage returns, when stdout is no terminal); return the last CPU snapshot
    taken while Locust was still alive (an ended process's time is charged to its parent)."""
    tag = tag or mode
    prefix = out / tag
    base = bases[0]
    env = {**os.environ, "TPDB_MODE": "pooled" if mode == "pgbouncer" else mode, "TPDB_MIX": args.mix,
           "TPDB_HOSTS": ",".join(bases) if len(bases) > 1 else ""}  # fmt: skip
    cmd = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
           "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.duration}s", "--host", base,
           "--csv", str(prefix), "--csv-full-history", "--only-summary", "--loglevel", "WARNING",
           "--stop-timeout", "5"]  # fmt: skip
    with (out / f"{tag}_locust.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()
        last_cpu = cpu.snapshot()
        try:
            limit = args.duration + 60
            shown: object = None  # what the last printed line said (its figures, not its time)
            while proc.poll() is None:
                last_cpu = cpu.snapshot()
                elapsed = time.monotonic() - t0
                if elapsed > limit:
                    raise RuntimeError(f"locust did not finish within {limit} s")
                line, says = _progress_line(tag, prefix, sampler, elapsed, args.duration, args.users)
                if says != shown:  # only figures that changed (Locust refreshes its CSV every few s)
                    _progress(line)
                    shown = says
                time.sleep(1.0)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            _progress("", end="\n")
    return last_cpu


def _progress_line(tag: str, prefix: Path, sampler: Sampler, elapsed: float, duration: int,
                   users: int) -> tuple[str, object]:  # fmt: skip
    """The progress line now, and what it says apart from the clock: "warming up" until Locust
    has written a first non-zero figure, "stopping" past the phase's length, else the figures."""
    head = f"[{tag:>11}]"
    if elapsed >= duration:
        return f"{head} {duration} s done: Locust is stopping its users", "stopping"
    hist = _history(prefix)
    last = hist[-1] if hist else None
    if last is None or last["rps"] <= 0:
        return f"{head} warming up: {users} users starting, no figures yet", "warming"
    ok = round(last["rps"] - last["fps"], 1)
    errors = _num(_aggregated(Path(f"{prefix}_stats_history.csv")), "Total Failure Count")
    conns = sampler.samples[-1]["all_conns"] if sampler.samples else 0
    figures = (ok, errors)
    return (
        f"{head} {elapsed:4.0f}/{duration} s  {ok:7.1f} ok req/s  errors {errors:6.0f}  server conns {conns:3.0f}"
    ), figures


_tty = sys.stdout.isatty()


def _progress(text: str, end: str = "") -> None:
    if _tty:
        print("\r" + text.ljust(79), end=end, flush=True)
    elif text:
        print(text, flush=True)


def _history(prefix: Path) -> list[dict[str, float]]:
    """Per-second points of a phase. Rates come from the cumulative counts (Locust's own
    per-row rate lags behind on a sliding window); percentiles are Locust's 10 s window."""
    path = Path(f"{prefix}_stats_history.csv")
    if not path.exists():
        return []
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    out: list[dict[str, float]] = []
    prev = None
    for r in rows:
        t, n, nf = float(r["Timestamp"]), _num(r, "Total Request Count"), _num(r, "Total Failure Count")
        if prev is not None and t > prev[0]:
            dt = t - prev[0]
            out.append({"t": t - float(rows[0]["Timestamp"]), "rps": (n - prev[1]) / dt, "fps": (nf - prev[2]) / dt,
                        "p50": _num(r, "50%"), "p95": _num(r, "95%"), "p99": _num(r, "99%"),
                        "users": _num(r, "User Count")})  # fmt: skip
        prev = (t, n, nf)
    return out


def _server_limits(admin_url: str) -> dict[str, int]:
    """max_connections, the slots reserved for superusers (and reserved_connections), and so
    where PostgreSQL starts refusing ordinary roles."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        mc = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        row = conn.execute("SELECT coalesce(sum(setting::int), 0) FROM pg_settings WHERE name IN "
                           "('superuser_reserved_connections', 'reserved_connections')").fetchone()  # fmt: skip
    reserved = int(row[0]) if row else 0
    return {"max_connections": mc, "reserved": reserved, "refusal_line": mc - reserved}


def _workers_now(base: str) -> list[dict[str, Any]]:
    """Every worker's published document (stats, request times) from the dashboard feed."""
    import urllib.request

    try:
        with urllib.request.urlopen(base + "/api/dashboard", timeout=5) as r:
            return list(json.loads(r.read())["workers"])
    except Exception:
        return []


def _advice(base: str, workers: int) -> dict[str, Any]:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base}/pool/advice?workers={workers}", timeout=10) as r:
            return dict(json.loads(r.read()))
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def _refusals(path: Path) -> dict[str, int]:
    """Failures by cause from Locust's failures CSV: "refused 53300: too many clients"
    (the demo's 503 body, see load/locustfile.py) or "503 database busy"."""
    out: dict[str, int] = {}
    try:
        with path.open() as f:
            for r in csv.DictReader(f):
                err = (r.get("Error") or "").strip()
                for prefix in ("CatchResponseError(", "'", '"'):
                    err = err.removeprefix(prefix)
                err = err.rstrip(")'\"")
                out[err] = out.get(err, 0) + int(_num(r, "Occurrences"))
    except (OSError, csv.Error):
        pass
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def run_phase(mode: str, url: str, admin_url: str, dbname: str, args: argparse.Namespace, out: Path,
              max_size: int | None = None, duration: int | None = None, tag: str | None = None) -> Phase:  # fmt: skip
    """One phase: its gunicorn instance(s), Locust, the sampler; then the figures. ``tag``
    names the phase's files and row when one mode runs twice (the recommended size)."""
    max_size = max_size or args.max_size
    tag = tag or mode
    args = argparse.Namespace(**{**vars(args), "duration": duration or args.duration})
    phase = Phase(tag, label=f"{tag}" + (f", max_size {max_size}" if mode != "per-request" else ""),
                  max_size=max_size if mode != "per-request" else 0)  # fmt: skip
    hosts = HOSTS_VIA_PGBOUNCER if mode == "pgbouncer" else 1
    with contextlib.ExitStack() as stack:
        bases = []
        for h in range(hosts):
            env = {"TPDB_POOL_TIMEOUT": str(args.pool_timeout), "TPDB_STATS_DIR": str(out / f"{tag}_workers{h}"),
                   "GUNICORN_WORKER_CONNECTIONS": str(args.worker_connections or args.threads * 2),
                   "TPDB_CAPTURE_STACKS": "sampled"}  # fmt: skip
            glog = stack.enter_context((out / f"{tag}_gunicorn{h}.log").open("wb"))
            bases.append(stack.enter_context(run_gunicorn(url, workers=args.workers, threads=args.threads,
                                                          max_size=max_size, env=env, log=glog)))  # fmt: skip
        sampler = Sampler(admin_url, APP_NAMES[mode], dbname, by_user=mode == "pgbouncer")
        sampler.start()
        before = cpu.snapshot()
        try:
            phase.cpu = cpu.shares(before, run_locust(bases, mode, args, out, sampler, tag))
            docs = [d for b in bases for d in _workers_now(b)]
            for key in ("app", "pool_wait"):
                merged = latency.summary([d.get("request_times", {}).get(key, {}) for d in docs])
                if merged:
                    phase.request_times[key] = merged
            if mode != "per-request":
                stats = [d["stats"] for d in docs]
                phase.pool_stats = stats
                phase.clients = sum(int(s.get("size", 0)) for s in stats)
                phase.advice = _advice(bases[0], args.workers * hosts)
        finally:
            sampler.stop()
    agg = _aggregated(out / f"{tag}_stats.csv")
    phase.rps = round(_num(agg, "Requests/s"), 1)
    phase.p50, phase.p95, phase.p99 = (_num(agg, k) for k in ("50%", "95%", "99%"))
    phase.max_ms = _num(agg, "Max Response Time")
    phase.requests, phase.failures = int(_num(agg, "Request Count")), int(_num(agg, "Failure Count"))
    if phase.requests:
        phase.ok_rps = round(phase.rps * (phase.requests - phase.failures) / phase.requests, 1)
    phase.samples = sampler.samples
    phase.peak_conns = int(max((s["all_conns"] for s in sampler.samples), default=0))
    phase.peak_app_conns = int(max((s["app_conns"] for s in sampler.samples), default=0))
    if len(sampler.samples) >= 2:
        phase.conns_opened = int(sampler.samples[-1]["sessions"] - sampler.samples[0]["sessions"])
    phase.history = _history(out / tag)
    phase.refusals = _refusals(out / f"{tag}_failures.csv")
    return phase


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m load.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--users", type=int, default=150, help="Locust users, more than max_connections (150)")
    ap.add_argument("--spawn-rate", type=float, default=75, help="users started per second (75)")
    ap.add_argument("--duration", type=int, default=45, help="seconds per phase (45)")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    ap.add_argument("--threads", type=int, default=48, help="gthread threads per worker (48)")
    ap.add_argument("--worker-connections", type=int, default=0, help="gunicorn worker_connections (threads x 2)")
    ap.add_argument("--max-size", type=int, default=8, help="pool max_size per worker (8)")
    ap.add_argument("--pool-timeout", type=float, default=10.0, help="pool borrow timeout, s (10)")
    ap.add_argument("--max-connections", type=int, default=50, help="PostgreSQL max_connections (50)")
    ap.add_argument("--mix", default="read:80,write:15,slow:5", help="op weights (read:80,write:15,slow:5)")
    ap.add_argument(
        "--recommended-duration",
        type=int,
        default=20,
        help="seconds of a third phase, pooled at the advisor's recommended max_size (20; 0: skip)",
    )
    ap.add_argument("--modes", default="per-request,pooled", help="phases to run, in order (per-request,pooled)")
    ap.add_argument("--via-pgbouncer", action="store_true",
                    help=f"also run the pooled routes on {HOSTS_VIA_PGBOUNCER} gunicorn instances (stand-ins for "
                         "hosts) through one PgBouncer in transaction mode")  # fmt: skip
    ap.add_argument("--bouncer-pool-size", type=int, default=10, help="PgBouncer default_pool_size (10)")
    ap.add_argument("--out", default=str(HERE / "results"), help="parent folder of the results")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.via_pgbouncer and "pgbouncer" not in modes:
        modes.append("pgbouncer")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"unknown mode(s): {', '.join(bad)}")
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    phases: list[Phase] = []
    # SIGTERM and SIGHUP unwind like Ctrl-C: every finally block stops what it started
    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_on_signals())
        url, pg = stack.enter_context(database({"max_connections": args.max_connections}))
        if pg is None:
            admin_url, server_note = url, "DATABASE_URL"
        else:
            admin_url = pg.admin_url
            server_note = f"embedded PostgreSQL 127.0.0.1:{pg.port}, max_connections={args.max_connections}"
        dbname = psycopg.conninfo.conninfo_to_dict(url).get("dbname") or "postgres"
        bouncer_url = None
        if "pgbouncer" in modes:
            if pg is None:
                raise SystemExit("--via-pgbouncer starts its own PgBouncer in front of the embedded server: "
                                 "unset DATABASE_URL")  # fmt: skip
            bouncer = stack.enter_context(PgBouncer(pg, default_pool_size=args.bouncer_pool_size))
            bouncer_url = bouncer.url(flag=True)
            server_note += (f"; PgBouncer 127.0.0.1:{bouncer.port}, transaction mode, "
                            f"default_pool_size={args.bouncer_pool_size}")  # fmt: skip
        print(
            f"threadpool_db comparison: {server_note}; gunicorn gthread {args.workers} workers x {args.threads}"
            f" threads; pool max_size {args.max_size}/worker; locust {args.users} users, {args.duration} s/phase"
        )
        from demo_app.schema import ensure_schema

        ensure_schema(url)
        limits = _server_limits(admin_url)
        try:
            for mode in modes:
                phase_url = bouncer_url if mode == "pgbouncer" else url
                phases.append(run_phase(mode, phase_url, admin_url, dbname, args, out))  # type: ignore[arg-type]
                rec = phases[-1].advice.get("recommended_max_size") if mode == "pooled" else None
                if rec and args.recommended_duration > 0:
                    # the advisor's size, tried: a short pooled phase at it, same load
                    phases.append(run_phase("pooled", url, admin_url, dbname, args, out, max_size=int(rec),
                                            duration=args.recommended_duration, tag="recommended"))  # fmt: skip
        except (KeyboardInterrupt, Stopped):
            print("\ninterrupted: stopping everything")
            if not phases:
                return 130
    meta = {"args": vars(args), "server": server_note, "cores": os.cpu_count(), "python": sys.version.split()[0],
            **(limits if phases else {})}  # fmt: skip
    (out / "results.json").write_text(json.dumps({"meta": meta, "phases": [asdict(p) for p in phases]}, indent=2))
    table = report.write(out, phases, meta)
    print(table)
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
