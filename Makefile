# Two commands on a fresh machine:  make demo   (main job)   make test   (tests)
# make test-slow runs the slow group (CI runs both).
# Both create .venv and install everything they need first, at the versions
# in constraints.txt (`make lock` moves them to the newest and runs the tests).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
WORKDIR ?= workdirs/demo
DEMO_CONFIG ?= configs/fashion_mnist.py
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: install data demo test test-slow lock clean

$(INSTALLED): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	touch $(INSTALLED)

install: $(INSTALLED)

# Debian's dataset-fashion-mnist: the offline default data set.
data:
	test -f $(FMNIST) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }

demo: install data
	$(BIN)/python -m simsiam_jax.main --config=$(DEMO_CONFIG) --workdir=$(WORKDIR) --alsologtostderr

test: install data
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --timeout=900 $(PYTEST_ARGS)

# The slow group: the stop-gradient experiment, two-process training, ResNet-50.
test-slow: install data
	$(BIN)/python -m pytest -q -n 2 --timeout=900 -m slow $(PYTEST_ARGS)

# Moves to the newest releases requirements.txt allows: a fresh .venv without
# the pins, constraints.txt rewritten from it, then both test groups.
lock:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	{ sed -n '/^# resolved/!{/^#/p}' constraints.txt; \
	  echo "# resolved: $$(date -u +%F), $$($(BIN)/python -V), $$(uname -m)"; \
	  $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	touch $(INSTALLED)
	$(MAKE) test test-slow

clean:
	rm -rf $(VENV) workdirs .pytest_cache
