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

# ruff first: lint is part of the suite, so it can't drift. Two workers (pytest-xdist), each
# test file whole in one of them (--dist loadfile: a module's fixtures are made once); the
# session fixtures are made once per worker. JOBS=0 runs it in one process.
# With workers, each gets one OpenMP thread: two workers of two threads each on two cores spent
# their time spinning (fresh clone on the 2-core EPYC: pytest 654 s -> 600 s, CPU time
# 19 min 52 s -> 10 min 14 s, same 1108 tests).
JOBS ?= 2
test: $(STAMP)
	$(BIN)/ruff check toolkit tests benchmarks
	$(if $(filter-out 0,$(JOBS)),OMP_NUM_THREADS=1) $(BIN)/python -m pytest -q \
		$(if $(filter-out 0,$(JOBS)),-n $(JOBS) --dist loadfile)

lint: $(STAMP)
	$(BIN)/ruff check toolkit tests benchmarks

clean:
	rm -rf $(VENV) out .pytest_cache
