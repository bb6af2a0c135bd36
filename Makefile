# The two commands of the README. Both install what they need first (scripts/bootstrap.sh).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: bootstrap test lint demo bench clean image vm-image

bootstrap:
	./scripts/bootstrap.sh

lint: bootstrap
	.venv/bin/ruff check src lab image tests bench scripts
	.venv/bin/ruff format --check src lab image tests bench scripts
	.venv/bin/mypy

# The amphora image for Glance (qcow2) and the raw disk the VM tests boot (docs/image.md).
image: bootstrap
	./image/build.sh

# The test build (+ qemu-guest-agent) the VM tests boot; skipped when its input hash is current.
vm-image: bootstrap
	./image/build.sh --test

test: lint vm-image
	$(PY) -m pytest -p no:cacheprovider --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

demo: bootstrap
	$(PY) -m lab.demo

bench: bootstrap
	$(PY) -m bench

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache build dist src/*.egg-info
