"""The core's shape, checked: only pool.py touches the pool's private state, services talk to
it through their seams, and demo_app/ and load/ import no private names of the library."""

from __future__ import annotations

import ast
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
    private = _pool_privates()
    offenders = []
    for path in sorted(PKG.glob("*.py")):
        if path.name == "pool.py":
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


def _unguarded_updates(source: str) -> list[str]:
    """``self._x += ...`` (any augmented assignment to the pool's own fields) that sits neither
    inside a ``with self._lock:`` block nor in a ``*_locked`` method (whose callers hold it).
    Under the GIL a timing test cannot catch a read-modify-write moved out of the lock; this
    reads where each one stands."""
    tree = parse_python(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ConnectionPool")
    out: list[str] = []

    def holds_lock(node: ast.With) -> bool:
        return any(ast.unparse(item.context_expr) == "self._lock" for item in node.items)

    def visit(node: ast.AST, locked: bool, method: str) -> None:
        target = node.target if isinstance(node, ast.AugAssign) else None
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self" \
                and not locked:  # fmt: skip
            out.append(f"{method}:{node.lineno}: self.{target.attr}")
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.Lambda)) and node is not cls:
                continue  # a nested function runs later, under whatever lock its caller holds
            visit(child, locked or (isinstance(node, ast.With) and holds_lock(node)), method)

    for fn in cls.body:
        if isinstance(fn, ast.FunctionDef):
            visit(fn, fn.name.endswith("_locked"), fn.name)
    return out


def test_the_lock_check_finds_an_update_outside_the_lock():
    planted = (
        "class ConnectionPool:\n"
        "    def putconn(self, held):\n"
        "        self._usage_sum += held\n"
        "        with self._lock:\n"
        "            self._borrows += 1\n"
        "    def _give_locked(self):\n"
        "        self._borrows += 1\n"
    )
    assert _unguarded_updates(planted) == ["putconn:3: self._usage_sum"]


def test_every_counter_update_in_the_pool_holds_the_pool_lock():
    offenders = _unguarded_updates((PKG / "pool.py").read_text())
    assert offenders == [], "read-modify-write of the pool's fields outside its lock:\n" + "\n".join(offenders)


def _imports_of_package() -> dict[str, set[str]]:
    """Module -> the threadpool_db modules it imports, at any depth of its code: type-only
    (TYPE_CHECKING) and function-level imports included."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PKG.glob("*.py")):
        deps: set[str] = set()
        for node in ast.walk(parse_python(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("threadpool_db."):
                deps.add(node.module.split(".")[1])  # type: ignore[union-attr]
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("threadpool_db.")}
        graph[path.stem] = {d for d in deps if (PKG / f"{d}.py").is_file() and d != path.stem}
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


def test_no_import_cycle_in_the_package_type_only_imports_included():
    rings = _cycles(_imports_of_package())
    assert rings == [], "import cycles in threadpool_db:\n" + "\n".join(" -> ".join(r) for r in rings)
