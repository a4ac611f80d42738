# The two commands of the README. Each creates .venv when missing and installs
# what it needs (CPU torch pinned on this path; GPU users install their own torch).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   ?= torch==2.13.0
OUT     ?= demo_out

.PHONY: demo test bench setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/vidprobe demo --out $(OUT)

# two test processes (pytest-xdist), one thread each: the suite took 4m15s on 2 cores; in one process its quick
# part (-m "not slow") alone took 4m08s
TEST_JOBS ?= 2
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_JOBS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(OUT) build src/*.egg-info
