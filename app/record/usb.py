"""Export of a case to a USB stick: find the stick, write, verify, say when it is safe to remove.

Owns: ``find_usb_mounts``, ``export_case`` and the ``lnm export`` shell around it.
May import: the standard library, ``app.record.export``.

Where it writes. ``--to MOUNTPOINT`` (or ``target=``) wins; else ``$LNM_EXPORT_DIR`` (a
folder the installation designates, e.g. a network share); else the one mounted USB stick:
a mount in ``/proc/mounts`` whose block device is removable (``/sys/block/DEV/removable``
is 1) or whose mount point lies under ``/media/`` or ``/run/media/``. No stick, or more
than one, is an error that says so.

Only below the removable-media folders. The target must be a real folder (not a symbolic
link) whose resolved path lies strictly below one of the resolved ``export.media_roots``
(default ``/media:/mnt:/run/media``) or is ``$LNM_EXPORT_DIR`` or below it: ``--to /etc``,
a path that climbs out with ``..``, and a link to elsewhere are refused before anything is
written. The case folder is created new (never an existing one, never through a link) and
every file in it is created new with ``O_EXCL | O_NOFOLLOW``.

Journaled. A finished export writes an ``exported`` row into the case index (last seq and
hash documented, whether the case verified, the folder and the files' SHA-256): retention
prunes only cases with a verified export of their last entry. ``lnm export`` opens the
journal for writing just for that row; when it cannot, the export stands and it says so.

What it writes. A folder ``LNM-<case id>`` (``-2``, ``-3``... if it exists) holding
``report.pdf``, ``case.json``, ``case.edf`` and ``SHA256SUMS`` (``sha256sum -c``
format). The files are made in a local temporary folder first, their SHA-256 computed,
copied to the stick and fsynced, the stick's cached pages dropped, every file read back
from the stick and compared, then the file system is synced. Only then does it say
"safe to remove". A full or write-protected stick, or a checksum mismatch, gives a clear
message; a partly written folder is removed.

Pseudonymised by default: the document carries the pseudonymous patient id only; the
surgeon's and operator's names are left out unless ``identified=True``
(``lnm export --identified``). The EDF+ patient field holds the pseudonymous id.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping, Sequence

from app.record.export import write_documents
from app.record.atomic import fsync_dir

FILES = {"pdf": "report.pdf", "json": "case.json", "edf": "case.edf"}


class UsbError(OSError):
    """The export cannot be done; the message says why and what to do."""


@dataclass
class ExportResult:
    """What an export wrote, where, and whether it was verified."""

    case_id: str
    target: str
    folder: str
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {sha256, bytes}
    verified: bool = False
    safe_to_remove: bool = False
    pseudonymised: bool = True
    messages: list[str] = field(default_factory=list)


def _unescape(field_: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 3 < len(field_) and field_[i + 1:i + 4].isdigit():
            out.append(chr(int(field_[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def _block_name(device: str, sys_block: Path) -> str | None:
    """``/dev/sdb1`` -> ``sdb`` (the whole disk holding the partition)."""
    name = os.path.basename(os.path.realpath(device)) if device.startswith("/dev/") else ""
    if not name:
        return None
    if (sys_block / name).exists():
        return name
    for disk in sorted(p.name for p in sys_block.iterdir()) if sys_block.is_dir() else []:
        if name.startswith(disk) and (sys_block / disk / name).exists():
            return disk
    return None


def find_usb_mounts(proc_mounts: str | Path = "/proc/mounts", sys_block: str | Path = "/sys/block") -> list[Path]:
    """Mount points of removable media, in /proc/mounts order."""
    sys_block = Path(sys_block)
    try:
        text = Path(proc_mounts).read_text()
    except OSError:
        return []
    found: list[Path] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mnt = _unescape(parts[0]), _unescape(parts[1])
        removable = False
        disk = _block_name(device, sys_block)
        if disk is not None:
            try:
                removable = (sys_block / disk / "removable").read_text().strip() == "1"
            except OSError:
                removable = False
        under_media = mnt.startswith("/media/") or mnt.startswith("/run/media/")
        if (removable or under_media) and Path(mnt) not in found:
            found.append(Path(mnt))
    return found


def media_roots(setting: str | Sequence[str | Path] | None = None) -> list[Path]:
    """The removable-media folders from ``export.media_roots`` (colon-separated), resolved."""
    if setting is None:
        from app.settings import SCHEMA

        setting = SCHEMA["export.media_roots"].default
    parts = setting.split(":") if isinstance(setting, str) else [str(p) for p in setting]
    return [Path(os.path.realpath(p)) for p in parts if p]


def check_target(root: Path, roots: Sequence[Path], env: Mapping[str, str] | None = None) -> Path:
    """``root`` itself when it may be written: a real folder below a media root (module doc)."""
    env = os.environ if env is None else env
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise UsbError(f"the export target {root} is not a mounted folder (it does not exist): plug in the USB "
                       "stick and wait until it is mounted") from None
    except OSError as exc:
        raise UsbError(f"the export target {root} cannot be checked: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UsbError(f"the export target {root} is a symbolic link (to {os.readlink(root)}); it is not followed: "
                       "give the stick's mount point itself")
    if not stat.S_ISDIR(st.st_mode):
        raise UsbError(f"the export target {root} is not a mounted folder")
    real = Path(os.path.realpath(root))
    allowed = [(r, False) for r in roots]
    if env.get("LNM_EXPORT_DIR"):
        allowed.append((Path(os.path.realpath(env["LNM_EXPORT_DIR"])), True))
    for base, inclusive in allowed:
        if base in real.parents or (inclusive and real == base):
            return real
    names = ", ".join(str(r) for r in roots) or "none"
    raise UsbError(f"the export target {root} is not on removable media: exports are written only below {names} "
                   "(setting export.media_roots); the patient's case was not written there")


def choose_target(target: Path | None, env: Mapping[str, str] | None = None,
                  finder: Callable[[], list[Path]] = find_usb_mounts) -> Path:
    """The export target: ``target``, else ``$LNM_EXPORT_DIR``, else the one mounted stick."""
    env = os.environ if env is None else env
    if target is not None:
        return Path(target)
    if env.get("LNM_EXPORT_DIR"):
        return Path(env["LNM_EXPORT_DIR"])
    mounts = finder()
    if not mounts:
        raise UsbError("no USB stick found: plug in a USB stick and wait until it is mounted "
                       "(or give the folder with --to)")
    if len(mounts) > 1:
        raise UsbError("more than one USB stick is mounted (" + ", ".join(map(str, mounts)) +
                       "): choose one with --to")
    return mounts[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_back_sha256(path: Path) -> str:
    """SHA-256 of the file as the stick returns it (cached pages dropped first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        h = hashlib.sha256()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def _copy_fsync(src: Path, dst: Path) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with open(src, "rb") as fi, open(fd, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
        fo.flush()
        os.fsync(fo.fileno())



def _explain(exc: OSError, target: Path, need: int) -> UsbError:
    if exc.errno == errno.ENOSPC:
        return UsbError(f"the USB stick at {target} is full: the export needs {need / 1e6:.1f} MB; "
                        "free some space or use another stick")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return UsbError(f"the USB stick at {target} cannot be written (read-only: write-protect switch, "
                        f"or no permission): {exc.strerror}")
    if exc.errno == errno.ENOENT:
        return UsbError(f"the USB stick at {target} disappeared during the export: plug it in again and repeat")
    return UsbError(f"writing to the USB stick at {target} failed: {exc.strerror or exc}")


def export_case(journal: Any, case_id: str, target: Path | None = None, identified: bool = False,
                env: Mapping[str, str] | None = None, finder: Callable[[], list[Path]] = find_usb_mounts,
                progress: Callable[[str], None] | None = None,
                roots: str | Sequence[str | Path] | None = None) -> ExportResult:
    """Write the case's report, JSON and EDF+ onto the stick and verify them (see module doc).
    ``roots``: the ``export.media_roots`` setting (default: its default)."""
    say = progress or (lambda _msg: None)
    root = check_target(choose_target(target, env, finder), media_roots(roots), env)
    result = ExportResult(case_id, str(root), "", pseudonymised=not identified)
    with tempfile.TemporaryDirectory(prefix="lnm-export-") as tmpdir:
        tmp = Path(tmpdir)
        say(f"preparing the documents of case {case_id} ...")
        written = write_documents(journal, case_id, {k: tmp / v for k, v in FILES.items()}, identified=identified)
        result.messages += [m for m in written.messages if not m.startswith(("case document", "report", "raw data"))]
        if "pdf" not in written.written or "json" not in written.written:
            raise UsbError("the case documents could not be made: " + "; ".join(written.messages))
        names = [FILES[k] for k in ("pdf", "json", "edf") if k in written.written]
        sums = {n: _sha256(tmp / n) for n in names}
        sizes = {n: (tmp / n).stat().st_size for n in names}
        sums_text = "".join(f"{sums[n]}  {n}\n" for n in names)
        (tmp / "SHA256SUMS").write_text(sums_text)
        need = sum(sizes.values()) + len(sums_text) + 64 * 1024
        try:
            st = os.statvfs(root)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = None
        if free is not None and free < need:
            raise UsbError(f"the USB stick at {root} is full: the export needs {need / 1e6:.1f} MB, "
                           f"{free / 1e6:.1f} MB are free; free some space or use another stick")
        folder = root / f"LNM-{case_id}"
        n = 2
        while os.path.lexists(folder):
            folder = root / f"LNM-{case_id}-{n}"
            n += 1
        result.folder = str(folder)
        say(f"writing to {folder} ...")
        try:
            folder.mkdir()
            for name in names + ["SHA256SUMS"]:
                _copy_fsync(tmp / name, folder / name)
            fsync_dir(folder)
            fsync_dir(root)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise _explain(exc, root, need) from None
        say("verifying checksums by reading the files back ...")
        bad = []
        for name in names:
            try:
                got = _read_back_sha256(folder / name)
            except OSError as exc:
                raise _explain(exc, root, need) from None
            if got != sums[name]:
                bad.append(name)
            result.files[name] = {"sha256": sums[name], "bytes": sizes[name]}
        if bad:
            raise UsbError(f"checksum mismatch after writing {', '.join(bad)} to {root}: the stick may be faulty; "
                           "use another stick")
        os.sync()
    result.verified = True
    result.safe_to_remove = True
    result.messages += _journal_export(journal, case_id, written.document or {}, result)
    return result


def _journal_export(journal: Any, case_id: str, doc: Mapping[str, Any], result: ExportResult) -> list[str]:
    """Write the ``exported`` case-index row; the messages say when it could not be written."""
    from app.record.journal import Journal, JournalError

    j = doc.get("journal") or {}
    data = {"last_seq": j.get("last_seq"), "last_hash": j.get("last_hash"),
            "verified": bool(j.get("verified")) and result.verified, "folder": result.folder,
            "files": {name: info["sha256"] for name, info in result.files.items()}}
    try:
        if not getattr(journal, "readonly", True):
            journal.add_index_event("exported", case_id, data)
        else:
            with Journal(journal.path) as w:
                w.add_index_event("exported", case_id, data)
    except (JournalError, OSError) as exc:
        return [f"note: the export was not recorded in the journal ({exc}); retention will not prune this case"]
    return []


def export_case_cli(journal: Any, case_id: str, args: argparse.Namespace, roots: str | None = None) -> int:
    """``lnm export``: the export with its progress, files and "safe to remove" on the terminal."""
    try:
        res = export_case(journal, case_id, target=args.to, identified=args.identified,
                          progress=lambda m: print(m, flush=True), roots=roots)
    except UsbError as exc:
        print(f"lnm export: {exc}", file=sys.stderr)
        print("Nothing usable was left on the stick. Do not rely on this export.", file=sys.stderr)
        return 2
    for m in res.messages:
        print(m)
    for name, info in res.files.items():
        print(f"  {name:<12} {info['bytes']:>10} bytes  sha256 {info['sha256'][:16]}...  verified")
    print(f"  SHA256SUMS written ({'pseudonymised' if res.pseudonymised else 'IDENTIFIED: contains names'})")
    print(f"Export of case {case_id} complete in {res.folder}.")
    print("SAFE TO REMOVE: the USB stick can be removed now.")
    return 0
