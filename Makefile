# The two commands of the README: `make run` and `make test`.

PYTHON ?= python3
VENV ?= .venv
LS_VENV ?= .venv-ls
LABEL_STUDIO_VERSION ?= 1.23.2
HOST ?= 0.0.0.0
PORT ?= 9090
WORKERS ?= 1
THREADS ?= 8
BIN := $(VENV)/bin

export BENTOML_DO_NOT_TRACK := True
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: run serve setup model test test-unit bench lint ls-venv redis-server clean

run: model serve

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.txt
	$(BIN)/pip check
	touch $@

model: setup
	$(BIN)/python -m backend ensure-model

serve: setup
	$(BIN)/gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) --threads $(THREADS) \
		--timeout 120 _wsgi:app

ls-venv: $(LS_VENV)/.installed

$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --upgrade pip
	$(LS_VENV)/bin/pip install --quiet label-studio==$(LABEL_STUDIO_VERSION)
	touch $@

redis-server:
	@command -v redis-server >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)

test: setup ls-venv redis-server
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -ra

test-unit: setup
	$(BIN)/python -m pytest -ra -m "not e2e and not queue"

bench: setup
	$(BIN)/python bench/predict.py

lint: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .ruff_cache
