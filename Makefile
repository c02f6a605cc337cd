# Crypto Streaming Lakehouse: every target installs what it needs first (quick when done).
VENV   ?= .venv
# The Pythons the project supports (pyproject.toml's requires-python: keep the two in step). A new venv is made
# with `make PYTHON=...` if given, else with the first of python3.11, python3.12, python3.13, python3 on PATH
# whose version is one of them; an existing $(VENV) is used as it is.
PY_SUPPORTED := 3.11 3.12 3.13
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in $(PY_SUPPORTED:%=python%) python3; do command -v $$p >/dev/null 2>&1 && \
  $$p -c 'import sys; sys.exit("%d.%d" % sys.version_info[:2] not in "$(PY_SUPPORTED)".split())' 2>/dev/null && \
  { echo $$p; break; }; done)
endif
NO_PYTHON := No supported Python found: the project needs Python $(firstword $(PY_SUPPORTED)) to $(lastword $(PY_SUPPORTED)) (looked for \
  $(PY_SUPPORTED:%=python%) python3 on PATH). Install one, or name it: make PYTHON=/path/to/python3.12
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JARS   := .jars/spark/.resolved .jars/kafka/.resolved
# Spark's class-data archive (lakehouse_utils/engine/cds.py): a cold driver JVM maps the classes instead of loading them
CDS    := .jars/.cds
DATA   ?= data
PYTEST_ARGS ?=
# Jupyter refuses to run as root (containers, CI) unless told to
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
# Where `make lab` / `make dashboard` listen: loopback unless told otherwise (make lab BIND_HOST=0.0.0.0, or
# LAKEHOUSE_BIND_HOST, which Spark's UI follows too); JupyterLab keeps its token (README: Operations)
BIND_HOST ?= $(or $(LAKEHOUSE_BIND_HOST),127.0.0.1)
LAB_PORT ?= 8888
DASHBOARD_PORT ?= 8866

.PHONY: setup test bench-smoke unit lint lab demo cluster-demo notebooks nbval bench soak e2e dashboard clean reset jars

setup: $(STAMP) $(JARS) $(CDS)

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "Java 17 is needed (conda env create -f environment.yml, or apt install openjdk-17-jdk-headless)"; exit 1; }
	@test -x $(PY) || { test -n "$(PYTHON)" || { echo "$(NO_PYTHON)" >&2; exit 1; }; \
	  echo "[setup] $(VENV) with $(PYTHON): $$($(PYTHON) --version 2>&1)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lakehouse)" >/dev/null
	touch $@

$(JARS) &: $(STAMP) lakehouse_utils/jars.py
	$(PY) -m lakehouse_utils.jars
	touch $(JARS)

$(CDS): $(JARS) lakehouse_utils/engine/cds.py lakehouse_utils/ops/class_archive.py
	$(PY) -m lakehouse_utils.ops.class_archive --force
	touch $@

jars: setup

test: setup
	$(PY) -m pytest -m "not bench" $(PYTEST_ARGS)

bench-smoke: setup  # make bench run whole with short feeds (every measurement, in order): tests/test_bench.py
	$(PY) -m pytest -m bench $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -m "not slow and not bench" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check lakehouse_utils tests notebooks

lab: setup
	$(VENV)/bin/jupyter lab --ip=$(BIND_HOST) --port=$(LAB_PORT) --notebook-dir=notebooks $(ALLOW_ROOT)

# The main job: the bundled real hour through broker, producer, Bronze, Silver, Gold; report in $(DATA)/reports
demo: setup
	$(VENV)/bin/lakehouse demo --data-dir $(DATA) --until-drained

# The three layer jobs through spark-submit on a local Spark standalone cluster (2 workers) over a 3-partition
# topic: the bundled hour + a 3-symbol synthetic stream, Gold checked against bars computed from the sources
cluster-demo: setup
	$(VENV)/bin/lakehouse cluster demo --data-dir $(DATA)

# Every numbered notebook in order (papermill), executed copies in $(DATA)/executed
notebooks: setup
	$(PY) -m lakehouse_utils.ops.notebooks --data-dir $(DATA) --stop-broker

# The numbered notebooks as stored, under nbval (as CI runs them): a new $(DATA)/nbval, its own broker and topic;
# the cells marked NBVAL_CHECK_OUTPUT must print what is stored in them
nbval: setup
	$(PY) -m lakehouse_utils.ops.notebooks --nbval --data-dir $(DATA)

# The live dashboard (Voila) on http://$(BIND_HOST):$(DASHBOARD_PORT) (127.0.0.1:8866): candles, alerts, pipeline status of $(DATA)
dashboard: setup
	LAKEHOUSE_DATA_DIR=$(abspath $(DATA)) $(VENV)/bin/voila notebooks/dashboard.ipynb --Voila.ip=$(BIND_HOST) --port=$(DASHBOARD_PORT) --no-browser

# Speed and memory targets (not timed tests)
bench: setup
	$(PY) -m lakehouse_utils.bench --data-dir $(DATA)/bench $(BENCH_ARGS)

# lakehouse demo for HOURS (default 0.5) on a synthetic feed with quiet minutes and bursts, sampled every 30 s:
# $(DATA)/bench/soak.json and soak.png (RSS, latency, batches, files, log entries, checkpoint; README: Soak)
HOURS ?= 0.5
soak: setup
	$(PY) -m lakehouse_utils.bench.soak --hours $(HOURS) --data-dir $(DATA)/bench

# Only the end-to-end tests (real hour through demo and notebooks)
e2e: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

reset: setup
	$(VENV)/bin/lakehouse reset --data-dir $(DATA)

clean:
	rm -rf $(VENV) .jars .pytest_cache
