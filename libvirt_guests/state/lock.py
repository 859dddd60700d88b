"""Locks: the 'started' lock file that `status` reads, and the run lock
that keeps one invocation at a time."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from libvirt_guests.state.files import FILE_MODE, StateError, ours, put_aside, what

# --- the 'started' lock file ---------------------------------------------


def marker_exists(path: Path) -> bool:
    """True if the lock file is a regular file of ours (a planted one is not)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return False
    return ours(st)


def touch_marker(path: Path) -> str | None:
    """Create the lock file afresh, replacing anything someone else planted
    (the lock directory is writable by every user). Never raises: the lock
    file must not change the outcome of a start; returns the one line to
    report when something was planted or the file cannot be made."""
    note = None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as err:
        return f"cannot create the lock file {path}: {err.strerror}; `status` will not say started"
    if st is not None:
        if ours(st):
            try:
                os.utime(path, follow_symlinks=False)
            except OSError as err:
                return f"cannot update the lock file {path}: {err.strerror}"
            return None
        try:
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):  # only root makes one: not planted
                return f"{path} is {what(st)}; left alone: `status` will not say started"
            if stat.S_ISDIR(st.st_mode):
                note = f"{path} was {what(st)}; {put_aside(path, 'untrusted', directory=True)}"
            else:
                path.unlink()
                note = f"{path} was {what(st)}; replaced by the lock file"
        except OSError as err:
            return f"{path} is {what(st)} and cannot be replaced ({err.strerror}); `status` will not say started"
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE))
    except OSError as err:
        return (note + "; " if note else "") + (
            f"cannot create the lock file {path}: {err.strerror}; `status` will not say started")
    return note


def clear_marker(path: Path) -> str | None:
    """Remove the lock file at stop. Never raises; a planted directory is left
    where it is (it does not count as 'started'); returns a line to report."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"cannot look at the lock file {path}: {err.strerror}"
    if stat.S_ISDIR(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return f"{path} is {what(st)}, not a lock file; left alone (`status` does not count it)"
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        return f"cannot remove the lock file {path}: {err.strerror}"
    note = None if ours(st) else f"{path} was {what(st)}; removed"
    return note


# --- the run lock ---------------------------------------------------------


class RunLockBusy(StateError):
    """Another invocation held the run lock for longer than we may wait."""


class RunLock:
    """One invocation at a time: flock on a private file, waiting up to a bound.

    StateError when the lock file cannot be used at all (read-only or missing
    directory, a file that is not ours); RunLockBusy when another invocation
    holds it too long."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.writable = True

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except OSError as err:
            if err.errno == errno.EROFS:
                # A read-only file system: an existing lock file still locks
                # (flock needs no write access); only our pid is not written.
                with contextlib.suppress(OSError):
                    fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    self.writable = False
                    return fd
            raise StateError(f"cannot open run lock {self.path}: {err.strerror}") from err

    def acquire(self, wait: float, on_wait: Callable[[str], None],
                interrupted: Callable[[], bool] = lambda: False) -> None:
        """Take the lock, waiting up to `wait` s; RunLockBusy past it, or as
        soon as interrupted() (a signal: the run ends without acting)."""
        fd = self._open()
        st = os.fstat(fd)
        if not ours(st):
            os.close(fd)
            raise StateError(f"run lock {self.path} is not a regular file of ours; refusing to use it")
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if interrupted():
                    os.close(fd)
                    raise RunLockBusy(f"another libvirt-guests (pid {holder}) is still running; "
                                      "interrupted while waiting for it") from None
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RunLockBusy(
                        f"another libvirt-guests (pid {holder}) is still running; gave up waiting after {wait:g} s"
                    ) from None
                if not told:
                    on_wait(f"waiting for another libvirt-guests (pid {holder}) to finish, up to {wait:g} s")
                    told = True
                time.sleep(0.2)
        if self.writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            if self.writable:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None
