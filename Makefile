# Two commands on a fresh machine: `make test` and `make demo`. Each builds its own virtualenv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= test,demo,flask,metrics,load,bench
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml threadpool_db/_sight.c | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: venv test demo quick-demo bench soak chaos lint serve clean django-suite upstream-pool upstream-sqlalchemy-pool upstream-psycopg

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml threadpool_db/_sight.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	# (the filter quiets setuptools' notes on ext-modules in pyproject.toml and on editable installs)
	PYTHONWARNINGS="ignore:::setuptools.config.pyprojecttoml,ignore:::setuptools.command.editable_wheel" \
	  $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

test: venv
	$(BIN)/python -m ruff check threadpool_db tests demo_app load
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Django's own tests (from its sdist) with Django's pooled ENGINE and with ours, compared:
# fails when a test passes with the built-in ENGINE and not with ours (tests/upstream/run_django.py).
# DJANGO_SDIST=path/to/Django-5.2.x.tar.gz skips the download.
django-suite: venv
	$(BIN)/python tests/upstream/run_django.py $(DJANGO_SUITE_ARGS)

soak: venv
	$(BIN)/python -m pytest -m soak -o addopts='' $(PYTEST_ARGS)

# 20 s silent network partitions (root: network namespaces), ours beside psycopg_pool; prints the figures
chaos: venv
	$(BIN)/python -m pytest -m chaos -o addopts='' -s tests/faults/test_partition.py $(PYTEST_ARGS)

demo: venv
	$(BIN)/python -m load.compare $(DEMO_ARGS)

bench: venv
	$(BIN)/python -m load.bench_pools

# psycopg_pool's own sync pool tests, psycopg_pool rebound to threadpool_db (PSYCOPG_SRC: a
# psycopg checkout; its proxy tests need `pip install pproxy`). Not part of `make test`.
upstream-pool: venv
	$(BIN)/python tests/upstream/run_psycopg_pool.py $(PSYCOPG_SRC)

# SQLAlchemy's test/engine/test_pool.py with QueuePool rebound to FairQueuePool (SQLALCHEMY_SRC:
# its unpacked sdist, `pip download --no-binary :all: --no-deps sqlalchemy==<installed>`).
upstream-sqlalchemy-pool: venv
	$(BIN)/python tests/upstream/run_sqlalchemy_pool.py $(SQLALCHEMY_SRC)

# psycopg's own tests, raw and through our handle (tests/upstream/run_psycopg.py): give it a
# checkout of psycopg's source at the installed version's tag; not part of `make test`.
upstream-psycopg: venv
	@test -n "$(PSYCOPG_SRC)" || { echo "usage: make upstream-psycopg PSYCOPG_SRC=/path/to/psycopg"; exit 2; }
	$(BIN)/python tests/upstream/run_psycopg.py "$(PSYCOPG_SRC)" $(UPSTREAM_ARGS)

quick-demo: venv
	$(BIN)/python -m demo_app.quick

lint: venv
	$(BIN)/python -m ruff check threadpool_db tests demo_app load
	$(BIN)/python -m ruff format --check threadpool_db tests demo_app load

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build threadpool_db/*.so

serve: venv
	$(BIN)/python -m demo_app.serve
