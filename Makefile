# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/toolkit demo
	$(BIN)/toolkit demo --task detection

# ruff first: lint is part of the suite, so it can't drift
test: $(STAMP)
	$(BIN)/ruff check toolkit tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check toolkit tests benchmarks

clean:
	rm -rf $(VENV) out .pytest_cache
