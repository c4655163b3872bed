# One-line entry points; each creates the virtualenv it needs.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo dashboard test lint bench clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH (or make PY=python3)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sheetops demo

# the dashboard over the store the demo leaves (.sheetops-demo/ops.sheetops.db)
dashboard: $(STAMP)
	$(BIN)/sheetops dashboard --sheet .sheetops-demo/ops.xlsx

# two test processes (pytest-xdist), a file's tests together in one: most tests wait on
# subprocesses, servers and brokers, so one process leaves the two cores mostly idle
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .sheetops-demo
