# The two commands of the README. Both work on a fresh clone: they install
# uv if needed, create the locked environment, and go.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")

.PHONY: demo test env lint bench-quick

env:
	@command -v uv >/dev/null 2>&1 || [ -x "$(UV)" ] || python3 -m pip install --quiet --user uv
	@$(UV) sync --frozen --quiet

# Main job: AbeService + StorageService in-process on embedded backends, and the
# scripted end-to-end scenario against them.
demo: env
	@$(UV) run ehr-abe demo

# Tests: in an infra dir and on ports of this run's own, starts MinIO (built once
# from the Go module proxy, then cached) and, if Fabric 3.1.5 binaries are
# installed, the two-organisation Fabric network; runs the suite; stops what it
# started, whatever the outcome. See tools/run_tests.py.
test: env
	@$(UV) run python tools/run_tests.py

lint: env
	@$(UV) run ruff check . && $(UV) run ruff format --check . && $(UV) run mypy

bench-quick: env
	@$(UV) run python bench/abe_bench.py && $(UV) run python bench/verify_bench.py --quick
