# ganforge: two commands do all their own set-up on a fresh machine.
#   make demo   - venv, install, Fashion-MNIST, train the default recipe briefly
#   make test   - venv, install (with test tools), run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_EPOCHS ?= 12
DEMO_OUT ?= runs/demo

.PHONY: demo test lint setup data clean

$(BIN)/ganforge: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/ganforge

# Fashion-MNIST: Debian's package where apt is there and we may use it; else ganforge
# falls back to torchvision's download at training time.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then \
	  echo "Fashion-MNIST: /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "apt-get failed; ganforge will try torchvision's download"; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "apt-get failed; ganforge will try torchvision's download"; \
	else \
	  echo "no apt: ganforge will try torchvision's download"; \
	fi

demo: setup data
	rm -rf $(DEMO_OUT)
	$(BIN)/ganforge train --out $(DEMO_OUT) --set train.epochs=$(DEMO_EPOCHS)
	$(BIN)/ganforge sample $(DEMO_OUT) -n 64 -o $(DEMO_OUT)/sample.png
	@echo "run directory: $(DEMO_OUT)  (samples in $(DEMO_OUT)/samples, final grid $(DEMO_OUT)/final.png)"

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/pyright

clean:
	rm -rf $(VENV) runs .pytest_cache
