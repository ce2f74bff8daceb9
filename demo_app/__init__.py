"""The threadpool_db demo: a Flask app on gunicorn gthread workers (see README)."""

from .app import create_app

__all__ = ["create_app"]
