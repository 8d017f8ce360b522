# Two commands on a fresh machine:  make demo   (main job)   make test   (tests)
# Both create .venv and install everything they need first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
WORKDIR ?= workdirs/demo
DEMO_CONFIG ?= configs/tiny.py
PYTEST_ARGS ?=

.PHONY: install demo test clean

$(INSTALLED): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $(INSTALLED)

install: $(INSTALLED)

demo: install
	$(BIN)/python -m simsiam_jax.main --config=$(DEMO_CONFIG) --workdir=$(WORKDIR) --alsologtostderr

test: install
	$(BIN)/python -m pytest -q --timeout=900 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) workdirs .pytest_cache
