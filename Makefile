# The two commands of the README. Each sets up what it needs first.
.PHONY: demo test bench

demo:
	@scripts/setup.sh
	.venv/bin/callbridge serve

test:
	@scripts/setup.sh --test
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy
	.venv/bin/python -m pytest --durations=25

bench:
	@scripts/setup.sh --test
	.venv/bin/python bench/sip_cps.py
