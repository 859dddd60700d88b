"""Manual, outside CI (issue 21): dist-upgrade a Debian 12 host with our .deb and running guests to Debian 13.

A container on an overlay of the cached Debian 12 root (tests/systemd/root.py) boots, gets our .deb (built in
that root) and 3 running guests; its sources are switched to trixie and ``apt-get dist-upgrade`` runs with the
guests up (Debian's mirror needed, some minutes).  Then: are the guests untouched (same QEMU pids), did our unit
run (InvocationID), was libvirtd restarted (MainPID), is our package still there, does a poweroff save every
guest and the next boot restore them?  Prints what it saw; exits 1 if a guest was touched or not restored.

Run as root, under the shared lock:  flock /tmp/qemu-system.lock python -m tests.systemd.dist_upgrade
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

from tests.systemd import harness
from tests.systemd.root import MIRROR

RESTORED = "running (restored)"


def pids(box: harness.Container, names: list[str]) -> dict[str, str]:
    return {n: box.run("cat", f"/run/libvirt/qemu/{n}.pid", check=False).stdout.strip() for n in names}


def daemon_version(box: harness.Container) -> str:
    return box.run("virsh", "version", "--daemon", check=False).stdout.split("daemon: ")[-1].strip()


def show(box: harness.Container, unit: str, prop: str) -> str:
    return box.run("systemctl", "show", "-P", prop, unit, check=False).stdout.strip()


def main() -> int:
    problems = []
    with tempfile.TemporaryDirectory(prefix="lgt-distupgrade-") as tmp:
        work = Path(tmp)
        deb = harness.build_deb(work / "deb", "bookworm")
        with harness.container(work / "box", "distup", "bookworm") as box:
            box.boot()
            box.install_deb(deb)
            box.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
            names = box.define_guests(3, prefix="lgt-du-")
            box.wait_ready(names)
            before = pids(box, names)
            invocation = show(box, "libvirt-guests", "InvocationID")
            libvirtd = show(box, "libvirtd", "MainPID")
            print(f"before: {box.run('cat', '/etc/debian_version').stdout.strip()}, "
                  f"libvirt {daemon_version(box)}")
            box.write("/etc/apt/sources.list", f"deb {MIRROR} trixie main\n")
            box.run("apt-get", "update", "-qq", timeout=600)
            t0 = time.monotonic()
            upgrade = box.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "dist-upgrade", "-y", "-q",
                              "-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef",
                              check=False, timeout=3600)
            took = time.monotonic() - t0
            counts = re.search(r"(\d+) upgraded, (\d+) newly installed, (\d+) to remove", upgrade.stdout)
            print(f"dist-upgrade exited {upgrade.returncode} in {took:.0f} s: "
                  f"{counts.group(0) if counts else 'no summary line'}")
            if upgrade.returncode != 0:
                print(upgrade.stdout[-2000:], upgrade.stderr[-2000:])
                problems.append("dist-upgrade failed")
            after = pids(box, names)
            print(f"after: {box.run('cat', '/etc/debian_version').stdout.strip()}, "
                  f"libvirt {daemon_version(box)}")
            print(f"guests' QEMU pids {'unchanged' if after == before else f'CHANGED {before} -> {after}'}; "
                  f"states {sorted(set(box.domstates(names).values()))}")
            if after != before:
                problems.append("a guest was touched")
            same_unit = show(box, "libvirt-guests", "InvocationID") == invocation
            print(f"libvirt-guests.service {'not re-run' if same_unit else 'RE-RUN'} (InvocationID), "
                  f"libvirtd {'not ' if show(box, 'libvirtd', 'MainPID') == libvirtd else ''}restarted")
            if not same_unit:
                problems.append("our unit ran again")
            print("our package:", box.run("dpkg-query", "-W", "-f", "${Version} ${Status}", harness.DEB_PACKAGE,
                                          check=False).stdout,
                  "| diversion:", "yes" if "libvirt-guests.sh.distrib" in box.run(
                      "dpkg-divert", "--list", "libvirt-guests*").stdout else "NO")
            halt = box.poweroff()
            entries = box.journal()
            lines = harness.service_lines(entries, boot=harness.boot_ids(entries)[-1])
            summary = [m for _, _, m in lines if m.startswith("libvirt-guests stop:")]
            print(f"poweroff in {halt:.1f} s: {summary[-1] if summary else 'NO SUMMARY'}")
            box.boot()
            states, _ = box.wait_states(names, RESTORED, timeout=180)
            restored = sum(s == RESTORED for s in states.values())
            print(f"boot: {restored} of {len(names)} restored")
            if restored != len(names):
                problems.append("not all restored")
            box.poweroff()
    print("problems:", ", ".join(problems) or "none")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
