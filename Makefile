# saegap: two commands do everything (README).
.PHONY: setup demo test lint bench

setup:
	bash scripts/setup.sh

demo: setup  ## set up, then run the main job: the demo model at every layer, embedded
	HF_HUB_OFFLINE=1 .venv/bin/saegap evaluate

test:  ## set up, start services, lint, run every test (what CI runs)
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: setup
	HF_HUB_OFFLINE=1 .venv/bin/python bench/engine.py
