"""The maintenance scripts on an appliance tree installed into a temporary root: backup
and restore of real case journals (verified with the real ``lnm verify``), factory reset
keeping or wiping the cases, update with atomic switch, automatic and manual rollback.
Service control goes to a recorder standing in for systemctl."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LNM = REPO / ".venv" / "bin" / "lnm"
PI5 = "Raspberry Pi 5 Model B Rev 1.0"
SAFE = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python < 3.11.4 lacks filters
CASE = {"patient_id": "PSN-0007", "planned_sides": ["L", "R"], "surgeon": "Dr. Example",
        "procedure": "total thyroidectomy", "tube": {"type": "EMG tube", "size_mm": 7.0, "depth_cm": 21}}


class Appliance:
    """An installed tree, the systemctl recorder and a way to run the tools on it."""

    def __init__(self, root: Path, tmp: Path, source: Path) -> None:
        self.root, self.tmp, self.source = root, tmp, source
        self.log = tmp / "systemctl.log"
        self.log.write_text("")
        self.recorder = tmp / "systemctl"
        # Fails the engine's restart while /opt/lnm/current points at $FAIL_RELEASE.
        self.recorder.write_text(
            "#!/bin/sh\n"
            f'echo "$*" >> "{self.log}"\n'
            'case "$*" in "restart lnm-engine.service"|"is-active --quiet lnm-engine.service")\n'
            f'  [ -n "$FAIL_RELEASE" ] && [ "$(readlink "{root}/opt/lnm/current")" = "$FAIL_RELEASE" ] && exit 1;;\n'
            "esac\nexit 0\n")
        self.recorder.chmod(0o755)
        self.data = root / "var/lib/lnm"
        self.journal = self.data / "journal.db"

    def run(self, script: str, *args: str, check: bool = True, stdin: str | None = "",
            env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "LNM_SYSTEMCTL": str(self.recorder), "LNM_BIN": str(LNM),
                    "FAIL_RELEASE": "", **(env or {})}
        result = subprocess.run([str(self.source / "deploy" / script), "--root", str(self.root), *args],
                                capture_output=True, text=True, timeout=120, input=stdin, env=full_env)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def appliance(source, tmp_path) -> Appliance:
    root = tmp_path / "root"
    result = subprocess.run([str(source / "deploy/install.sh"), "--destdir", str(root), "--skip-venv",
                             "--pi-model", PI5], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return Appliance(root, tmp_path, source)


def add_case(path: Path, note: str) -> str:
    from app.record import Journal

    journal = Journal(path)
    try:
        case_id = journal.open_case(CASE)
        journal.append(case_id, "note", {"text": note, "who": "nurse"})
        journal.close_case(case_id)
    finally:
        journal.close()
    return case_id


def case_ids(path: Path) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [r[0] for r in conn.execute("SELECT DISTINCT case_id FROM entries ORDER BY case_id")]


def tamper(path: Path) -> None:
    """Change a recorded note the way someone editing the file by hand would."""
    with sqlite3.connect(path) as conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute("UPDATE entries SET payload = replace(payload, 'start', 'START') WHERE kind = 'note'")


def backup(appliance: Appliance, *args: str, check: bool = True) -> tuple[subprocess.CompletedProcess, Path | None]:
    usb = appliance.tmp / "usb"
    usb.mkdir(exist_ok=True)
    before = set(usb.iterdir())
    result = appliance.run("backup.sh", *args, str(usb), check=check)
    new = sorted(set(usb.iterdir()) - before)
    return result, (new[0] if new else None)


# ---- backup and restore --------------------------------------------------------------------

def test_backup_then_restore_brings_the_cases_back(appliance):
    first = add_case(appliance.journal, "start")
    result, archive = backup(appliance)
    assert archive is not None and archive.name.startswith("lnm-backup-") and archive.name.endswith(".tar.gz")
    assert "hash chain intact" in result.stdout and "Backup written and verified" in result.stdout
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        info = tar.extractfile("./BACKUP-INFO").read().decode()
    assert {"./data/journal.db", "./etc/lnm/default.toml", "./etc/default/lnm", "./SHA256SUMS"} <= names
    assert not any(n.endswith(("-wal", "-shm")) for n in names)
    assert "verified=yes" in info
    assert not list((appliance.tmp / "usb").glob(".lnm-backup*"))  # no staging left behind

    second = add_case(appliance.journal, "after the backup")
    assert case_ids(appliance.journal) == sorted([first, second])
    restored = appliance.run("restore.sh", "--yes", str(archive))
    assert case_ids(appliance.journal) == [first]
    aside = list(appliance.data.glob("pre-restore-*/journal.db"))
    assert len(aside) == 1 and case_ids(aside[0]) == sorted([first, second])  # nothing lost
    calls = appliance.calls()
    assert calls == ["stop lnm-ui.service lnm-engine.service", "start lnm-engine.service lnm-ui.service"]
    assert "Restored from" in restored.stdout
    assert not list(appliance.data.glob(".lnm-restore*"))


def test_restore_refuses_a_damaged_archive(appliance):
    add_case(appliance.journal, "start")
    _, archive = backup(appliance)
    work = appliance.tmp / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(work, **SAFE)
    db = work / "data/journal.db"
    raw = bytearray(db.read_bytes())
    raw[-100] ^= 0xFF
    db.write_bytes(bytes(raw))
    damaged = appliance.tmp / "damaged.tar.gz"
    with tarfile.open(damaged, "w:gz") as tar:
        tar.add(work, arcname=".")
    live = appliance.journal.read_bytes()
    result = appliance.run("restore.sh", "--yes", str(damaged), check=False)
    assert result.returncode != 0 and "checksums do not match" in result.stderr
    assert appliance.journal.read_bytes() == live and appliance.calls() == []  # monitoring never stopped


def test_restore_refuses_an_archive_with_an_altered_case(appliance):
    add_case(appliance.journal, "start")
    _, archive = backup(appliance)
    work = appliance.tmp / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(work, **SAFE)
    tamper(work / "data/journal.db")
    # Checksums made to match: only the hash chain can tell.
    sums = subprocess.run("find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum",
                          shell=True, cwd=work, capture_output=True, text=True, check=True).stdout
    (work / "SHA256SUMS").write_text(sums)
    forged = appliance.tmp / "forged.tar.gz"
    with tarfile.open(forged, "w:gz") as tar:
        tar.add(work, arcname=".")
    live = appliance.journal.read_bytes()
    result = appliance.run("restore.sh", "--yes", str(forged), check=False)
    assert result.returncode != 0 and "failed verification" in result.stderr and "FAILED" in result.stderr
    assert appliance.journal.read_bytes() == live and appliance.calls() == []


def test_restore_asks_before_it_stops_monitoring(appliance):
    add_case(appliance.journal, "start")
    _, archive = backup(appliance)
    result = appliance.run("restore.sh", str(archive), check=False, stdin="")
    assert result.returncode != 0 and "--yes" in result.stderr
    assert appliance.calls() == []


def test_restore_with_config_validates_and_keeps_the_old_settings(appliance):
    add_case(appliance.journal, "start")
    _, archive = backup(appliance)
    default = appliance.root / "etc/lnm/default.toml"
    default.write_text(default.read_text().replace("probe_current_mA = 1.0", "probe_current_mA = 2.0"))
    appliance.run("restore.sh", "--yes", "--with-config", str(archive))
    assert "probe_current_mA = 1.0" in default.read_text()
    kept = list((appliance.root / "etc").glob("lnm.pre-restore-*/default.toml"))
    assert len(kept) == 1 and "probe_current_mA = 2.0" in kept[0].read_text()


def test_backup_of_an_altered_journal_is_written_but_fails(appliance):
    add_case(appliance.journal, "start")
    tamper(appliance.journal)
    result, archive = backup(appliance, check=False)
    assert result.returncode == 1 and "FAILED" in result.stderr and "FAILED verification" in result.stderr
    assert archive is not None  # kept as evidence
    with tarfile.open(archive) as tar:
        assert "verified=NO" in tar.extractfile("./BACKUP-INFO").read().decode()


def test_backup_without_a_journal_says_so(appliance):
    result, archive = backup(appliance, check=False)
    assert result.returncode != 0 and "no case journal" in result.stderr and archive is None


def test_backup_dry_run_writes_nothing(appliance):
    add_case(appliance.journal, "start")
    result, archive = backup(appliance, "--dry-run")
    assert archive is None
    assert "would run: sqlite3" in result.stdout or "would run: python3" in result.stdout
    assert not list(appliance.data.glob("*-shm"))


# ---- factory reset -------------------------------------------------------------------------

def test_factory_reset_needs_an_explicit_choice(appliance):
    result = appliance.run("factory-reset.sh", "--yes", check=False)
    assert result.returncode != 0 and "--keep-cases or --wipe-cases" in result.stderr
    both = appliance.run("factory-reset.sh", "--yes", "--keep-cases", "--wipe-cases", check=False)
    assert both.returncode != 0 and "not both" in both.stderr
    assert appliance.calls() == []


def test_factory_reset_keeping_the_cases(appliance, source):
    appliance.journal.write_bytes(b"SQLite format 3\x00 the cases")
    (appliance.data / "reports/case.pdf").write_bytes(b"%PDF")
    (appliance.data / "ui/config.ini").write_text("[graphics]\n")
    default = appliance.root / "etc/lnm/default.toml"
    default.write_text(default.read_text().replace("probe_current_mA = 1.0", "probe_current_mA = 2.0"))
    (appliance.root / "etc/lnm/profiles/dr-smith.toml").write_text("[stim]\nprobe_current_mA = 1.5\n")
    (appliance.root / "etc/default/lnm").write_text("LNM_BOARD=/dev/ttyACM9\n")
    result = appliance.run("factory-reset.sh", "--keep-cases", "--yes")
    assert default.read_bytes() == (source / "config/default.toml").read_bytes()
    assert sorted(p.name for p in (appliance.root / "etc/lnm/profiles").iterdir()) == \
        sorted(p.name for p in (source / "config/profiles").glob("*.toml"))
    assert "LNM_BOARD=/dev/lnm-board" in (appliance.root / "etc/default/lnm").read_text()
    assert appliance.journal.read_bytes() == b"SQLite format 3\x00 the cases"
    assert (appliance.data / "reports/case.pdf").exists()
    assert list((appliance.data / "ui").iterdir()) == []
    assert "configuration OK" in result.stdout
    assert appliance.calls() == ["stop lnm-ui.service lnm-engine.service", "start lnm-engine.service lnm-ui.service"]


def test_factory_reset_wiping_the_cases_asks_then_wipes(appliance):
    appliance.journal.write_bytes(b"SQLite format 3\x00 the cases")
    refused = appliance.run("factory-reset.sh", "--wipe-cases", check=False, stdin="")
    assert refused.returncode != 0 and appliance.journal.exists() and appliance.calls() == []
    appliance.run("factory-reset.sh", "--wipe-cases", "--yes")
    assert not appliance.journal.exists()
    assert sorted(p.name for p in appliance.data.iterdir()) == ["log", "reports", "ui"]
    assert (appliance.data.stat().st_mode & 0o777) == 0o750


# ---- update and rollback -------------------------------------------------------------------

def new_source(source: Path, tmp: Path) -> Path:
    """The same product with one change: a different release."""
    newer = tmp / "newer"
    shutil.copytree(source, newer, symlinks=True)
    readme = newer / "README.md"
    readme.write_text(readme.read_text() + "\nChanged in the next release.\n")
    return newer


def test_update_switches_atomically_and_rollback_goes_back(appliance, tmp_path):
    add_case(appliance.journal, "start")
    current = appliance.root / "opt/lnm/current"
    old = os.readlink(current)
    newer = new_source(appliance.source, tmp_path)
    result = appliance.run("update.sh", "--yes", "--skip-venv", str(newer))
    new = os.readlink(current)
    assert new != old and new.startswith("releases/0.1.0-")
    assert os.readlink(appliance.root / "opt/lnm/previous") == old
    assert (appliance.root / "opt/lnm" / old).is_dir()  # the old release stays for rollback
    assert "Updated: now running" in result.stdout
    assert appliance.calls()[-3:] == ["restart lnm-engine.service", "is-active --quiet lnm-engine.service",
                                      "restart lnm-ui.service"]
    # The journal was copied aside before the switch.
    assert case_ids(appliance.data / "pre-update/journal.db") == case_ids(appliance.journal)
    listing = appliance.run("update.sh", "--list").stdout
    assert f"{new.split('/')[1]} (current)" in listing and f"{old.split('/')[1]} (previous)" in listing

    appliance.run("update.sh", "--rollback", "--yes")
    assert os.readlink(current) == old
    assert os.readlink(appliance.root / "opt/lnm/previous") == new


def test_update_rolls_back_by_itself_when_the_new_engine_fails(appliance, tmp_path):
    current = appliance.root / "opt/lnm/current"
    old = os.readlink(current)
    newer = new_source(appliance.source, tmp_path)
    # The recorder fails the engine while the new release is current. Its id is the
    # new tree's fingerprint: learn it from a dry run.
    dry = subprocess.run([str(newer / "deploy/install.sh"), "--destdir", str(appliance.root), "--dry-run",
                          "--pi-model", PI5], capture_output=True, text=True, timeout=120)
    new_id = dry.stdout.split("(release ", 1)[1].split(")", 1)[0]
    result = appliance.run("update.sh", "--yes", "--skip-venv", "--no-snapshot", str(newer), check=False,
                           env={"FAIL_RELEASE": f"releases/{new_id}"})
    assert result.returncode != 0 and "rolled back" in result.stderr
    assert os.readlink(current) == old
    restarts = [c for c in appliance.calls() if c.startswith("restart lnm-engine")]
    assert len(restarts) == 2  # the failed start, then the old release again


def test_update_of_the_same_release_restarts_nothing(appliance):
    result = appliance.run("update.sh", "--yes", "--skip-venv", "--no-snapshot", str(appliance.source))
    assert "Already running this release" in result.stdout
    assert not [c for c in appliance.calls() if c.startswith("restart")]


def test_update_dry_run_changes_nothing(appliance, tmp_path):
    newer = new_source(appliance.source, tmp_path)
    current = os.readlink(appliance.root / "opt/lnm/current")
    releases = sorted(p.name for p in (appliance.root / "opt/lnm/releases").iterdir())
    result = appliance.run("update.sh", "--yes", "--skip-venv", "--dry-run", str(newer))
    assert os.readlink(appliance.root / "opt/lnm/current") == current
    assert sorted(p.name for p in (appliance.root / "opt/lnm/releases").iterdir()) == releases
    assert "would restart" in result.stdout and appliance.calls() == []


def test_rollback_without_a_previous_release_says_so(appliance):
    result = appliance.run("update.sh", "--rollback", "--yes", check=False)
    assert result.returncode != 0 and "no previous release" in result.stderr


def test_old_releases_are_pruned_but_never_current_or_previous(appliance, tmp_path):
    seen = [os.readlink(appliance.root / "opt/lnm/current")]
    for n in range(3):
        newer = tmp_path / f"v{n}"
        shutil.copytree(appliance.source, newer, symlinks=True)
        (newer / "README.md").write_text(f"release {n}\n")
        appliance.run("update.sh", "--yes", "--skip-venv", "--no-snapshot", "--keep", "2", str(newer))
        seen.append(os.readlink(appliance.root / "opt/lnm/current"))
    left = sorted(f"releases/{p.name}" for p in (appliance.root / "opt/lnm/releases").iterdir())
    assert left == sorted(seen[-2:])
    assert os.readlink(appliance.root / "opt/lnm/previous") == seen[-2]
