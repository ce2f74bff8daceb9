"""The database the load tools use: DATABASE_URL, or an embedded PostgreSQL they start
(``threadpool_db.testing.database``, the one bootstrap every launcher shares)."""

from threadpool_db.testing import database

__all__ = ["database"]
