"""The database the load tools use: DATABASE_URL, or an embedded PostgreSQL they start
(``threadpool_db.embedded.database``, the one bootstrap every launcher shares)."""

from threadpool_db.embedded import database

__all__ = ["database"]
