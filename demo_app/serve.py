"""``make serve``: the demo app under gunicorn, against DATABASE_URL or an embedded PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from threadpool_db.testing import EmbeddedPostgres, database_url

HERE = Path(__file__).resolve().parent


def gunicorn_cmd(extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", str(HERE / "gunicorn.conf.py"), *(extra or []),
            "demo_app:create_app()"]  # fmt: skip


def main() -> None:
    url = database_url()
    server = None
    if not url:
        server = EmbeddedPostgres({"max_connections": int(os.environ.get("TPDB_MAX_CONNECTIONS", "100"))}).start()
        url = server.url()
        print(f"embedded PostgreSQL on 127.0.0.1:{server.port}")
    env = {**os.environ, "DATABASE_URL": url}
    print(f"dashboard: http://{env.get('GUNICORN_BIND', '127.0.0.1:8000')}/  (Ctrl-C stops everything)")
    try:
        subprocess.run(gunicorn_cmd(sys.argv[1:]), env=env, cwd=HERE.parent, check=False)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
