"""Settings for the test project. Three aliases on the same database: ``default`` (pool of 4,
leak reports after TPDB_DJANGO_LEAK seconds), ``one`` (a pool of one, short timeout) and
``release`` (a pool of two, connections given back after each query)."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

_url = urlsplit(os.environ.get("TPDB_DJANGO_URL") or os.environ["DATABASE_URL"])
_LEAK = float(os.environ.get("TPDB_DJANGO_LEAK", "60"))


def _db(pool: dict) -> dict:
    return {
        "ENGINE": "threadpool_db.django",
        "NAME": _url.path.lstrip("/"),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname,
        "PORT": _url.port,
        "OPTIONS": {"pool": pool},
    }


SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
INSTALLED_APPS = ["tests.django_project"]
ROOT_URLCONF = "tests.django_project.urls"
MIDDLEWARE = ["threadpool_db.django.middleware.PoolTimeoutMiddleware"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": _db({"min_size": 1, "max_size": 4, "timeout": 5, "leak_threshold": _LEAK}),
    "one": _db({"min_size": 1, "max_size": 1, "timeout": 0.5, "leak_threshold": _LEAK}),
    "release": _db({"min_size": 1, "max_size": 2, "timeout": 5, "leak_threshold": _LEAK}),
}
DATABASES["release"]["OPTIONS"]["release_after_query"] = True
THREADPOOL_DB_RETRY_AFTER = 3
