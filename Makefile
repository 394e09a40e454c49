# One-command set-up, main job, tests and benchmarks.
#
#   make demo    set up .venv if needed, then run each plugin's main job on the embedded data
#   make test    set up .venv if needed, then run the test suite (slow tests deselected)
#   make bench   set up .venv if needed, then run every benchmark under benchmarks/
#
# EXTRA_WHEELS may name a folder of prebuilt wheels (for example an mmcv 2.1.0 wheel built for
# torch 2.13.0) that pip searches first; without it mmcv is built from source once and then
# comes from pip's wheel cache.

PYTHON ?= python3
VENV ?= .venv
OUT ?= outputs
EXTRA_WHEELS ?=

PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
CONSTRAINTS := requirements/constraints.txt
FIND_LINKS := $(if $(EXTRA_WHEELS),--find-links $(EXTRA_WHEELS),)
STAMP := $(VENV)/.installed

.PHONY: setup verify demo test test-all bench clean

setup: $(STAMP) verify

# The stamp is rebuilt only when the dependency files change, so a second `make setup` only
# re-runs the checks in `verify`.
$(STAMP): pyproject.toml $(CONSTRAINTS) Makefile
	@echo "==> creating $(VENV) and installing torch 2.13.0 (CPU build)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24" wheel
	$(PIP) install -c $(CONSTRAINTS) torch==2.13.0 "setuptools>=77,<81" numpy ninja psutil
	@echo "==> installing mmcv 2.1.0 with compiled ops (a source build took 56 minutes on 2 shared cores; pip caches the wheel)"
	MMCV_WITH_OPS=1 MAX_JOBS=$${MAX_JOBS:-2} $(PIP) install --no-build-isolation $(FIND_LINKS) -c $(CONSTRAINTS) mmcv==2.1.0
	@echo "==> installing this project with the [all,dev] extras"
	$(PIP) install --no-build-isolation $(FIND_LINKS) -c $(CONSTRAINTS) -e ".[all,dev]"
	touch $(STAMP)

verify:
	@echo "==> checking the environment"
	$(PIP) check
	$(PY) -c "import mmcv.ops, mmdet, torch_geometric, torch_pruning; print('mmcv.ops, mmdet, torch_geometric and torch_pruning import')"

demo: setup
	@mkdir -p $(OUT)
	$(PY) -m rre_mm.demo --out-dir $(OUT)/rre_mm
	$(PY) -m pyg_wpdd.demo --out-dir $(OUT)/pyg_wpdd
	$(PY) -m prune_tscnc.demo --out-dir $(OUT)/prune_tscnc
	@echo "==> all results are under $(OUT)/"

test: setup
	$(PY) -m pytest

# Everything, slow tests included.
test-all: setup
	$(PY) -m pytest -m ""

bench: setup
	@set -e; for script in benchmarks/*/bench_*.py; do \
		echo "==> $$script"; \
		$(PY) $$script; \
	done

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
