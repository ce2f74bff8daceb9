"""The README and docs/ tell the truth: every code block in them runs, as a user would copy it,
against the test server (DATABASE_URL), unless the line before it is ``<!-- fragment -->``
(parameter listings, shell commands, log output, snippets that need a variable from around
them). Each runnable block names the extras it needs on its first line (``# extras: flask``,
or ``none``), and its imports must be covered by them: an example that needs prometheus-client
must say ``metrics``. The README stays a front door, and its links lead somewhere."""

from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from .helpers import parse_python

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_EXTRAS_LINE = re.compile(r"^# extras: (.+)$")


def _blocks(page: Path) -> list[tuple[int, str, str, bool]]:
    """(line, language, code, is_fragment) of every fenced block of ``page``."""
    text = page.read_text()
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        out.append((line, m.group(1), m.group(2), before == "<!-- fragment -->"))
    return out


def _runnable() -> list[tuple[str, int, str]]:
    return [(page.name if page.parent == ROOT else f"docs/{page.name}", line, code)
            for page in PAGES for line, _lang, code, fragment in _blocks(page) if not fragment]  # fmt: skip


def _extras() -> dict[str, set[str]]:
    """setup.cfg's extras (and "none": install_requires), as normalized distribution names."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")

    def names(value: str) -> set[str]:
        return {_norm(re.split(r"[<>=!~\[;\s]", x.strip())[0]) for x in value.splitlines() if x.strip()}

    out = {k: names(v) for k, v in cfg["options.extras_require"].items()}
    out["none"] = names(cfg["options"]["install_requires"])
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported(tree: ast.AST) -> set[str]:
    """Every module a piece of code imports by absolute name (``from a.b import c``: a.b)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # from a namespace: its modules
    return found


def _distributions_of(module: str) -> set[str]:
    """The distributions that provide ``module``: by its top-level name, or, where several
    share a namespace (opentelemetry-api, -sdk, ...), the one whose files hold the module."""
    import importlib.util
    from importlib.metadata import distribution

    candidates = packages_distributions().get(module.split(".")[0], [])
    if len(candidates) <= 1:
        return {_norm(d) for d in candidates} or {_norm(module.split(".")[0])}
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a name imported from a module, not a module
        return set()
    if spec is None or not spec.origin or spec.origin == "namespace":
        return set()  # a namespace package itself: the modules imported from it say whose
    origin = Path(spec.origin).resolve()
    for name in candidates:
        files = distribution(name).files or []
        if any(Path(distribution(name).locate_file(f)).resolve() == origin for f in files):
            return {_norm(name)}
    return {_norm(d) for d in candidates}


def _needed(code: str) -> set[str]:
    """The distributions a block needs: what it imports, and what the threadpool_db modules it
    imports import in turn (threadpool_db.metrics needs prometheus-client)."""
    needed: set[str] = set()
    seen: set[str] = set()
    todo = [parse_python(code)]
    while todo:
        tree = todo.pop()
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            for mod in modules:
                if mod.startswith("threadpool_db") and mod not in seen:
                    seen.add(mod)
                    path = ROOT / (mod.replace(".", "/") + ".py")
                    if path.is_file():
                        todo.append(parse_python(path.read_text()))
        for module in _imported(tree):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "threadpool_db":
                continue
            needed |= _distributions_of(module)
    return needed


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for heading in ("## The two commands", "## Install", "## Quick start", "## Flask", "## Coming from psycopg_pool",
                    "## Leak detection", "## More"):  # fmt: skip
        assert heading in text, heading
    # the install command that works comes first: from a clone, not from PyPI
    first_pip = next(line for line in text.splitlines() if "pip install" in line)
    assert "pip install -e '." in first_pip, first_pip


def test_every_link_to_a_page_leads_somewhere():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).resolve().is_file(), f"{page.name} links to missing {target}"


def test_every_block_is_python_or_marked_as_a_fragment():
    bad = [f"{page.name}:{line}: ```{lang}" for page in PAGES for line, lang, _c, fragment in _blocks(page)
           if not fragment and lang != "python"]  # fmt: skip
    assert not bad, "blocks that would not run, and are not marked <!-- fragment -->: " + ", ".join(bad)
    assert len(_runnable()) >= 10, "the docs lost their runnable examples"


def test_the_extras_named_in_install_commands_exist():
    known = set(_extras())
    for page in PAGES:
        for group in re.findall(r"pip install -e '\.\[([^\]]+)\]'", page.read_text()):
            assert set(group.split(",")) <= known, (page.name, group)


@pytest.mark.parametrize("where", [f"{p}:{n}" for p, n, _ in _runnable()])
def test_each_example_names_extras_that_cover_its_imports(where):
    code = next(c for p, n, c in _runnable() if f"{p}:{n}" == where)
    first = code.splitlines()[0]
    m = _EXTRAS_LINE.match(first)
    assert m, f"{where}: the first line must name the extras it needs, like '# extras: flask' or '# extras: none'"
    extras = _extras()
    named = [x.strip() for x in m.group(1).split(",")]
    assert set(named) <= set(extras), f"{where}: unknown extras {named}"
    covered = extras["none"].union(*(extras[x] for x in named))
    missing = _needed(code) - covered
    assert not missing, f"{where}: imports need {sorted(missing)}, which '# extras: {m.group(1)}' does not install"


def test_the_extras_check_catches_an_uncovered_import():
    code = "# extras: none\nfrom threadpool_db.metrics import PoolMetrics\n"
    assert "prometheus-client" in _needed(code) - _extras()["none"]
    assert "flask" in _needed("import flask\n")
    # a namespace shared by several distributions: the module's own one counts
    assert _needed("from threadpool_db.otel import instrument\n") == {"opentelemetry-api"}
    sdk = _needed("from opentelemetry.sdk.metrics import MeterProvider\n")
    assert "opentelemetry-sdk" in sdk and not sdk <= _extras()["otel"]


@pytest.mark.parametrize("where", [f"{p}:{n}" for p, n, _ in _runnable()])
def test_each_example_runs(where, pg, tmp_path):
    code = next(c for p, n, c in _runnable() if f"{p}:{n}" == where)
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {"DATABASE_URL": pg.url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, f"{where} failed:\n{proc.stderr[-3000:]}"
