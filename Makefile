# One command per chore; CI (bash .ci/run) calls the same tools.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv build wheel test test-pure lint bench ci clean

venv:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "maturin>=1.9,<2"

build: venv
	$(PY) -m pip install -q -e ".[test,lint,examples]"

# The wheel and sdist users install (abi3, manylinux_2_17, via zig), in dist/, audited.
wheel: venv
	PYTHON=$(PY) bash .ci/wheel.sh

test:
	$(PY) -m pytest tests
	ENTROPIC_PURE_PYTHON=1 $(PY) -m pytest tests
	cargo test

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --all-features -- -D warnings
	$(VENV)/bin/ruff check python tests benches examples
	$(VENV)/bin/ruff format --check python tests benches examples
	$(VENV)/bin/mypy --strict
	$(VENV)/bin/lint-imports
	$(PY) -m mypy.stubtest entropic._core

bench:
	$(PY) -m pytest benches --benchmark-columns=min,mean,median,ops --benchmark-sort=name

ci:
	bash .ci/run

clean:
	cargo clean
	rm -rf $(VENV) dist .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
