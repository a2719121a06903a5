# LNM: the two commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
# Debian packages: a virtual display and Mesa for Kivy, PDF rendering for the report
# tests, the MQTT broker for the reading station (demo and tests), shellcheck and
# systemd-analyze for the deployment tests, the MQTT command-line clients (checking a
# broker by hand, deploy/mosquitto/README.md), Chromium and its WebDriver for the reading
# station's browser tests.
RUN_PKGS  := xvfb xauth libgl1 libgl1-mesa-dri libegl1 libmtdev1 poppler-utils alsa-utils mosquitto
TEST_PKGS := $(RUN_PKGS) shellcheck systemd mosquitto-clients chromium chromium-driver

.PHONY: run test bench venv sysdeps-run sysdeps-test clean lint mutation mutation-clean

run: sysdeps-run venv
	$(VENV)/bin/lnm run

# As root the system packages were installed above: a test skipped for a missing tool fails
# (LNM_REQUIRE_TOOLS, tests/conftest.py). The quality gate runs first.
test: sysdeps-test venv lint
	LNM_REQUIRE_TOOLS=$$([ "$$(id -u)" -eq 0 ] && echo 1 || echo 0) $(VENV)/bin/python -m pytest -q

bench: venv
	for b in bench/*.py; do $(VENV)/bin/python $$b || exit 1; done

# ----------------------------------------------------------------- quality gate: make lint
# ruff (rules in pyproject.toml), mypy (normal mode over app/, firmware_bridge/ and bench/,
# --strict on the pure cores below) and import-linter (the layer contracts in .importlinter).
MYPY_STRICT := firmware_bridge/codec.py firmware_bridge/validate.py firmware_bridge/flow.py \
	firmware_bridge/faults.py firmware_bridge/messages.py firmware_bridge/fields.py \
	firmware_bridge/vocabulary.py app/analysis app/rules app/alarms
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict $(MYPY_STRICT)
	$(VENV)/bin/mypy app firmware_bridge bench
	$(VENV)/bin/lint-imports

# ----------------------------------------------------------------- test strength: make mutation
# mutmut over the pure cores, each core's mutants against its own tests (tests/mutation/run.py,
# settings in pyproject.toml [tool.mutmut]); not part of make test. The last line is
# "MUTATION killed=K total=N". Restartable: the cache is build/mutation/<core>/; a run carries on
# where the last one stopped. MUTATION_ARGS="--fresh" measures everything again, "--core rules"
# runs one core, "--with-analysis" adds app/analysis, "--report" only prints the last results.
MUTATION_JOBS ?= 2
MUTATION_ARGS ?=

mutation: venv
	nice -n 19 $(VENV)/bin/python tests/mutation/run.py --jobs $(MUTATION_JOBS) $(MUTATION_ARGS)

mutation-clean:
	rm -rf build/mutation

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

sysdeps-run:
	@sh deploy/dev-packages.sh $(RUN_PKGS)

sysdeps-test:
	@sh deploy/dev-packages.sh $(TEST_PKGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
