# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint clean

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
	$(if $(filter-out 0,$(JOBS)),OMP_NUM_THREADS=1) $(BIN)/python -m pytest -q --durations=10 \
		$(if $(filter-out 0,$(JOBS)),-n $(JOBS) --dist loadfile)

# The inner loop (under 2 minutes on 2 cores): lint, and the tests that export no model, train
# nothing and start no server or subprocess: the schema, bundle, spec, transaction, layers and
# format-table rules, measurement, TensorRT conformance units, data and metric code. Everything
# else (exports in every format, training, sshd, crash recovery) stays in `make test`.
FAST_TESTS := tests/test_manifest.py tests/test_bundle.py tests/test_spec.py \
	tests/test_transaction.py tests/test_layers.py tests/test_records.py \
	tests/test_format_names.py tests/formats/test_table.py tests/export/test_plan.py \
	tests/bench/test_measurement.py tests/bench/test_render.py tests/source/test_data.py \
	tests/source/test_model_args.py tests/remote/test_targets.py tests/detection/test_coco_map.py \
	tests/detection/test_task_map.py tests/detection/test_instances.py tests/backends/trt/test_build.py \
	tests/backends/trt/test_compat.py tests/backends/trt/test_options.py tests/backends/trt/test_profiles.py
test-fast: $(STAMP)
	$(BIN)/ruff check toolkit tests benchmarks
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile $(FAST_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check toolkit tests benchmarks

clean:
	rm -rf $(VENV) out .pytest_cache
