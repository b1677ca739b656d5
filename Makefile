# Two commands do all the set-up on a fresh machine:
#   make run   -- the system packages, .venv if missing, srghn installed into it, then the main job
#   make test  -- the same set-up (and libzmq's header), then the linter and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.srghn-installed
# torch is pinned: on the CPU-only dev/CI machines 2.13.0 resolves to a local CPU wheel, while an unpinned torch
# would pull several GB of CUDA packages. On a GPU box install your own torch build first.
TORCH ?= torch==2.13.0

.PHONY: install run test lint clean system-run system-test

# What the system must provide, by Debian package, each with the check that it is there: the install compiles the
# server's socket loop and the shadow simulator's MuJoCo step (gcc, Python's headers: tests/test_fastloop.py checks
# them), the tests build the C client (clients/c) against libzmq's header (pyzmq's wheel bundles libzmq but no
# zmq.h). Missing ones are installed with apt-get where this user may (root, or sudo without a password); otherwise
# make stops with one line naming them (`make system-test ZMQ_HEADER=absent.h may_install=` shows it).
NEEDS_run := gcc libc6-dev python3-venv python3-dev
NEEDS_test := $(NEEDS_run) libzmq3-dev
ZMQ_HEADER ?= zmq.h
has_gcc = command -v gcc
has_libc6-dev = echo '\#include <stdlib.h>' | gcc -E -
has_python3-venv = $(PYTHON) -c 'import ensurepip, venv'
has_python3-dev = $(PYTHON) -c 'import os, sysconfig; assert os.path.isfile(sysconfig.get_paths()["include"] + "/Python.h")'
has_libzmq3-dev = echo '\#include <$(ZMQ_HEADER)>' | gcc -E -
missing = $(strip $(foreach p,$(1),$(if $(shell $(has_$(p)) >/dev/null 2>&1 && echo ok),,$(p))))
may_install = $(shell command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; } && echo yes)
SUDO = $(if $(filter 0,$(shell id -u)),,sudo -n)

system-run system-test: system-%:
	$(eval MISSING := $(call missing,$(NEEDS_$*)))
	$(if $(MISSING),$(if $(may_install),,$(error srghn needs the system packages $(MISSING) (Debian/Ubuntu names): \
		install them, e.g. sudo apt-get install $(MISSING), and run make again)))
	$(if $(MISSING),$(SUDO) apt-get update -qq)
	$(if $(MISSING),$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(MISSING))

install: $(STAMP)

$(BIN)/python: | system-run
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python system-run
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

test: system-test lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
