# The two commands (see README): `make demo` runs the whole path, `make test` runs every check.
.PHONY: setup demo test lint typecheck pytest fuzz bench clean

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/phd demo

test: setup lint typecheck pytest

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck:
	.venv/bin/mypy phd_protocol device_agent mobile_gateway hospital_server phd_cli tests

pytest:
	.venv/bin/pytest -q -p no:cacheprovider

# Longer property/fuzz runs with fresh random examples (CI runs derandomized ones).
fuzz: setup
	env -u CI .venv/bin/pytest -q -p no:cacheprovider tests/protocol --hypothesis-profile=fuzz

bench: setup
	.venv/bin/phd bench

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache build *.egg-info
