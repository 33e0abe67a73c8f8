# Every target creates the virtual environment it needs. Override AIRFLOW_VERSION and VENV to run
# against another Airflow, e.g. `make test AIRFLOW_VERSION=2.11.2 VENV=.venv-2.11.2`.
PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)
PYTEST_ARGS ?=
DIST ?= dist
# Pins for an Airflow version that breaks with today's packages, where there are any (see the file).
CONSTRAINTS := $(wildcard .ci/constraints-$(AIRFLOW_VERSION).txt)
# The distributed scenario (CeleryExecutor, PostgreSQL) runs on the newest Airflow only: only its venv gets
# the celery provider and the PostgreSQL driver.
DISTRIBUTED_AIRFLOW := 3.3.2
comma := ,
EXTRAS := dev$(if $(filter $(DISTRIBUTED_AIRFLOW),$(AIRFLOW_VERSION)),$(comma)distributed)

.PHONY: venv test lint unit docs demo bench reliability dist distributed clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e ".[$(EXTRAS)]" \
		$(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	@rm -f $(VENV)/.installed-*
	@touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The documentation site, from docs/ into .scratch/docs-site; every warning (a broken link or anchor, a
# reference that does not resolve, a docstring griffe cannot read) fails it.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -f docs/mkdocs.yml

test: lint docs unit

demo: venv
	PATH="$(abspath $(BIN)):$$PATH" bash .ci/demo.sh

bench: venv
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks

reliability: venv
	MKA1_RELIABILITY=long $(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS)

# The sdist, the wheel built from it by the project's build backend (hatchling), both through twine check.
# tests/e2e/test_installed_wheel.py builds them the same way and installs the wheel.
dist: venv
	rm -f $(DIST)/*.tar.gz $(DIST)/*.whl
	$(BIN)/python -m build --outdir $(DIST) .
	$(BIN)/twine check --strict $(DIST)/*.tar.gz $(DIST)/*.whl

# PostgreSQL and Redis from Debian's packages (installed when missing and we are root), then the scenario.
distributed: venv
	bash .ci/install-distributed-deps.sh
	$(BIN)/python -m pytest tests/distributed -m distributed -rxX $(PYTEST_ARGS)

clean:
	rm -rf .scratch .pytest_cache .mypy_cache .ruff_cache dist
