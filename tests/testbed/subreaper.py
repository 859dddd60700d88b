"""Run a command as a child subreaper, reaping every orphan below it at once.

Why: libvirt waits for an exited QEMU process to disappear before it reports
the guest off, and QEMU runs daemonized, so its parent is whoever reaps
orphans. A host's init (systemd) does that at once; this sandbox's PID 1
does it about once a second, which puts a second into every guest's
shutdown, for the benchmark's floor as for the tools it compares. Running
libvirtd under this process (PR_SET_CHILD_SUBREAPER) gives the test bed a
host's reaping:

    python3 tests/testbed/subreaper.py libvirtd     # in the foreground, no -d

It ends when its last child has ended. Used by hand for benchmarks
(BENCHMARKS.md), never by the tests."""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: subreaper.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"subreaper.py: prctl: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    code = 0
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return code
        if pid == child:
            code = os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
