"""FairQueuePool with SQLAlchemy 2.0 too: the same test module (tests/test_sqlalchemy.py) in a
child pytest whose import path puts SQLAlchemy 2.0 ahead of the 2.1 the virtualenv has."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fair_queue_pool_passes_its_tests_with_sqlalchemy_2_0(pg, tmp_path):
    target = tmp_path / "sqlalchemy-2.0"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                          "--target", str(target), "sqlalchemy>=2.0,<2.1"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-2000:]
    env = {**os.environ, "DATABASE_URL": pg.url, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    version = subprocess.run([sys.executable, "-c", "import sqlalchemy; print(sqlalchemy.__version__)"],
                             env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert version.stdout.startswith("2.0."), version.stdout + version.stderr
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          "tests/test_sqlalchemy.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout
