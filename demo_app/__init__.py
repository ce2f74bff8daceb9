"""The threadpool_db demo: a Flask app on gunicorn gthread workers (see README)."""
