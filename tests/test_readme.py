"""The README is the front door: every Python block in it runs, as a user would copy it,
against the test server (DATABASE_URL). Only blocks marked ``<!-- fragment -->`` on the line
before them are skipped: parameter listings and snippets that need a variable from around them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[int, str, bool]]:
    text = README.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        out.append((line, m.group(1), before == "<!-- fragment -->"))
    return out


def test_the_readme_has_runnable_examples_and_few_fragments():
    blocks = _blocks()
    runnable = [b for b in blocks if not b[2]]
    assert len(runnable) >= 6, "the README lost its runnable examples"
    assert len(runnable) > len(blocks) - len(runnable) - 4


@pytest.mark.parametrize("line", [b[0] for b in _blocks() if not b[2]], ids=lambda n: f"README.md:{n}")
def test_readme_block_runs(line, pg, tmp_path):
    code = next(c for n, c, _ in _blocks() if n == line)
    script = tmp_path / f"readme_{line}.py"
    script.write_text(code)
    env = {"DATABASE_URL": pg.url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(README.parent)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, f"README.md line {line} failed:\n{proc.stderr[-3000:]}"
