"""gunicorn settings for the demo: gthread workers, sized for a 2-core box.

- ``workers``: WEB_CONCURRENCY, default 2 (one per core: the GIL makes more threads, not more
  processes, the way to wait on the database).
- ``threads``: GUNICORN_THREADS, default 16. Threads wait on I/O, so a few per core is cheap.
- ``worker_connections``: GUNICORN_WORKER_CONNECTIONS, default threads x 2. A gthread worker
  accepts up to this many client sockets; kept-alive sockets park in its poller without holding
  a thread. Much more than the threads would only queue requests inside the worker, behind
  busy threads, where neither the pool nor the client can see them.
"""

import logging
import os
import shutil
import tempfile

# What the workers share, in one folder per gunicorn run: Prometheus's multiprocess files (set
# before the workers fork, so each writes its samples there) and the dashboard's per-worker
# stats. A launcher that sets both variables (run_gunicorn, make serve) owns their folders;
# otherwise this run makes one here and on_exit removes it when the master stops.
_run_dir = os.environ.get("TPDB_RUN_DIR")  # the launcher's, removed by whichever of us ends last
if not (os.environ.get("PROMETHEUS_MULTIPROC_DIR") and os.environ.get("TPDB_STATS_DIR")):
    _run_dir = tempfile.mkdtemp(prefix="tpdb-gunicorn-")
    os.makedirs(os.path.join(_run_dir, "prometheus"))
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(_run_dir, "prometheus"))
    os.environ.setdefault("TPDB_STATS_DIR", os.path.join(_run_dir, "stats"))

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(threads * 2)))
keepalive = 2
timeout = 60
graceful_timeout = 10
accesslog = None
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")


def post_fork(server, worker):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s")
    server.log.info("worker %s forked", worker.pid)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("threadpool_db") if app is not None else None
    if state is not None and state.started:
        server.log.info("worker %s pool stats at exit: %s", worker.pid, state.pool.stats())
        state.close()


def on_exit(server):
    if _run_dir is not None:
        shutil.rmtree(_run_dir, ignore_errors=True)
