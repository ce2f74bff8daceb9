"""Django's PostgreSQL backend, pooled by threadpool_db: ``"ENGINE": "threadpool_db.django"``.

See docs/django.md. The modules, one concern each:

  base.py        DatabaseWrapper: our pool where Django builds psycopg_pool's; borrows tagged
                 with their request and thread sharing; Django's server-side cursors closed at
                 return; a forked child forgets its parent's connections.
  labels.py      the request each borrow serves, from request_started / request_finished.
  middleware.py  PoolTimeoutMiddleware: a pool timeout becomes 503 with Retry-After.
  scope.py       connection_scope / release_connections: tasks and commands give back.
  registry.py    pools() and open_pools(): each alias's pool (metrics, advisor, fail-fast).
"""

from .registry import open_pools, pools
from .scope import connection_scope, release_connections

__all__ = ["connection_scope", "open_pools", "pools", "release_connections"]
