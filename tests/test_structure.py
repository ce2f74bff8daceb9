"""The core's shape, checked: only pool.py touches the pool's private state, services talk to
it through their seams, and demo_app/ and load/ import no private names of the library."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .helpers import parse_python

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "threadpool_db"


def _pool_privates() -> set[str]:
    """Every private attribute ConnectionPool sets on itself, and its private methods."""
    tree = parse_python((PKG / "pool.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ConnectionPool")
    names = {f.name for f in cls.body if isinstance(f, ast.FunctionDef) and f.name.startswith("_")
             and not f.name.startswith("__")}  # fmt: skip
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self" \
                and node.attr.startswith("_") and not node.attr.startswith("__") \
                and isinstance(node.ctx, ast.Store):  # fmt: skip
            names.add(node.attr)
    return names


def _seam_names() -> set[str]:
    """The methods the services' Protocols declare (Growing, Sweepable, LeaseTable, Granter …):
    private on the pool, so no user takes them for API, and the one way a service reaches it."""
    seams: set[str] = set()
    for path in PKG.rglob("*.py"):
        for node in ast.walk(parse_python(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                (isinstance(b, ast.Name) and b.id == "Protocol")
                or (isinstance(b, ast.Attribute) and b.attr == "Protocol")
                for b in node.bases
            ):
                seams |= {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
    return seams


def _touches(path: Path, private: set[str]) -> list[str]:
    """``x._name`` with ``_name`` one of the pool's privates, on anything but ``self``."""
    out = []
    for node in ast.walk(parse_python(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in private:
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    return out


def test_the_check_finds_what_it_looks_for():
    private = _pool_privates()
    assert {"_lock", "_idle", "_waiting", "_all", "_nconns", "_hand_over_locked", "_create_one"} <= private


def test_no_module_but_pool_py_touches_the_pools_private_state():
    """... but through a seam a service's Protocol declares."""
    seams = _seam_names()
    assert {"_admit", "_attempt_failed", "_leased", "_begin_round"} <= seams
    private = _pool_privates() - seams
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        if path == PKG / "pool.py":
            continue
        offenders += _touches(path, private)
    for folder in ("demo_app", "load"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            offenders += _touches(path, private)
    assert not offenders, "private state of ConnectionPool used outside pool.py:\n" + "\n".join(offenders)


def test_no_mixins_the_pool_is_one_class():
    tree = parse_python((PKG / "pool.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ConnectionPool")
    assert cls.bases == []


def test_demo_and_load_import_no_private_names_of_the_library():
    bad = []
    for folder in ("demo_app", "load"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(parse_python(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("threadpool_db"):
                    bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {a.name}" for a in node.names
                            if a.name.startswith("_")]  # fmt: skip
                    if any(part.startswith("_") for part in (node.module or "").split(".")):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}")
    assert not bad, bad


def test_the_configuration_defaults_are_the_constructors():
    """ConnectionPool's signature and PoolConfig.build state the defaults twice (the public
    face, and the validation FlaskPool uses): they must not drift apart."""
    import inspect

    from threadpool_db import ConnectionPool
    from threadpool_db.config import PoolConfig

    pool = {n: p.default for n, p in inspect.signature(ConnectionPool).parameters.items()}
    cfg = {n: p.default for n, p in inspect.signature(PoolConfig.build).parameters.items()}
    shared = set(pool) & set(cfg)
    assert len(shared) >= 30
    assert {n: (pool[n], cfg[n]) for n in shared if pool[n] != cfg[n]} == {}


_LOCK_MAKERS = {"Lock", "RLock", "Condition"}


def _lock_fields(cls: ast.ClassDef) -> set[str]:
    """The fields a class sets to a lock of its own: ``self._x = threading.Lock()`` (RLock,
    Condition too) anywhere in its methods."""
    out: set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            made = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if made in _LOCK_MAKERS:
                out |= {t.attr for t in node.targets if isinstance(t, ast.Attribute)
                        and isinstance(t.value, ast.Name) and t.value.id == "self"}  # fmt: skip
    return out


def _self_fields(node: ast.AST) -> list[str]:
    """``self.x`` targets of an assignment (tuple targets unpacked)."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return [node.attr]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [f for elt in node.elts for f in _self_fields(elt)]
    return []


def _reads_field(expr: ast.AST, field: str) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == field and isinstance(n.value, ast.Name)
               and n.value.id == "self" for n in ast.walk(expr))  # fmt: skip


def _inherited_locks(classes: dict[str, ast.ClassDef], name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The lock fields of class ``name`` and of its bases found among ``classes`` (by name)."""
    cls = classes.get(name)
    if cls is None or name in seen:
        return set()
    out = _lock_fields(cls)
    for base in cls.bases:
        base_name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        out |= _inherited_locks(classes, base_name, seen | {name})
    return out


def _unguarded_updates(source: str, path: str = "", known: dict[str, ast.ClassDef] | None = None) -> list[str]:
    """In every class that owns a lock (or inherits one from a class in ``known``, by name): a
    read-modify-write of its own fields, ``self._x += ...`` or ``self._x = f(self._x ...)``,
    that sits neither inside a ``with self.<one of its locks>:`` block nor in a ``*_locked``
    method (whose callers hold it), nor in ``__init__`` (before the object is shared). Under the
    GIL a timing test cannot catch a read-modify-write moved out of the lock; this reads where
    each one stands."""
    tree = parse_python(source)
    out: list[str] = []
    here = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    classes = {**(known or {}), **here}
    for cls in here.values():
        locks = _inherited_locks(classes, cls.name)
        if not locks:
            continue
        guards = {f"self.{name}" for name in locks}

        def holds_lock(node: ast.With, guards: set[str] = guards) -> bool:
            return any(ast.unparse(item.context_expr) in guards for item in node.items)

        def visit(node: ast.AST, locked: bool, method: str, cls: ast.ClassDef = cls) -> None:
            fields: list[str] = []
            if isinstance(node, ast.AugAssign):
                fields = _self_fields(node.target)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                fields = [f for t in targets for f in _self_fields(t) if _reads_field(node.value, f)]
            if not locked:
                out.extend(f"{path}{cls.name}.{method}:{node.lineno}: self.{f}" for f in fields)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                    continue  # a nested function runs later, under whatever lock its caller holds
                visit(child, locked or (isinstance(node, ast.With) and holds_lock(node)), method)

        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef) and fn.name != "__init__":
                visit(fn, fn.name.endswith("_locked"), fn.name)
    return out


def test_the_lock_check_finds_an_update_outside_the_lock():
    planted = (
        "import threading\n"
        "class ConnectionPool:\n"
        "    def __init__(self):\n"
        "        self._lock = threading.Lock()\n"
        "        self._borrows = self._borrows_before = 0\n"
        "    def putconn(self, held):\n"
        "        self._usage_sum += held\n"
        "        with self._lock:\n"
        "            self._borrows += 1\n"
        "    def _give_locked(self):\n"
        "        self._borrows += 1\n"
    )
    assert _unguarded_updates(planted) == ["ConnectionPool.putconn:7: self._usage_sum"]


def test_the_lock_check_finds_a_plain_assignment_that_reads_what_it_writes():
    planted = (
        "from threading import Condition, Lock\n"
        "class Detector:\n"
        "    def __init__(self):\n"
        "        self._cond = Condition(Lock())\n"
        "    def saw(self, held):\n"
        "        self.nested = self.nested + 1\n"
        "        self._usage_sum, self.other = max(self._usage_sum, held), 0\n"
        "        self.fresh = held\n"
        "        with self._cond:\n"
        "            self.nested = self.nested + 1\n"
        "        with self._elsewhere:\n"
        "            self.nested = self.nested - 1\n"
        "class NoLock:\n"
        "    def bump(self):\n"
        "        self.n = self.n + 1\n"
        "class Nested(Detector):\n"
        "    def bump(self):\n"
        "        self.n += 1\n"
    )
    assert _unguarded_updates(planted) == [
        "Detector.saw:6: self.nested",
        "Detector.saw:7: self._usage_sum",
        "Detector.saw:12: self.nested",
        "Nested.bump:18: self.n",
    ]


def _package_files() -> list[Path]:
    """Every module of the package, its subpackages' too."""
    return sorted(PKG.rglob("*.py"))


# Found by the check below in a file this round's first phase may not edit (issue 35): two
# creator threads learning rotated secrets at once can lose one, which could then show in a log.
# Fix it (under self._lock) after the merge and empty this; the equality below then holds.
KNOWN_ELSEWHERE: list[str] = []


def test_every_field_update_in_a_class_that_owns_a_lock_holds_it():
    offenders: list[str] = []
    known = {c.name: c for path in _package_files() for c in ast.walk(parse_python(path.read_text()))
             if isinstance(c, ast.ClassDef)}  # fmt: skip
    assert sum(bool(_lock_fields(c)) for c in known.values()) >= 10  # the pool, the detector, the connector...
    assert _inherited_locks(known, "NullConnectionPool") >= {"_lock"}  # a subclass of the pool: its lock
    for path in _package_files():
        offenders += _unguarded_updates(path.read_text(), f"{path.relative_to(ROOT)}: ", known)
    offenders = [re.sub(r":\d+:", ":", o) for o in offenders]  # without line numbers
    assert offenders == KNOWN_ELSEWHERE, "read-modify-write of a field outside its class's lock:\n" + "\n".join(
        offenders
    )


TREES = ("threadpool_db", "load", "demo_app")  # the repository's Python, subpackages included


def _module_names(base: Path, trees: tuple[str, ...]) -> dict[str, Path]:
    """Dotted name -> file, for every module under ``trees`` (a package is its __init__)."""
    out: dict[str, Path] = {}
    for tree in trees:
        for path in sorted((base / tree).rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _import_graph(base: Path = ROOT, trees: tuple[str, ...] = TREES) -> dict[str, set[str]]:
    """Module -> the modules of ``trees`` it imports, at any depth of its code: type-only
    (TYPE_CHECKING) and function-level imports included, relative ones resolved. ``from p
    import x`` is an edge to the module p.x when there is one, else to the package p."""
    modules = _module_names(base, trees)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(parse_python(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    origin = ".".join(parts[: len(parts) - node.level + 1])
                    source = f"{origin}.{node.module}" if node.module else origin
                else:
                    source = node.module or ""
                for a in node.names:
                    deps.add(f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import ring, each once (a depth-first search that reports the back edges' rings)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == 1:
                ring = [*path[path.index(dep) :], dep]
                if frozenset(ring) not in seen:
                    seen.add(frozenset(ring))
                    found.append(ring)
            elif dep not in state:
                visit(dep, [*path, dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    return found


def test_the_cycle_check_finds_a_ring():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_subpackages_and_type_only_imports():
    graph = _import_graph()
    assert {"threadpool_db.records", "threadpool_db.leaks"} <= graph["threadpool_db.pool"]  # from .x import y
    assert "threadpool_db.stats" in graph["threadpool_db.pool"]  # from . import stats
    assert "load.cpu" in graph["load.compare"]  # from . import cpu
    assert "demo_app.latency" in graph["load.compare"]  # from demo_app import latency


def test_the_cycle_check_finds_a_ring_in_a_subpackage_through_a_type_only_import(tmp_path):
    sub = tmp_path / "threadpool_db" / "django"
    sub.mkdir(parents=True)
    (tmp_path / "threadpool_db" / "__init__.py").write_text("")
    (tmp_path / "threadpool_db" / "pool.py").write_text("from .django import base\n")
    (sub / "__init__.py").write_text("")
    (sub / "base.py").write_text("from . import features\nfrom ..pool import ConnectionPool\n")
    (sub / "features.py").write_text(  # type-only, absolute
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from threadpool_db.django.base import DatabaseWrapper\n"
    )
    rings = _cycles(_import_graph(tmp_path, ("threadpool_db",)))
    assert sorted(map(frozenset, rings), key=sorted) == sorted(
        [
            frozenset({"threadpool_db.django.base", "threadpool_db.django.features"}),
            frozenset({"threadpool_db.django.base", "threadpool_db.pool"}),
        ],
        key=sorted,
    )


def test_no_import_cycle_in_the_repository_type_only_imports_included():
    graph = _import_graph()
    assert len([m for m in graph if m.startswith("threadpool_db.")]) >= 20 and "load.report" in graph
    rings = _cycles(graph)
    assert rings == [], "import cycles:\n" + "\n".join(" -> ".join(r) for r in rings)


def test_the_library_never_imports_its_test_bed():
    graph = _import_graph()
    bed = {"threadpool_db.embedded", "threadpool_db.devdb"}
    users = sorted(m for m, deps in graph.items() if m.startswith("threadpool_db") and m not in bed and deps & bed)
    assert users == [], users
    assert (
        "threadpool_db.embedded" in graph["threadpool_db.devdb"] and "threadpool_db.embedded" in graph["load._server"]
    )
