"""Locust load for the demo app (or any deployment of it).

    locust -f load/locustfile.py --host http://127.0.0.1:8000              # web UI
    TPDB_MODE=per-request locust -f load/locustfile.py --headless -u 100 -r 50 -t 30s --host ...

``TPDB_MODE`` picks the route family: ``pooled`` (default) or ``per-request``. The op mix is
read-heavy, with some writes and a few slow queries: ``TPDB_MIX="read:80,write:15,slow:5"``.
Every user sends requests back to back (no think time): the point is to find the ceiling.
"""

from __future__ import annotations

import os

from locust import FastHttpUser, constant

MODE = os.environ.get("TPDB_MODE", "pooled")
if MODE not in ("pooled", "per-request"):
    raise SystemExit(f"TPDB_MODE must be pooled or per-request, not {MODE!r}")


def _mix() -> dict[str, int]:
    spec = os.environ.get("TPDB_MIX", "read:80,write:15,slow:5")
    out = {}
    for part in spec.split(","):
        op, _, weight = part.partition(":")
        out[op.strip()] = int(weight)
    return out


MIX = _mix()


def _op(op: str):
    path = f"/{MODE}/{op}"

    def run(user: FastHttpUser) -> None:
        with user.client.get(path, name=path, catch_response=True) as r:
            if r.status_code == 503:
                # the failure names its cause, so the report can count refusals by SQLSTATE and
                # message, and pool timeouts apart from them
                try:
                    body = r.json()
                except Exception:
                    body = {}
                if body.get("sqlstate"):
                    r.failure(f"refused {body['sqlstate']}: {body.get('message', '')}")
                else:
                    r.failure(f"503 {body.get('error', 'unavailable')}")
            elif r.status_code >= 400:
                r.failure(f"HTTP {r.status_code}")

    run.__name__ = op
    return run


class DemoUser(FastHttpUser):
    wait_time = constant(0)
    connection_timeout = 30.0
    network_timeout = 30.0
    tasks = {_op(op): weight for op, weight in MIX.items() if weight > 0}
