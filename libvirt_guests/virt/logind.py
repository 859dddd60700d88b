"""Is the host shutting down through logind? logind's ``PreparingForShutdown``
property (org.freedesktop.login1), read over the system bus with ``busctl``
(systemd's own client: no new Python dependency), bounded in time.

libvirt's daemon acts on logind's PrepareForShutdown signal; this is the same
fact, read when we need it. Anything but a clear ``true`` (no busctl, no bus,
no logind, a timeout, an answer not understood) counts as not shutting down:
then we act ourselves, as without the daemon."""

from __future__ import annotations

import json
import os
import subprocess

from libvirt_guests.output import shown

BUSCTL = "busctl"
ENV_BUSCTL = "LIBVIRT_GUESTS_BUSCTL"  # another busctl (tests)
TIMEOUT = 3.0  # seconds for the whole query
_QUERY = ["--system", "--no-pager", "--json=short", "--auto-start=no", f"--timeout={int(TIMEOUT)}",
          "get-property", "org.freedesktop.login1", "/org/freedesktop/login1",
          "org.freedesktop.login1.Manager", "PreparingForShutdown"]


def preparing_for_shutdown(timeout: float = TIMEOUT) -> tuple[bool, str]:
    """(shutting down, how we know) — the second part is one line for messages."""
    busctl = os.environ.get(ENV_BUSCTL) or BUSCTL
    try:
        proc = subprocess.run([busctl, *_QUERY], capture_output=True, text=True, timeout=timeout + 1,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return False, f"logind not asked ({type(err).__name__})"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return False, f"logind did not answer: {shown(last[:200])}"
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        return False, "logind's answer not understood"
    if not isinstance(answer, dict) or answer.get("type") != "b" or not isinstance(answer.get("data"), bool):
        return False, "logind's answer not understood"
    if answer["data"]:
        return True, "logind: PreparingForShutdown=true"
    return False, "logind: PreparingForShutdown=false"
