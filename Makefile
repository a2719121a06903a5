# LNM: the two commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
# Debian packages: a virtual display and Mesa for Kivy, PDF rendering for the report
# tests, the MQTT broker for the reading station (demo and tests), shellcheck and
# systemd-analyze for the deployment tests, Chromium and its WebDriver for the reading
# station's browser tests.
RUN_PKGS  := xvfb xauth libgl1 libgl1-mesa-dri libegl1 libmtdev1 poppler-utils alsa-utils mosquitto
TEST_PKGS := $(RUN_PKGS) shellcheck systemd chromium chromium-driver

.PHONY: run test bench venv sysdeps-run sysdeps-test clean

run: sysdeps-run venv
	$(VENV)/bin/lnm run

test: sysdeps-test venv
	$(VENV)/bin/python -m pytest -q

bench: venv
	for b in bench/*.py; do $(VENV)/bin/python $$b || exit 1; done

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
