# Crypto Streaming Lakehouse: every target installs what it needs first (quick when done).
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JARS   := .jars/spark/.resolved .jars/kafka/.resolved
DATA   ?= data
PYTEST_ARGS ?=
# Jupyter refuses to run as root (containers, CI) unless told to
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup test unit lint lab demo notebooks bench e2e dashboard clean reset jars

setup: $(STAMP) $(JARS)

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "Java 17 is needed (conda env create -f environment.yml, or apt install openjdk-17-jdk-headless)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lakehouse)" >/dev/null
	touch $@

$(JARS) &: $(STAMP) lakehouse_utils/jars.py
	$(PY) -m lakehouse_utils.jars
	touch $(JARS)

jars: setup

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check lakehouse_utils tests

lab: setup
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --notebook-dir=notebooks $(ALLOW_ROOT)

# The main job: the bundled real hour through broker, producer, Bronze, Silver, Gold; report in $(DATA)/reports
demo: setup
	$(VENV)/bin/lakehouse demo --data-dir $(DATA) --until-drained

# Every numbered notebook in order (papermill), executed copies in $(DATA)/executed
notebooks: setup
	$(PY) -m lakehouse_utils.notebooks --data-dir $(DATA) --stop-broker

# The live dashboard (Voila) on http://127.0.0.1:8866: candles, alerts, pipeline status of $(DATA)
dashboard: setup
	LAKEHOUSE_DATA_DIR=$(abspath $(DATA)) $(VENV)/bin/voila notebooks/dashboard.ipynb --Voila.ip=127.0.0.1 --port=8866 --no-browser

# Speed and memory targets (not timed tests)
bench: setup
	$(PY) -m lakehouse_utils.bench --data-dir $(DATA)/bench $(BENCH_ARGS)

# Only the end-to-end tests (real hour through demo and notebooks)
e2e: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

reset: setup
	$(VENV)/bin/lakehouse reset --data-dir $(DATA)

clean:
	rm -rf $(VENV) .jars .pytest_cache
