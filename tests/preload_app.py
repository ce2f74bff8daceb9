"""A small app for the gunicorn --preload test: its factory creates a table through the pool
at start, as many apps do, so with --preload the pool is made in the gunicorn master."""

from __future__ import annotations

import os

from flask import Flask

from threadpool_db.flask import FlaskPool

APP_NAME = "tpdb-preload-test"
db = FlaskPool(min_size=1, max_size=2, kwargs={"application_name": APP_NAME})


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["THREADPOOL_DB_CONNINFO"] = os.environ["DATABASE_URL"]
    db.init_app(app)
    app.register_blueprint(db.stats_blueprint())
    with app.app_context():  # at start, in the master under --preload
        db.connection().execute("CREATE TABLE IF NOT EXISTS preload_t (x int)")

    @app.get("/ping")
    def ping() -> str:
        return "ok"

    return app
