# The two commands of the README. Both install what they need first (scripts/bootstrap.sh).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: bootstrap test lint demo bench clean

bootstrap:
	./scripts/bootstrap.sh

lint: bootstrap
	.venv/bin/ruff check src lab tests bench scripts
	.venv/bin/ruff format --check src lab tests bench scripts
	.venv/bin/mypy

test: lint
	$(PY) -m pytest -p no:cacheprovider --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

demo: bootstrap
	$(PY) -m lab.demo

bench: bootstrap
	$(PY) -m bench

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache build dist src/*.egg-info
