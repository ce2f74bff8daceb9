"""Django's own test suite, run twice: with Django's PostgreSQL ENGINE pooled by psycopg_pool
(``OPTIONS={"pool": True}``) and with ours (``threadpool_db.django``), on the same server, and
compared. Exits non-zero when a test passes with the built-in ENGINE and not with ours, unless
it is in KNOWN below with its reason.

    python tests/upstream/run_django.py [--sdist Django-5.2.x.tar.gz] [--parallel 2] [apps...]

Without ``--sdist`` (or ``DJANGO_SDIST``) it downloads the sdist of the installed Django's
version (``pip download --no-binary :all: --no-deps``) into a temporary folder; the sdist
ships ``tests/runtests.py``. Nothing of Django's is kept: the folder goes when the run ends.
The server is the one every launcher of ours uses (``threadpool_db.embedded.database()``):
DATABASE_URL if set (its role must be allowed to create databases), else an embedded one.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]

# Backends, transactions and the ORM's common paths: a few minutes on 2 cores. (Not
# postgres_tests nor db_functions: their migrations need extensions, pgcrypto and others, that
# the embedded server does not ship.)
APPS = [
    "backends", "transactions", "transaction_hooks", "basic", "queries", "model_fields", "select_for_update",
    "get_or_create", "bulk_create", "update", "delete", "timezones", "expressions", "aggregation",
    "lookup", "many_to_one", "one_to_one", "m2m_regress", "ordering", "raw_query", "custom_lookups", "indexes",
    "constraints", "schema", "migrations", "introspection", "test_utils", "fixtures", "serializers",
    "model_inheritance",
]  # fmt: skip

# Tests that pass with the built-in ENGINE and not with ours, on purpose; each with its reason.
# Keys are "module.Class.test".
KNOWN = {
    "backends.postgresql.tests.Tests.test_connect_pool": (
        "it expects psycopg_pool.PoolTimeout; ours is threadpool_db.PoolTimeout (a psycopg.OperationalError, "
        "not psycopg_pool's class)"
    ),
    "backends.postgresql.tests.Tests.test_pooling_health_checks": (
        "it reads psycopg_pool's private pool._check; ours keeps the check rule in pool.config.checks.check "
        "(tests/test_django.py checks CONN_HEALTH_CHECKS maps to it)"
    ),
}

# "test_x (module.Class.test_x) ... ok" (Python 3.11; 3.10 prints "(module.Class)"); a warning
# a test logs may come between the name and the outcome, so outcomes of failures are read from
# the headers of the report at the end instead ("ERROR: test_x (module.Class.test_x)").
# Tests that time themselves, nothing to do with the database: on a loaded 2-core machine they
# fail now and then with either ENGINE, so they are not compared.
TIMING = {
    "serializers.test_deserialization.TestDeserializer.test_crafted_xml_performance": (
        "times the XML deserializer (no database); fails under load with either ENGINE"
    ),
}

_LINE = re.compile(
    r"^(?P<name>\w+) \((?P<where>[\w.]+)\)(?:\n[^\n]*?)? \.\.\. (?P<outcome>ok|skipped|expected failure)", re.MULTILINE
)
_FAILED = re.compile(r"^(?P<outcome>ERROR|FAIL|UNEXPECTED SUCCESS): (?P<name>\w+) \((?P<where>[\w.]+)\)(?: \[.*\])?$",
                     re.MULTILINE)  # fmt: skip
FAILED = ("ERROR", "FAIL", "UNEXPECTED SUCCESS")


def _key(m: re.Match[str]) -> str:
    return m["where"] if m["where"].endswith("." + m["name"]) else f"{m['where']}.{m['name']}"


def _settings(engine: str, url: str, tag: str, extra_options: dict[str, object] | None = None) -> str:
    parts = urlsplit(url)
    db = {
        "ENGINE": engine,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname,
        "PORT": parts.port,
        "OPTIONS": {"pool": True, **(extra_options or {})},
    }
    return "\n".join([
        f"DATABASES = {{'default': {{**{db!r}, 'NAME': 'django_{tag}', 'TEST': {{'NAME': 'test_django_{tag}'}}}},",
        f"             'other': {{**{db!r}, 'NAME': 'django_{tag}_other',",
        f"                        'TEST': {{'NAME': 'test_django_{tag}_other'}}}}}}",
        "SECRET_KEY = 'django_tests_secret_key'",
        "PASSWORD_HASHERS = ['django.contrib.auth.hashers.MD5PasswordHasher']",
        "DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'",
        "USE_TZ = False",
        "",
    ])  # fmt: skip


def _add_icu_collation(template_url: str) -> None:
    """Django's PostgreSQL features name the collation "sv-x-icu" for its collation tests, and
    model_fields' models use it, so without it the test database cannot even be made. The
    embedded server has no ICU: there it is a copy of "C" (the tests of Swedish ordering then
    fail alike with both ENGINEs, which the comparison allows). Made in template1, which the
    test databases copy."""
    import psycopg

    with psycopg.connect(template_url, autocommit=True) as conn:
        try:
            conn.execute("CREATE COLLATION IF NOT EXISTS \"sv-x-icu\" (provider = icu, locale = 'sv')")
        except psycopg.errors.FeatureNotSupported:
            conn.execute('CREATE COLLATION IF NOT EXISTS "sv-x-icu" FROM "C"')
            print("note: no ICU in this server: collation sv-x-icu is a copy of C", flush=True)


def _download(into: Path) -> Path:
    import django

    version = django.get_version()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps", "-d",
                    str(into), f"django=={version}"], check=True)  # fmt: skip
    return next(into.glob("[Dd]jango-*.tar.gz"))


def _unpack(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    return next(p for p in into.iterdir() if (p / "tests" / "runtests.py").exists())


def _run(tree: Path, engine: str, tag: str, url: str, apps: list[str], parallel: int, log: Path,
         extra_options: dict[str, object] | None = None) -> dict[str, str]:  # fmt: skip
    tests = tree / "tests"
    (tests / f"settings_{tag}.py").write_text(_settings(engine, url, tag, extra_options))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tests)])}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    cmd = [sys.executable, "runtests.py", f"--settings=settings_{tag}", f"--parallel={parallel}", "-v", "2",
           "--noinput", *apps]  # fmt: skip
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=tests, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=3600)
    text = log.read_text(errors="replace")
    results = {_key(m): m["outcome"] for m in _LINE.finditer(text)}
    results.update({_key(m): m["outcome"] for m in _FAILED.finditer(text)})
    summary = re.findall(r"^(Ran \d+ tests? in [\d.]+s|OK.*|FAILED \(.*\))$", text, re.MULTILINE)
    print(f"{engine}: exit {proc.returncode}, {len(results)} results parsed in {time.monotonic() - started:.0f} s; "
          f"{' '.join(summary[-2:])}", flush=True)  # fmt: skip
    if not results or not re.search(r"^Ran \d+ test", text, re.MULTILINE):
        print(text[-4000:], file=sys.stderr)
        raise SystemExit(f"{engine}: runtests.py did not run to its end (see above)")
    return results


def _count(results: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for outcome in results.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("apps", nargs="*", default=APPS, help="Django test labels (default: a backend/ORM set)")
    parser.add_argument("--sdist", default=os.environ.get("DJANGO_SDIST"), help="Django's sdist (.tar.gz)")
    # 1: with forked workers (--parallel 2) the built-in pooled ENGINE breaks before the first
    # test ("received 2 results from command 'BEGIN'": inherited sockets, Django ticket #36957)
    parser.add_argument("--parallel", type=int, default=1, help="runtests.py --parallel (default 1)")
    parser.add_argument("--release-after-query", action="store_true",
                        help="run ours with OPTIONS['release_after_query'] (the opt-in) as well")  # fmt: skip
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the two runtests.py logs here")
    args = parser.parse_args()
    from threadpool_db.embedded import database

    with tempfile.TemporaryDirectory(prefix="tpdb-django-suite-") as tmp:
        work = Path(tmp)
        sdist = Path(args.sdist) if args.sdist else _download(work)
        tree = _unpack(sdist, work)
        with database({"max_connections": 200}) as (url, server):
            admin = server.admin_url if server is not None else url  # the suite creates databases
            if server is not None:
                _add_icu_collation(server.url("postgres", "template1"))
            runs = {}
            for engine, tag in (("django.db.backends.postgresql", "builtin"), ("threadpool_db.django", "ours")):
                runs[tag] = _run(tree, engine, tag, admin, args.apps, args.parallel, work / f"{tag}.log")
            if args.release_after_query:
                runs["release"] = _run(tree, "threadpool_db.django", "release", admin, args.apps, args.parallel,
                                       work / "release.log", {"release_after_query": True})  # fmt: skip
        if args.keep_logs:
            Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
            for tag in runs:
                (Path(args.keep_logs) / f"django-{tag}.log").write_text((work / f"{tag}.log").read_text())
    builtin, ours = runs["builtin"], runs["ours"]
    print(f"built-in ENGINE (psycopg_pool): {len(builtin)} tests: {_count(builtin)}")
    print(f"threadpool_db.django:           {len(ours)} tests: {_count(ours)}")
    if "release" in runs:  # for information: the opt-in changes what a "connection" is between queries
        release = runs["release"]
        print(f"... with release_after_query: {len(release)} tests: {_count(release)}")
        for t in sorted(t for t, o in release.items() if o in FAILED and ours.get(t, "ok") not in FAILED):
            print(f"fails only with release_after_query: {t}: {release[t]}")
    # worse: failed with ours, and neither failed nor was skipped with the built-in ENGINE
    worse = sorted(t for t, o in ours.items() if o in FAILED and builtin.get(t, "ok") not in (*FAILED, "skipped"))
    better = sorted(t for t, o in builtin.items() if o in FAILED and ours.get(t, "ok") not in (*FAILED, "skipped"))
    for t in [t for t in worse if t in TIMING]:
        print(f"not compared: {t}: {ours[t]} ({TIMING[t]})")
    worse = [t for t in worse if t not in TIMING]
    known = [t for t in worse if t in KNOWN]
    unexplained = [t for t in worse if t not in KNOWN]
    for t in known:
        print(f"known difference: {t}: {ours[t]} ({KNOWN[t]})")
    for t in better:
        print(f"fails only with the built-in ENGINE: {t} ({builtin[t]})")
    for t in unexplained:
        print(f"REGRESSION: {t}: {builtin.get(t, 'ok')} with the built-in ENGINE, {ours[t]} with ours")
    stale = sorted(set(KNOWN) - set(known))
    for t in stale:
        print(f"note: known difference {t} did not differ in this run")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
