"""Who used the CPU during a phase: gunicorn, Locust, PostgreSQL, the rest (from /proc)."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
GROUPS = ("gunicorn", "locust", "postgres", "other")


def _group(pid: str) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return "other"
    if b"gunicorn" in cmd:
        return "gunicorn"
    if b"locust" in cmd:
        return "locust"
    if b"postgres" in cmd:
        return "postgres"
    return "other"


def snapshot() -> dict[str, float]:
    """CPU seconds (user + system) of the live processes by group, plus the machine's total
    busy and idle seconds from /proc/stat."""
    out = dict.fromkeys(GROUPS, 0.0)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[11:15] = utime, stime, cutime, cstime (children that ended count for the parent)
        secs = sum(int(x) for x in fields[11:15]) / _TICK
        out[_group(d.name)] += secs
    try:
        cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        vals = [int(x) for x in cpu]
        out["_idle"] = (vals[3] + vals[4]) / _TICK
        out["_busy"] = (sum(vals) - vals[3] - vals[4]) / _TICK
    except (OSError, IndexError, ValueError):
        pass
    return out


def shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Percent of the machine's CPU time each group used between two snapshots."""
    total = (after.get("_busy", 0) - before.get("_busy", 0)) + (after.get("_idle", 0) - before.get("_idle", 0))
    if total <= 0:
        return {}
    res = {g: round(100.0 * max(0.0, after.get(g, 0) - before.get(g, 0)) / total, 1) for g in GROUPS}
    res["idle"] = round(100.0 * (after.get("_idle", 0) - before.get("_idle", 0)) / total, 1)
    return res
