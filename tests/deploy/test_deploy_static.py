"""Deployment files checked as they are: shellcheck, systemd-analyze verify, and the
promises the units and the udev rule make (engine first and watched, UI restarted on
its own without taking the engine along, the board's stable name and permissions)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
SCRIPTS = sorted(DEPLOY.glob("*.sh"))


def _tool(name: str) -> str:
    """The tool's path; skip only when it is missing AND we are not root (make test
    installs it as root, so a missing tool under root is a failure, not a skip)."""
    path = shutil.which(name)
    if path:
        return path
    if os.geteuid() != 0:
        pytest.skip(f"{name} is not installed and this is not root, so it cannot be installed "
                    f"(make test installs it as root: apt-get install {name})")
    pytest.fail(f"{name} is missing although running as root: `make test` should have installed it "
                f"(apt-get install {'systemd' if name == 'systemd-analyze' else name})")


def parse_unit(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (systemd allows repeats)."""
    out, section = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(unit: list[tuple[str, str, str]], section: str, key: str) -> list[str]:
    return [v for s, k, v in unit if s == section and k == key]


def words(unit, section, key) -> set[str]:
    return {w for v in values(unit, section, key) for w in v.split()}


# ---- scripts ----------------------------------------------------------------------------

def test_every_script_is_shellcheck_clean():
    shellcheck = _tool("shellcheck")
    assert SCRIPTS, "no scripts found in deploy/"
    result = subprocess.run([shellcheck, "-x", "--severity=style", *map(str, SCRIPTS)],
                            cwd=DEPLOY, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_would_catch_a_fault(tmp_path):
    shellcheck = _tool("shellcheck")
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\nrm -rf $1/*\n")
    result = subprocess.run([shellcheck, str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "SC2086" in result.stdout


def test_scripts_are_executable_and_strict():
    for script in SCRIPTS:
        if script.name == "lib.sh":
            continue  # sourced, not run
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        text = script.read_text()
        if script.name != "dev-packages.sh":
            assert text.startswith("#!/usr/bin/env bash\n"), script.name
            assert "set -euo pipefail" in text, script.name


@pytest.mark.parametrize("script", ["install.sh", "update.sh", "backup.sh", "restore.sh", "factory-reset.sh"])
def test_scripts_explain_themselves(script):
    result = subprocess.run([str(DEPLOY / script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    bad = subprocess.run([str(DEPLOY / script), "--no-such-option"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "unknown option --no-such-option" in bad.stderr


# ---- systemd units ------------------------------------------------------------------------

def _verify(unit_dir: Path) -> subprocess.CompletedProcess:
    analyze = _tool("systemd-analyze")
    # Offline: no running systemd needed; the unit files are given by path.
    return subprocess.run([analyze, "verify", "--man=no", *sorted(p.name for p in unit_dir.glob("*.service"))],
                          cwd=unit_dir, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})


def _units_with_fake_binary(tmp_path: Path) -> Path:
    """Copies of the units whose ExecStart points at an executable that exists here
    (systemd-analyze verify checks that the command is there)."""
    fake = tmp_path / "opt" / "bin" / "lnm"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS:
        text = unit.read_text().replace("/opt/lnm/current/bin/lnm", str(fake))
        (units / unit.name).write_text(text)
    return units


def test_units_pass_systemd_analyze_verify(tmp_path):
    units = _units_with_fake_binary(tmp_path)
    result = _verify(units)
    report = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, report
    # Warnings (unknown keys, bad values) do not change the exit status: none allowed.
    assert report == "", report


def test_verify_would_catch_a_fault(tmp_path):
    units = _units_with_fake_binary(tmp_path)
    engine = units / "lnm-engine.service"
    engine.write_text(engine.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    result = _verify(units)
    assert "WatchdogSecs" in result.stdout + result.stderr


def test_engine_unit_is_watched_restarted_and_first():
    u = parse_unit(DEPLOY / "systemd" / "lnm-engine.service")
    assert values(u, "Service", "Type") == ["notify"]
    assert values(u, "Service", "WatchdogSec")
    assert values(u, "Service", "Restart") == ["on-failure"]
    assert values(u, "Unit", "StartLimitIntervalSec") == ["0"]  # never gives up
    assert "lnm-ui.service" in words(u, "Unit", "Before")
    assert values(u, "Service", "User") == ["lnm"]
    assert values(u, "Service", "RuntimeDirectory") == ["lnm"]
    assert "/var/lib/lnm" in words(u, "Unit", "RequiresMountsFor")
    exec_start = values(u, "Service", "ExecStart")[0].split()
    assert exec_start[:2] == ["/opt/lnm/current/bin/lnm", "engine"]
    for flag, value in [("--config", "/etc/lnm"), ("--data", "/var/lib/lnm"),
                        ("--socket", "/run/lnm/engine.sock"), ("--board", "${LNM_BOARD}")]:
        assert exec_start[exec_start.index(flag) + 1] == value
    # The hardening keeps the hardware reachable.
    keys = {k for _, k, _ in u}
    for forbidden in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock",
                      "ProtectKernelTunables", "ProcSubset", "PrivateUsers", "DynamicUser"):
        assert forbidden not in keys, f"{forbidden}= would cut the engine off serial/GPIO/audio"
    assert values(u, "Service", "NoNewPrivileges") == ["yes"]
    assert values(u, "Service", "ProtectSystem") == ["strict"]
    assert values(u, "Install", "WantedBy") == ["multi-user.target"]


def test_ui_unit_restarts_alone_and_never_takes_the_engine_down():
    u = parse_unit(DEPLOY / "systemd" / "lnm-ui.service")
    assert values(u, "Service", "Restart") == ["always"]
    assert "lnm-engine.service" in words(u, "Unit", "After")
    assert "lnm-engine.service" in words(u, "Unit", "Wants")
    for binding in ("Requires", "Requisite", "BindsTo", "PartOf", "PropagatesStopTo"):
        assert "lnm-engine.service" not in words(u, "Unit", binding), binding
    engine = parse_unit(DEPLOY / "systemd" / "lnm-engine.service")
    for binding in ("Requires", "Requisite", "BindsTo", "PartOf", "Wants", "PropagatesStopTo"):
        assert "lnm-ui.service" not in words(engine, "Unit", binding), binding
    env = words(u, "Service", "Environment")
    assert "SDL_VIDEODRIVER=kmsdrm" in env and "KIVY_WINDOW=sdl2" in env
    assert values(u, "Service", "User") == ["lnm"]
    assert values(u, "Service", "TTYPath") == ["/dev/tty1"]
    assert "getty@tty1.service" in words(u, "Unit", "Conflicts")
    exec_start = values(u, "Service", "ExecStart")[0].split()
    assert exec_start[:2] == ["/opt/lnm/current/bin/lnm", "ui"]
    assert exec_start[exec_start.index("--socket") + 1] == "/run/lnm/engine.sock"
    keys = {k for _, k, _ in u}
    assert "PrivateDevices" not in keys and "DevicePolicy" not in keys


# ---- udev, audio, system files -------------------------------------------------------------

def _udev_rules(path: Path) -> list[dict[str, str]]:
    rules = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = {}
        for part in re.split(r",\s*", line.strip()):
            m = re.fullmatch(r'([A-Za-z_]+(?:\{[^}]+\})?)\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"', part)
            assert m, f"malformed udev key {part!r} in {path.name}"
            fields[m.group(1) + m.group(2)] = m.group(3)
        rules.append(fields)
    return rules


def test_udev_rule_names_the_board_for_the_lnm_user():
    rules = _udev_rules(DEPLOY / "udev" / "60-lnm.rules")
    board = [r for r in rules if r.get("SYMLINK+=") == "lnm-board"]
    assert len(board) == 1
    rule = board[0]
    assert rule["SUBSYSTEM=="] == "tty"
    assert rule["ATTRS{idVendor}=="] == "1209" and rule["ATTRS{idProduct}=="] == "0001"
    assert rule["GROUP="] == "lnm" and rule["MODE="] == "0660"
    assert rule["ENV{ID_MM_DEVICE_IGNORE}="] == "1"  # ModemManager keeps off the port
    text = (DEPLOY / "udev" / "60-lnm.rules").read_text()
    assert "PLACEHOLDER" in text and "--board-usb" in text


def test_asound_template_routes_the_default_device_to_a_named_card():
    text = (DEPLOY / "audio" / "asound.conf.in").read_text()
    assert "pcm.!default" in text and "ctl.!default" in text
    assert 'pcm "hw:CARD=@CARD@,DEV=0"' in text
    assert "deploy/install.sh" in text.splitlines()[0]  # the installer recognises its own file


def test_tmpfiles_never_ages_out_the_journal():
    for line in (DEPLOY / "system" / "tmpfiles-lnm.conf").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        kind, path, mode, user, group, age = line.split()[:6]
        assert (user, group) == ("lnm", "lnm")
        if age != "-":
            assert path == "/var/lib/lnm/reports", f"{path} must not be aged out"


# ---- the units, the product and the documents agree -------------------------------------------

def _exec_args(unit: str) -> list[str]:
    """The unit's ExecStart arguments after ``lnm SUBCOMMAND``, with the unit's default
    environment substituted the way systemd does."""
    u = parse_unit(DEPLOY / "systemd" / unit)
    env = dict(w.split("=", 1) for w in words(u, "Service", "Environment"))
    args = values(u, "Service", "ExecStart")[0].split()[2:]
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], a) for a in args]


@pytest.mark.parametrize("unit, module", [("lnm-engine.service", "app.engine.cli"), ("lnm-ui.service", "app.ui.cli")])
def test_the_product_accepts_what_the_units_pass(unit, module):
    import argparse
    import importlib

    cli = importlib.import_module(module)
    parser = argparse.ArgumentParser(prog="lnm", exit_on_error=False)
    cli.configure(parser)
    args = _exec_args(unit)
    parsed = parser.parse_args(args)  # raises (and fails the test) on an unknown flag or value
    if unit == "lnm-engine.service":
        assert str(parsed.board) == "/dev/lnm-board" and parsed.gpio == "rpi" and parsed.audio == "alsa"
        assert str(parsed.data) == "/var/lib/lnm" and str(parsed.config) == "/etc/lnm"


def test_readme_documents_the_interface_the_units_use():
    readme = (DEPLOY / "README.md").read_text()
    for unit in ("lnm-engine.service", "lnm-ui.service"):
        for arg in _exec_args(unit):
            if arg.startswith("--"):
                assert arg in readme, f"README.md does not document {arg} ({unit})"
    assert "sudo lnm/deploy/install.sh" in readme  # the one install command
    for section in ("Power-loss safety", "Time", "Update and rollback", "Backup and restore",
                    "Factory reset", "recurse=0"):
        assert section in readme


def test_hardware_wiring_table_matches_the_code():
    from app.outputs import gpio

    text = (DEPLOY / "HARDWARE.md").read_text()
    documented = {m.group(1): int(m.group(2))
                  for m in re.finditer(r"^\| (red|yellow|green) [^|]*LED[^|]*\| GPIO(\d+) ", text, re.M)}
    documented.update({name: int(m.group(1)) for name in ("buzzer", "footswitch")
                       for m in [re.search(rf"^\| [^|]*{name}[^|]*\| GPIO(\d+) ", text, re.M | re.I)] if m})
    code = {"red": gpio.DEFAULT_WIRING[gpio.RED], "yellow": gpio.DEFAULT_WIRING[gpio.YELLOW],
            "green": gpio.DEFAULT_WIRING[gpio.GREEN], "buzzer": gpio.DEFAULT_WIRING[gpio.BUZZER],
            "footswitch": gpio.DEFAULT_WIRING[gpio.FOOTSWITCH]}
    assert documented == code


def test_hardware_guide_points_to_the_protocol():
    text = (DEPLOY / "HARDWARE.md").read_text()
    assert "](../firmware_bridge/PROTOCOL.md)" in text
    assert (REPO / "firmware_bridge" / "PROTOCOL.md").exists()
    for promise in ("500 ms", "2 s", "OUT_OF_RANGE"):
        assert promise in text
