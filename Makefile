# Two commands do all the set-up on a fresh machine:
#   make run   -- create .venv if missing, install srghn, run the main job on the embedded default
#   make test  -- same set-up, then the linter and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.srghn-installed
# torch is pinned: on the CPU-only dev/CI machines 2.13.0 resolves to a local CPU wheel, while an unpinned torch
# would pull several GB of CUDA packages. On a GPU box install your own torch build first.
TORCH ?= torch==2.13.0

.PHONY: install run test lint clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The whole loop on the embedded default: evolve CartPole in the shadow simulator, gate, promote, and serve a
# simulated robot over ZeroMQ. At its step 4000 the robot's motor is wired backwards: the daemon sees it in the
# robot's reported steps, switches the shadow simulator, re-adapts and promotes a champion for the new dynamics.
# A second `make run` resumes the saved population and the live champion.
run: $(STAMP)
	$(BIN)/srghn-ctl run --robot cartpole --duration 60 --sim-robot --robot-rate 200 \
		--fault inverted --fault-at 4000 --state-dir runs/state

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
