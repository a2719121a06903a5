"""deploy/install.sh run for real into a temporary root (--destdir): what it lays down,
that a second run changes nothing, the dry run, the settings it never overwrites, the
uninstall that keeps the cases, and the purge that asks first."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

PI5 = "Raspberry Pi 5 Model B Rev 1.0"
PI4 = "Raspberry Pi 4 Model B Rev 1.5"
GROUPS = ["dialout", "gpio", "audio", "video", "input", "render"]


def install(source: Path, *args: str, stdin: str | None = None, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(source / "deploy" / "install.sh"), *args], capture_output=True, text=True,
                            timeout=120, input=stdin, env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def pi_root(tmp_path: Path) -> Path:
    """An empty root with what Raspberry Pi OS brings along: the firmware configuration
    and the login prompt on tty1."""
    root = tmp_path / "root"
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text("[all]\ndtparam=audio=on\n")
    wants = root / "etc/systemd/system/getty.target.wants"
    wants.mkdir(parents=True)
    (wants / "getty@tty1.service").symlink_to("/lib/systemd/system/getty@.service")
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path with its type, mode, link target, content digest and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", oct(st.st_mode & 0o7777))
        else:
            out[rel] = ("file", oct(st.st_mode & 0o7777), hashlib.sha256(path.read_bytes()).hexdigest(),
                        st.st_mtime_ns)
    return out


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


@pytest.fixture
def installed(source, tmp_path):
    """A fresh installation each test may change."""
    root = pi_root(tmp_path)
    result = install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5)
    return root, result


@pytest.fixture(scope="module")
def installed_once(source, tmp_path_factory):
    """One installation shared by the tests that only look at it."""
    root = pi_root(tmp_path_factory.mktemp("shared"))
    result = install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5)
    return root, result


# ---- what it lays down --------------------------------------------------------------------

def test_user_and_groups_are_recorded_in_the_root(installed_once):
    root, _ = installed_once
    passwd = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()]
    lnm = [p for p in passwd if p[0] == "lnm"]
    assert len(lnm) == 1
    name, _, uid, gid, _, home, shell = lnm[0]
    assert int(uid) < 1000 and home == "/var/lib/lnm" and shell == "/usr/sbin/nologin"
    groups = {g.split(":")[0]: g.split(":") for g in (root / "etc/group").read_text().splitlines()}
    assert groups["lnm"][2] == gid
    for group in GROUPS:
        assert "lnm" in groups[group][3].split(","), f"lnm not in group {group}"
    assert groups["dialout"][2] == "20" and groups["audio"][2] == "29"  # Debian's static ids


def test_units_rules_and_system_files(installed_once, source):
    root, _ = installed_once
    for unit in ("lnm-engine.service", "lnm-ui.service"):
        laid = root / "etc/systemd/system" / unit
        assert laid.read_bytes() == (source / "deploy/systemd" / unit).read_bytes()
        assert mode(laid) == 0o644
        link = root / "etc/systemd/system/multi-user.target.wants" / unit
        assert os.readlink(link) == f"/etc/systemd/system/{unit}"  # enabled
    # The UI took tty1 over from the login prompt.
    assert not (root / "etc/systemd/system/getty.target.wants/getty@tty1.service").is_symlink()
    rule = (root / "etc/udev/rules.d/60-lnm.rules").read_text()
    assert 'ATTRS{idVendor}=="1209", ATTRS{idProduct}=="0001", SYMLINK+="lnm-board"' in rule
    assert (root / "etc/systemd/journald.conf.d/lnm.conf").read_text().count("SystemMaxUse=") == 1
    assert (root / "etc/tmpfiles.d/lnm.conf").exists()
    assert (root / "etc/logrotate.d/lnm").exists()
    asound = (root / "etc/asound.conf").read_text()
    assert 'pcm "hw:CARD=MAX98357A,DEV=0"' in asound and "@" not in asound.replace("@AUDIO@", "")
    config_txt = (root / "boot/firmware/config.txt").read_text()
    assert config_txt.startswith("[all]\ndtparam=audio=on\n")  # the OS's own lines stay
    assert "dtoverlay=max98357a" in config_txt and config_txt.count("LNM appliance") == 2


def test_configuration_data_and_permissions(installed_once, source):
    root, _ = installed_once
    etc = root / "etc/lnm"
    assert mode(etc) == 0o750 and mode(etc / "profiles") == 0o750
    shipped = [source / "config/default.toml", *sorted((source / "config/profiles").glob("*.toml"))]
    assert len(shipped) >= 2
    for f in shipped:
        laid = etc / f.relative_to(source / "config")
        assert laid.read_bytes() == f.read_bytes()
        assert mode(laid) == 0o640
    assert "LNM_BOARD=/dev/lnm-board" in (root / "etc/default/lnm").read_text()
    for d in ("", "reports", "log", "ui"):
        assert mode(root / "var/lib/lnm" / d) == 0o750
    manifest = (root / "opt/lnm/install-manifest").read_text().splitlines()
    # Ownership cannot be applied under a destination directory: it is recorded.
    assert "dir 0750 lnm:lnm /var/lib/lnm" in manifest
    assert "dir 0750 root:lnm /etc/lnm" in manifest
    assert "conf 0640 root:lnm /etc/lnm/default.toml" in manifest
    assert "file 0644 root:root /etc/systemd/system/lnm-engine.service" in manifest
    assert "file 0644 root:root /etc/udev/rules.d/60-lnm.rules" in manifest
    assert "user - - lnm" in manifest and "getty - - tty1" in manifest


def test_release_layout_and_commands(installed_once, source):
    root, result = installed_once
    current = os.readlink(root / "opt/lnm/current")
    assert current.startswith("releases/0.1.0-")
    release = root / "opt/lnm" / current
    assert release.is_dir() and os.readlink(root / "opt/lnm/venv") == "current"
    assert (release / "share/lnm/config/default.toml").read_bytes() == (source / "config/default.toml").read_bytes()
    assert (release / "share/lnm/deploy/backup.sh").exists()
    assert not list(release.rglob("__pycache__"))
    wrapper = (root / "usr/local/bin/lnm").read_text()
    assert "LNM_DATA_DIR" in wrapper and "exec /opt/lnm/current/bin/lnm" in wrapper
    assert mode(root / "usr/local/bin/lnm") == 0o755
    for tool in ("update", "backup", "restore", "factory-reset"):
        assert os.readlink(root / f"usr/local/sbin/lnm-{tool}") == f"/opt/lnm/current/share/lnm/deploy/{tool}.sh"
    assert (root / "opt/lnm/install-options").read_text().split() == [
        "--gpio-lib", "auto", "--audio", "max98357a", "--board-usb", "1209:0001"]
    out = result.stdout
    # Nothing touched this machine: the host-only steps are reported, not run.
    assert "skipped under" in out and "apt-get install" in out and "systemctl daemon-reload" in out
    assert "rpi-lgpio==0.6" in out  # a Pi 5
    assert "configuration OK" in out


# ---- idempotence ---------------------------------------------------------------------------

def test_second_run_changes_nothing(installed, source):
    root, _ = installed
    before = snapshot(root)
    again = install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5)
    assert snapshot(root) == before
    assert "nothing needed changing" in again.stdout
    assert "new " not in again.stdout and "update " not in again.stdout


def test_local_settings_are_never_overwritten(installed, source):
    root, _ = installed
    default = root / "etc/lnm/default.toml"
    changed = default.read_text().replace("probe_current_mA = 1.0", "probe_current_mA = 2.0")
    assert changed != default.read_text()
    default.write_text(changed)
    (root / "etc/default/lnm").write_text("LNM_BOARD=/dev/ttyACM3\n")
    result = install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5)
    assert default.read_text() == changed
    assert (root / "etc/default/lnm").read_text() == "LNM_BOARD=/dev/ttyACM3\n"
    assert "kept /etc/lnm/default.toml" in result.stdout


def test_a_changed_unit_is_put_back(installed, source):
    root, _ = installed
    unit = root / "etc/systemd/system/lnm-engine.service"
    unit.write_text("[Service]\nExecStart=/bin/false\n")
    result = install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5)
    assert unit.read_bytes() == (source / "deploy/systemd/lnm-engine.service").read_bytes()
    assert "update /etc/systemd/system/lnm-engine.service" in result.stdout


def test_invalid_settings_stop_the_install_before_anything_runs(source, tmp_path):
    root = pi_root(tmp_path)
    (root / "etc/lnm").mkdir(parents=True)
    shipped = (source / "config/default.toml").read_text()
    (root / "etc/lnm/default.toml").write_text(shipped.replace("probe_current_mA = 1.0", "probe_current_mA = 99.0"))
    result = install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5, check=False)
    assert result.returncode != 0
    assert "stim.probe_current_mA" in result.stderr and "mA" in result.stderr
    assert "not valid" in result.stderr
    # Nothing that would start the product was laid down.
    assert not (root / "opt/lnm/current").exists()
    assert not (root / "etc/systemd/system/lnm-engine.service").exists()


# ---- choices -------------------------------------------------------------------------------

@pytest.mark.parametrize("model, expect, absent", [
    (PI5, "rpi-lgpio==0.6", "[pi]"),
    (PI4, "[pi]", "rpi-lgpio"),
    ("Raspberry Pi Compute Module 4 Rev 1.0", "[pi]", "rpi-lgpio"),
])
def test_gpio_library_follows_the_board(source, tmp_path, model, expect, absent):
    result = install(source, "--destdir", str(tmp_path / "r"), "--dry-run", "--pi-model", model)
    pip = [line for line in result.stdout.splitlines() if "pip install" in line]
    assert len(pip) == 1 and expect in pip[0] and absent not in pip[0]
    apt = [line for line in result.stdout.splitlines() if "apt-get install" in line][0]
    assert ("gcc" in apt) == (expect == "[pi]")  # RPi.GPIO is built from source


def test_not_a_pi_warns_and_installs_no_gpio_library(source, tmp_path):
    result = install(source, "--destdir", str(tmp_path / "r"), "--dry-run", "--pi-model", "Generic x86 PC")
    assert "not a Raspberry Pi" in result.stderr
    pip = [line for line in result.stdout.splitlines() if "pip install" in line][0]
    assert "rpi-lgpio" not in pip and "[pi]" not in pip


def test_board_usb_id_and_usb_audio(source, tmp_path):
    root = pi_root(tmp_path)
    install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5,
            "--board-usb", "2E8A:000A", "--audio", "usb", "--audio-card", "Speaker")
    rule = (root / "etc/udev/rules.d/60-lnm.rules").read_text()
    assert 'ATTRS{idVendor}=="2e8a", ATTRS{idProduct}=="000a"' in rule
    assert 'pcm "hw:CARD=Speaker,DEV=0"' in (root / "etc/asound.conf").read_text()
    assert "LNM appliance" not in (root / "boot/firmware/config.txt").read_text()  # no overlay for USB


def test_foreign_asound_conf_is_kept(source, tmp_path):
    root = pi_root(tmp_path)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/asound.conf").write_text("defaults.pcm.card 1\n")
    result = install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5)
    assert (root / "etc/asound.conf").read_text() == "defaults.pcm.card 1\n"
    assert "was not written by LNM" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--board-usb", "12:34"], "VID:PID"),
    (["--audio", "loud"], "--audio loud"),
    (["--gpio-lib", "wiring"], "--gpio-lib wiring"),
    (["--purge"], "--purge goes with --uninstall"),
])
def test_bad_options_are_refused_with_a_reason(source, tmp_path, args, message):
    result = install(source, "--destdir", str(tmp_path / "r"), *args, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "r").exists()


# ---- dry run -------------------------------------------------------------------------------

def test_dry_run_prints_every_step_and_touches_nothing(source, tmp_path):
    root = tmp_path / "root"
    result = install(source, "--destdir", str(root), "--dry-run", "--pi-model", PI5)
    assert not root.exists()
    out = result.stdout
    for expected in [
        "==> System packages", "apt-get install",
        "group lnm", "user lnm",
        "would run: mkdir -p", "/var/lib/lnm",
        "would run: python3 -m venv", "pip install", "rpi-lgpio==0.6",  # the venv step shows
        "would copy", "/etc/lnm/default.toml",
        "would run: lnm config-check /etc/lnm",
        "would link", "/opt/lnm/current",
        "would install", "lnm-engine.service", "lnm-ui.service", "60-lnm.rules", "asound.conf",
        "systemctl daemon-reload", "install-manifest",
        "Dry run:", "nothing was changed",
    ]:
        assert expected in out, f"dry run does not show {expected!r}"


def test_dry_run_on_this_machine_reads_but_never_writes(source):
    """Without --destdir the dry run inspects the real system (packages, users) and
    still changes nothing, even as root."""
    if Path("/opt/lnm").exists() or Path("/etc/lnm").exists():
        pytest.skip("LNM is installed on this machine; the check needs a machine without it")
    result = install(source, "--dry-run", "--pi-model", PI4)
    assert not Path("/opt/lnm").exists() and not Path("/etc/lnm").exists()
    assert not Path("/etc/systemd/system/lnm-engine.service").exists()
    assert "target: / (this system)" in result.stdout
    out = result.stdout
    assert "would run: useradd --system" in out or "lnm" in subprocess.run(
        ["getent", "passwd", "lnm"], capture_output=True, text=True).stdout
    assert "would run: python3 -m venv /opt/lnm/releases/" in out
    assert "would run: systemctl daemon-reload" in out
    assert "Dry run:" in out


def test_dry_run_on_an_installed_system_reports_only_what_differs(installed, source):
    root, _ = installed
    unit = root / "etc/systemd/system/lnm-ui.service"
    unit.write_text("changed locally\n")
    before = snapshot(root)
    result = install(source, "--destdir", str(root), "--skip-venv", "--dry-run", "--pi-model", PI5)
    assert snapshot(root) == before
    assert "update /etc/systemd/system/lnm-ui.service" in result.stdout
    assert "Dry run: 1 change(s) would be made" in result.stdout
    clean = install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5)
    assert "update /etc/systemd/system/lnm-ui.service" in clean.stdout
    assert "Dry run: 0 change(s)" in install(source, "--destdir", str(root), "--skip-venv", "--dry-run",
                                             "--pi-model", PI5).stdout


def test_services_start_engine_first_only_when_something_changed(source, tmp_path):
    root = pi_root(tmp_path)
    log = tmp_path / "systemctl.log"
    recorder = tmp_path / "systemctl"
    recorder.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    recorder.chmod(0o755)
    env = {"LNM_SYSTEMCTL": str(recorder)}
    install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5, env=env)
    calls = log.read_text().splitlines()
    assert calls.index("restart lnm-engine.service") < calls.index("restart lnm-ui.service")
    log.write_text("")
    install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5, env=env)
    # Unchanged: nothing is restarted (a re-run must never interrupt a running case).
    assert log.read_text().splitlines() == ["start lnm-engine.service lnm-ui.service"]


# ---- uninstall -----------------------------------------------------------------------------

def test_uninstall_removes_what_it_installed_and_keeps_the_cases(installed, source, tmp_path):
    root, _ = installed
    journal = root / "var/lib/lnm/journal.db"
    journal.write_bytes(b"SQLite format 3\x00 case data")
    (root / "var/lib/lnm/reports/case-1").mkdir()
    (root / "var/lib/lnm/reports/case-1/report.pdf").write_bytes(b"%PDF")
    pristine = snapshot(pi_root(tmp_path / "pristine"))
    result = install(source, "--destdir", str(root), "--uninstall")
    assert "Kept" in result.stdout
    assert journal.read_bytes() == b"SQLite format 3\x00 case data"
    assert (root / "var/lib/lnm/reports/case-1/report.pdf").exists()
    assert (root / "etc/lnm/default.toml").exists() and (root / "etc/default/lnm").exists()
    assert any(line.startswith("lnm:") for line in (root / "etc/passwd").read_text().splitlines())
    assert os.readlink(root / "etc/systemd/system/getty.target.wants/getty@tty1.service") == \
        "/lib/systemd/system/getty@.service"
    assert (root / "boot/firmware/config.txt").read_text() == "[all]\ndtparam=audio=on\n"
    left = set(snapshot(root)) - set(pristine)
    kept_roots = ("var", "var/lib", "var/lib/lnm", "etc/lnm", "etc/default", "etc/passwd", "etc/group")
    stray = sorted(p for p in left if not any(p == k or p.startswith(k + "/") for k in kept_roots))
    assert stray == [], f"left behind: {stray}"
    # And it can be installed again afterwards.
    install(source, "--destdir", str(root), "--skip-venv", "--pi-model", PI5)
    assert journal.exists()


def test_uninstall_dry_run_touches_nothing(installed, source):
    root, _ = installed
    before = snapshot(root)
    result = install(source, "--destdir", str(root), "--uninstall", "--dry-run")
    assert snapshot(root) == before
    assert "would run: rm -f" in result.stdout and "/etc/systemd/system/lnm-engine.service" in result.stdout


def test_purge_asks_first_then_removes_cases_settings_and_user(installed, source):
    root, _ = installed
    journal = root / "var/lib/lnm/journal.db"
    journal.write_bytes(b"SQLite format 3\x00")
    refused = install(source, "--destdir", str(root), "--uninstall", "--purge", stdin="", check=False)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert journal.exists() and (root / "opt/lnm/current").is_symlink()  # nothing happened
    install(source, "--destdir", str(root), "--uninstall", "--purge", "--yes")
    assert not (root / "var/lib/lnm").exists() and not (root / "etc/lnm").exists()
    assert not (root / "etc/default/lnm").exists() and not (root / "opt/lnm").exists()
    assert "lnm" not in (root / "etc/passwd").read_text()
    for line in (root / "etc/group").read_text().splitlines():
        assert "lnm" not in line.split(":")[0] and "lnm" not in line.split(":")[3].split(","), line
