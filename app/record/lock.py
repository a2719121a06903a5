"""What an engine claims when it starts: its data folder (one engine per folder) and its socket path.

Owns: ``DataFolderLock`` (``DataFolderBusy``) and ``check_socket_path`` (``SocketPathRefused``).
May import: the standard library only.

The lock is an exclusive ``flock`` on ``DATA/engine.lock``, taken without waiting and held
for the engine's life; the file holds the holder's PID and start time for the message a
second engine gives ("the data folder ... is in use by the engine with PID 1234"). The
kernel drops the lock when the process ends, however it ends (kill -9 included), so a
stale file never blocks a restart. ``flock`` locks belong to the open file, so a second
engine in the same process is refused too.

The socket path of the local API must be free, or a socket (a dead engine's, which the API
server replaces): a regular file, a folder, a link or anything else there is refused, so
``--socket DATA/journal.db`` cannot delete the journal.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from pathlib import Path

LOCK_NAME = "engine.lock"


class StartRefused(OSError):
    """An engine cannot claim what it needs; ``str()`` is the one line to print."""

    def __str__(self) -> str:
        return self.strerror or ""


class DataFolderBusy(StartRefused):
    """Another engine holds the data folder; ``pid`` is its process id (0 when unknown)."""

    def __init__(self, message: str, pid: int = 0) -> None:
        super().__init__(errno.EBUSY, message)
        self.pid = pid


class SocketPathRefused(StartRefused):
    """The API socket path holds something that is not a socket."""


class DataFolderLock:
    """The exclusive claim of one engine on a data folder (``acquire`` ... ``release``)."""

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DataFolderLock:
        """Take the lock or raise ``DataFolderBusy`` naming the holder's PID."""
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise StartRefused(errno.ENOTDIR, f"the data folder {self.data_dir} is a file, not a folder; "
                                                    "it was not touched (give a folder with --data)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"the engine with PID {holder}" if holder else "another engine"
                raise DataFolderBusy(f"the data folder {self.data_dir} is in use by {who}; "
                                     "one engine per data folder (stop it first, or give another --data)",
                                     holder) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the folder up (also done by the kernel when the process ends)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> DataFolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
        return int(text[0]) if text else 0
    except (OSError, ValueError):
        return 0


def check_socket_path(path: str | os.PathLike) -> None:
    """Refuse a socket path that holds anything but a socket (``SocketPathRefused``)."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SocketPathRefused(errno.EINVAL, f"socket path {p}: cannot be checked ({exc.strerror})") from None
    if stat.S_ISSOCK(st.st_mode):
        return
    what = ("a symbolic link" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode)
            else "a file" if stat.S_ISREG(st.st_mode) else "not a socket")
    raise SocketPathRefused(errno.EEXIST, f"socket path {p}: is {what}, not a socket; it was not touched "
                                          "(give a free path with --socket)")
