"""A development database in one command: ``python -m threadpool_db.devdb``.

Starts the embedded PostgreSQL (``pip install 'threadpool_db[embedded]'``) on 127.0.0.1 with
scram-sha-256 password auth, prints a line to paste into your shell::

    export DATABASE_URL='postgresql://app:...@127.0.0.1:54321/app'

and runs until Ctrl-C (or SIGTERM, or SIGHUP). However it ends, the server stops and its data
folder is deleted: it is for development and tests, never for data you want to keep.
"""

from __future__ import annotations

import argparse
import sys
import threading

from .embedded import EmbeddedPostgres, Stopped, stop_on_signals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m threadpool_db.devdb", description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-connections", type=int, default=100, help="PostgreSQL max_connections (default 100)")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free one)")
    args = ap.parse_args(argv)
    try:
        with stop_on_signals(), EmbeddedPostgres({"max_connections": args.max_connections}, port=args.port) as pg:
            print(f"export DATABASE_URL='{pg.url()}'", flush=True)
            print(
                f"# embedded PostgreSQL on 127.0.0.1:{pg.port}, max_connections={args.max_connections}, "
                f"data in {pg.datadir}; superuser: postgres (admin URL below). Ctrl-C stops it and deletes its data.",
                file=sys.stderr,
                flush=True,
            )
            print(f"# admin: {pg.admin_url}", file=sys.stderr, flush=True)
            threading.Event().wait()  # until a signal or Ctrl-C
    except (KeyboardInterrupt, Stopped):
        pass
    except RuntimeError as e:  # no wheel, initdb failed, no free port: say so plainly
        print(f"devdb: {e}", file=sys.stderr)
        return 1
    print("# stopped; data deleted", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
