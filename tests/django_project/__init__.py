"""A small Django project for tests/test_django*.py: settings from TPDB_DJANGO_URL (else
DATABASE_URL), one model, a few views."""
