"""USB export: detection, writing, read-back verification, full and read-only sticks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid

import pytest

from app.cli import main
from app.record import Journal
from app.record.usb import UsbError, choose_target, export_case, find_usb_mounts


def test_detects_removable_and_media_mounts(tmp_path):
    sysb = tmp_path / "sys" / "block"
    for disk, removable in (("sda", "0"), ("sdb", "1"), ("mmcblk0", "0")):
        (sysb / disk).mkdir(parents=True)
        (sysb / disk / "removable").write_text(removable + "\n")
    (sysb / "sdb" / "sdb1").mkdir()
    (sysb / "sda" / "sda2").mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda2 / ext4 rw,relatime 0 0\n"
        "proc /proc proc rw 0 0\n"
        "/dev/sdb1 /mnt/usb\\040stick vfat rw,nosuid 0 0\n"
        "/dev/mmcblk0p1 /media/nurse/CARD vfat rw 0 0\n"
        "tmpfs /run tmpfs rw 0 0\n")
    found = find_usb_mounts(mounts, sysb)
    assert [str(p) for p in found] == ["/mnt/usb stick", "/media/nurse/CARD"]
    assert find_usb_mounts(tmp_path / "missing", sysb) == []


def test_choose_target_rules(tmp_path):
    assert choose_target(tmp_path, {}, lambda: []) == tmp_path
    assert choose_target(None, {"LNM_EXPORT_DIR": str(tmp_path)}, lambda: []) == tmp_path
    with pytest.raises(UsbError, match="no USB stick found"):
        choose_target(None, {}, lambda: [])
    with pytest.raises(UsbError, match="more than one"):
        choose_target(None, {}, lambda: [tmp_path / "a", tmp_path / "b"])


def test_export_writes_verifies_and_says_safe_to_remove(tmp_path, synthetic_journal, capsys, monkeypatch):
    path, cid = synthetic_journal
    stick = tmp_path / "stick"
    stick.mkdir()
    monkeypatch.setenv("LNM_EXPORT_DIR", str(stick))
    code = main(["export", cid, "--journal", str(path)])
    out = capsys.readouterr()
    folder = stick / f"LNM-{cid}"
    assert folder.is_dir()
    names = {p.name for p in folder.iterdir()}
    assert {"report.pdf", "case.json", "SHA256SUMS"} <= names
    sums = dict(line.split("  ")[::-1] for line in (folder / "SHA256SUMS").read_text().splitlines())
    for name, digest in sums.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    doc = json.loads((folder / "case.json").read_text())
    assert doc["case"]["surgeon"] is None and doc["generated"]["pseudonymised"] is True
    assert "Dr. A. Example" not in (folder / "case.json").read_text()
    if "case.edf" in names:
        assert code == 0 and "SAFE TO REMOVE" in out.out
    else:  # the EDF+ writer is not in this build: said, not hidden
        assert "EDF+ not written" in out.out
    # a second export does not overwrite the first
    with Journal(path, readonly=True) as j:
        res = export_case(j, cid, target=stick, identified=True, roots=[tmp_path])
    assert res.folder.endswith("-2") and res.verified and res.safe_to_remove and not res.pseudonymised
    assert "Dr. A. Example" in (stick / f"LNM-{cid}-2" / "case.json").read_text()


def test_no_stick_is_a_clear_error(tmp_path, synthetic_journal, capsys, monkeypatch):
    path, cid = synthetic_journal
    monkeypatch.delenv("LNM_EXPORT_DIR", raising=False)
    assert main(["export", cid, "--journal", str(path), "--to", str(tmp_path / "not-mounted")]) == 2
    assert "not a mounted folder" in capsys.readouterr().err


@pytest.fixture()
def tiny_stick(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs stick needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", f"lnm-usb-{uuid.uuid4().hex[:6]}", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_stick_is_a_clear_error(tiny_stick, synthetic_journal):
    path, cid = synthetic_journal
    with Journal(path, readonly=True) as j:
        with pytest.raises(UsbError, match="is full"):
            export_case(j, cid, target=tiny_stick, roots=[tiny_stick.parent])
    assert not any(tiny_stick.iterdir())  # nothing half-written left behind


def test_read_only_stick_is_a_clear_error(tmp_path, synthetic_journal):
    path, cid = synthetic_journal
    stick = tmp_path / "ro-stick"
    stick.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(stick)]).returncode != 0:
            pytest.skip("cannot make a folder read-only for root here")
    else:
        stick.chmod(0o555)
    try:
        with Journal(path, readonly=True) as j:
            with pytest.raises(UsbError, match="cannot be written"):
                export_case(j, cid, target=stick, roots=[tmp_path])
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(stick)])
        else:
            stick.chmod(0o755)
