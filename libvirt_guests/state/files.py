"""File safety for every state file: what counts as ours, the atomic
write, reading without following a link, removing and setting aside."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

FILE_MODE = 0o600
# The most read of any state file (list file, journal, its log): a journal of
# ten thousand guests and their events is a few MiB; a larger file is damage
# (or a file planted to fill the memory of a run at shutdown).
MAX_STATE_BYTES = 64 * 1024 * 1024


class StateError(Exception):
    """A state file that cannot be read or written safely."""


class UntrustedState(StateError):
    """A state file that is a symbolic link, not a regular file, or not ours."""


class DamagedState(StateError):
    """A journal that cannot be understood: damaged, or from a newer version."""


def ours(st: os.stat_result, root_too: bool = False) -> bool:
    """A regular file owned by us (or, if root_too, by root): the only kind of
    state file a run trusts, writes over or removes silently."""
    return stat.S_ISREG(st.st_mode) and (st.st_uid == os.geteuid() or (root_too and st.st_uid == 0))


def what(st: os.stat_result) -> str:
    """What sits at a path, for one line: 'a directory', 'a FIFO of uid 1000'..."""
    kinds = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO",
             stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}
    kind = kinds.get(stat.S_IFMT(st.st_mode), "a file")
    return kind if st.st_uid == os.geteuid() else f"{kind} of uid {st.st_uid}"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(path: Path) -> str:
    return f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}"


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """The names _temp_name gives path's temporary files, and nothing else."""
    return re.compile(rf"\.{re.escape(path.name)}\.[0-9]+\.[0-9a-f]{{8}}")


def _replaceable(path: Path, directory: bool = False) -> None:
    """StateError for what a misconfigured path may name and no run may
    rename, replace or remove: a device (LIBVIRT_GUESTS_LIST_FILE=/dev/null;
    only root makes one, so it was not planted), or a directory that is not
    empty (=/var/lib/libvirt), unless directory. An empty directory, a
    FIFO, a socket, a link or a file can go aside: nothing is lost."""
    try:
        st = os.lstat(path)
    except OSError:
        return  # absent, or the operation itself says why not
    mode = st.st_mode
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise StateError(f"{path} is {what(st)}; left alone")
    if stat.S_ISDIR(mode) and not directory:
        try:
            with os.scandir(path) as entries:
                empty = next(entries, None) is None
        except OSError:
            empty = False
        if not empty:
            raise StateError(f"{path} is {what(st)} that is not empty; left alone")


def write_replacing(path: Path, write: Callable[[int], None], append: bool = False) -> int | None:
    """The atomic write: a temporary file beside path (never through a link),
    write(fd), fsync, rename over path, fsync of the directory, so that a
    crash leaves the old or the new file. The descriptor stays open (and is
    returned) if append, for the journal's log; closed otherwise."""
    tmp = path.parent / _temp_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else 0)
    try:
        fd = os.open(tmp, flags, FILE_MODE)
    except OSError as err:
        raise StateError(f"cannot write {path}: {err.strerror}") from err
    try:
        write(fd)
        os.fsync(fd)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise StateError(f"cannot write {path}: {err.strerror}") from err
    if append:
        return fd
    os.close(fd)
    return None


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write(path: Path, data: bytes) -> None:
    """Replace path with data so that a crash leaves the old or the new file."""
    _replaceable(path)
    write_replacing(path, lambda fd: write_all(fd, data))


def clean_temp_files(*paths: Path) -> list[Path]:
    """Remove what a killed run's atomic_write left beside paths
    (.NAME.PID.HEX, regular files of ours). Call under the run lock, where no
    other writer can be half-way. Returns what was removed."""
    removed: list[Path] = []
    for path in paths:
        pattern = _temp_pattern(path)
        try:
            names = os.listdir(path.parent)
        except OSError:
            continue
        for name in names:
            if not pattern.fullmatch(name):
                continue
            tmp = path.parent / name
            try:
                st = os.lstat(tmp)
                if ours(st):
                    tmp.unlink()
                    removed.append(tmp)
            except OSError:
                continue
    for directory in {p.parent for p in removed}:
        with contextlib.suppress(OSError):
            _fsync_dir(directory)
    return removed


def safe_read(path: Path) -> str | None:
    """Text of a regular file owned by us, None if absent; never via a symlink."""
    data = safe_read_bytes(path)
    return None if data is None else data.decode("utf-8", errors="replace")


def safe_read_bytes(path: Path, limit: int | None = None) -> bytes | None:
    """Bytes of a regular file owned by us, None if absent; never via a
    symlink. DamagedState if it is larger than limit (MAX_STATE_BYTES)."""
    limit = MAX_STATE_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UntrustedState(f"{path} is a symbolic link; refusing to read it") from err
        raise StateError(f"cannot read {path}: {err.strerror}") from err
    st = os.fstat(fd)
    if not ours(st):
        os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedState(f"{path} is not a regular file")
        raise UntrustedState(f"{path} belongs to uid {st.st_uid}, not to us; refusing to trust it")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as err:
            raise StateError(f"cannot read {path}: {err.strerror}") from err
    if len(data) > limit:
        raise DamagedState(f"{path} is larger than {limit // (1024 * 1024)} MiB")
    return data


def unlink(path: Path) -> bool:
    """Remove path durably (the directory is synced); absent is fine (False)."""
    _replaceable(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as err:
        raise StateError(f"cannot remove {path}: {err.strerror}") from err
    try:
        _fsync_dir(path.parent)
    except OSError as err:
        raise StateError(f"cannot remove {path}: {err.strerror}") from err
    return True


def set_aside(path: Path, kind: str, directory: bool = False) -> Path:
    """Rename path (a link is renamed, never followed) to PATH.KIND-STAMP, so
    nothing is lost and the run can go on without it. Only a regular file
    or a link (or, if directory, a directory): see _replaceable."""
    _replaceable(path, directory)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for attempt in range(1000):
        target = path.with_name(f"{path.name}.{kind}-{stamp}" + (f".{attempt}" if attempt else ""))
        if os.path.lexists(target):
            continue
        try:
            os.rename(path, target)
        except OSError as err:
            raise StateError(f"cannot set {path} aside: {err.strerror}") from err
        with contextlib.suppress(OSError):
            _fsync_dir(path.parent)
        return target
    raise StateError(f"cannot set {path} aside: too many files set aside already")


def put_aside(path: Path, kind: str, directory: bool = False) -> str:
    """set_aside, said in words for one line (never raises)."""
    try:
        return f"set aside as {set_aside(path, kind, directory)}"
    except StateError as err:
        return f"{err}; ignoring it"


def shown(text: str, limit: int = 40) -> str:
    """A word from a file, safe to print on one line: escaped, shortened."""
    escaped = text.encode("unicode_escape", errors="backslashreplace").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + f"...({len(text)} characters)"

