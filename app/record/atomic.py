"""Writing files safely: atomic replacement, durable folders, and never clobbering what is not ours.

Owns: ``atomic_write``, ``fsync_file``, ``fsync_dir``, ``is_journal_file`` and the output
guard ``check_output`` (with ``OutputRefused``).
May import: the standard library only (the journal, the documents, the USB export and the
EDF+ export all write through here).

``atomic_write(path, write)`` writes into a fresh temporary file beside the target (a name
no other file has), fsyncs it, renames it over the target and fsyncs the folder: a reader
never sees half a file, and a crash leaves the old file or the new one.

``check_output(path, kind)`` is asked before a command writes a report, a case JSON or an
EDF+ file, and refuses (``OutputRefused``, an ``OSError`` whose message names the path and
the problem):

- a case journal (a file starting with the SQLite magic), or its ``-wal``/``-shm`` companion,
  ever;
- a folder, a symbolic link, or anything that is not a regular file;
- an existing file that LNM did not write (see ``written_by_lnm``), unless ``force`` is
  given and the file is of the same kind (a PDF for a PDF...);
- an existing file of another kind (a PDF given as the JSON target), even with ``force``.

A file LNM wrote itself (the previous report of the same case, say) is replaced without
``force``: writing the documentation again is normal.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path
from collections.abc import Callable

SQLITE_MAGIC = b"SQLite format 3\x00"
KINDS = ("pdf", "json", "edf")
_JSON_FORMAT = re.compile(rb'"format"\s*:\s*"lnm-(case|settings)/')
_NAMES = {"pdf": "a PDF", "json": "a JSON document", "edf": "an EDF+ recording"}


class OutputRefused(OSError):
    """A target path was refused; the message names the path and why."""


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's content to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a directory's entries (new or renamed files) durable; best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Write via a fresh temporary file beside ``path`` + fsync + rename (+ fsync of the folder).

    ``write(tmp)`` fills the temporary file (it exists, empty, when called)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def _head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def is_journal_file(path: str | os.PathLike) -> bool:
    """True for an SQLite database (a case journal) and for a journal's ``-wal``/``-shm`` file."""
    p = Path(path)
    if p.name.endswith(("-wal", "-shm", "-journal")):
        base = p.with_name(p.name.rsplit("-", 1)[0])
        if base.exists() and is_journal_file(base):
            return True
    try:
        return _head(p, len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def kind_of(head: bytes) -> str | None:
    """The document kind a file's first bytes show (``pdf``, ``json``, ``edf``), or ``None``."""
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if head.startswith(b"0       ") and len(head) >= 256:
        return "edf"
    return None


def written_by_lnm(path: str | os.PathLike, kind: str) -> bool:
    """Whether an existing file is LNM's own output of ``kind``: a PDF whose author is
    LNM, a case JSON (``"format": "lnm-case/..."``), an EDF+ whose recording field names LNM."""
    try:
        head = _head(Path(path))
    except OSError:
        return False
    if kind_of(head) != kind:
        return False
    if kind == "pdf":
        with open(path, "rb") as f:
            data = f.read(1 << 20)
            if len(data) == 1 << 20:  # the info dictionary is near the end of a big PDF
                f.seek(-(1 << 16), os.SEEK_END)
                data += f.read()
        return b"/Author (LNM)" in data
    if kind == "json":
        return _JSON_FORMAT.search(head) is not None
    return b" LNM" in head[88:168]


def check_output(path: str | os.PathLike, kind: str, force: bool = False,
                 protected: tuple[str | os.PathLike, ...] = ()) -> None:
    """Refuse ``path`` as a target of ``kind`` unless it is free or LNM's own (module docstring).
    ``protected``: paths that must never be written (the journal being read)."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}: use {', '.join(KINDS)}")
    p = Path(path)
    real = os.path.realpath(p)
    for other in protected:
        o = os.path.realpath(other)
        if real in (o, o + "-wal", o + "-shm", o + "-journal"):
            raise OutputRefused(f"{p}: this is the case journal; choose another file for the {kind.upper()}")
    try:
        st = os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there to clobber (a missing folder is reported when writing)
    except OSError as exc:
        raise OutputRefused(f"{p}: cannot be checked ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputRefused(f"{p}: is a symbolic link; give the real path of the file to write")
    if stat.S_ISDIR(st.st_mode):
        raise OutputRefused(f"{p}: is a folder; give a file name (or --out-dir for a folder)")
    if not stat.S_ISREG(st.st_mode):
        raise OutputRefused(f"{p}: is not a regular file (a socket, device or pipe); it was not touched")
    if is_journal_file(p):
        raise OutputRefused(f"{p}: is a case journal (an SQLite database); it was not touched")
    if written_by_lnm(p, kind):
        return
    try:
        found = kind_of(_head(p))
    except OSError as exc:
        raise OutputRefused(f"{p}: exists and cannot be read ({exc.strerror}); it was not touched") from None
    if found != kind:
        what = _NAMES.get(found or "", "not " + _NAMES[kind])
        raise OutputRefused(f"{p}: exists and is {what}; it was not touched (choose another file name)")
    if not force:
        raise OutputRefused(f"{p}: exists and was not written by LNM; it was not touched "
                            "(choose another file name, or --force to replace it)")
