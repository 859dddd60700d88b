"""Show libvirt-guests doing its job on two tiny test-bed guests, touching nothing else.

Boots two guests on a private session-mode libvirtd (tests/testbed/session.py:
its own user, socket and guests, not qemu:///system), runs ``libvirt-guests
stop`` (they are saved) and ``libvirt-guests start`` (they come back), then
removes them.  The tool's configuration, list, lock and state files are in a
temporary directory and URIS names only that daemon.  Run as root:

    .venv/bin/python -m tests.testbed.demo
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt

from tests.testbed import session
from tests.testbed.guests import domain_xml
from tests.testbed.images import ensure_images

NAMES = ("lgt-demo-1", "lgt-demo-2")
STATES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
          libvirt.VIR_DOMAIN_PAUSED: "paused"}


def show(conn: libvirt.virConnect, when: str) -> None:
    parts = []
    for name in NAMES:
        dom = conn.lookupByName(name)
        state = STATES.get(dom.state()[0], str(dom.state()[0]))
        parts.append(f"{name}: {state}{', saved' if dom.hasManagedSaveImage() else ''}")
    print(f"== {when}: " + "; ".join(parts), flush=True)


def tool(command: str, env: dict[str, str]) -> None:
    print(f"$ libvirt-guests {command}", flush=True)
    subprocess.run([sys.executable, "-m", "libvirt_guests", command], env=env, check=False)


def main() -> int:
    if os.geteuid() != 0:
        print("demo: run as root (it starts a private libvirtd as a test user)", file=sys.stderr)
        return 1
    images = ensure_images()
    was_up = session._answers()
    uri = session.ensure_session_daemon()
    conn = libvirt.open(uri)
    others = [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE) if d.name() not in NAMES]
    if others:
        print(f"demo: {uri} runs other guests ({', '.join(others)}): not touching them, try later", file=sys.stderr)
        return 1
    try:
        for name in NAMES:
            with_log = session.session_xml(domain_xml(name, images=images), name)
            conn.defineXML(with_log).create()
        deadline = time.monotonic() + 120
        while not all(session.serial_log(n).exists() and "LGT-READY" in session.serial_log(n).read_text()
                      for n in NAMES):
            if time.monotonic() > deadline:
                print("demo: guests did not boot within 120 s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        show(conn, "booted")
        with tempfile.TemporaryDirectory(prefix="lgt-demo-") as tmp:
            config = Path(tmp) / "libvirt-guests"
            config.write_text(f'URIS="{uri}"\nON_SHUTDOWN=suspend\nON_BOOT=start\n')
            env = {**os.environ, "LIBVIRT_GUESTS_CONFIG": str(config),
                   "LIBVIRT_GUESTS_LIST_FILE": f"{tmp}/list", "LIBVIRT_GUESTS_LOCK_FILE": f"{tmp}/lock",
                   "LIBVIRT_GUESTS_STATE_FILE": f"{tmp}/state"}
            tool("stop", env)
            show(conn, "after stop")
            tool("start", env)
            show(conn, "after start")
    finally:
        for name in NAMES:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        conn.close()
        if not was_up:
            session.stop_session_daemon()
    print("== cleaned up: demo guests removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
