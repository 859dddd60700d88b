"""Issue 21: upgrades never stop guests.

In a booted container with our .deb and three running guests: installing a
newer version of our package, ``apt-get install --reinstall`` of the
release's libvirt packages (skipped when Debian's mirror cannot be reached),
removing, purging and installing our package again.  After each step no guest
was stopped, saved or restarted (the same QEMU pids, no managed-save image,
still ``running (booted)``) and libvirt-guests.service was not run again (the
same InvocationID: neither its ExecStop nor its ExecStart ran).  The tests of
the module run in order on one container; the last one powers off and boots
to show that what the upgrades left still saves and restores every guest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd import harness
from tests.systemd.conftest import on
from tests.systemd.harness import Container
from tests.systemd.root import MIRROR, RELEASES
from tests.systemd.test_shutdown import RESTORED, remove_guests

BOTH = on(*RELEASES, fixture="box")
SCRIPT = "/usr/lib/libvirt/libvirt-guests.sh"


def snapshot(box: Container, names: list[str]) -> dict[str, object]:
    """What must not change: each guest's QEMU pid, state and managed-save flag, and our unit's invocation."""
    guests = {}
    for name in names:
        pid = box.run("cat", f"/run/libvirt/qemu/{name}.pid", check=False).stdout.strip()
        info = box.run("virsh", "dominfo", name).stdout
        managed = re.search(r"Managed save:\s*(\S+)", info)
        guests[name] = (pid, box.run("virsh", "domstate", "--reason", name).stdout.strip(),
                        managed.group(1) if managed else "?")
    show = box.run("systemctl", "show", "-p", "InvocationID", "-p", "ActiveState", "libvirt-guests").stdout
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    unit = [props.get("ActiveState", ""), props.get("InvocationID", "")]
    saves = box.run("sh", "-c", "ls /var/lib/libvirt/qemu/save/ 2>/dev/null", check=False).stdout.split()
    return {"guests": guests, "unit": unit, "save images": saves}


@pytest.fixture(scope="module")
def box(request: pytest.FixtureRequest, make_container, debs) -> Iterator[Container]:
    box = make_container("upgrade", request.param)
    box.boot()
    box.install_deb(debs(request.param))
    box.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
    box.names = box.define_guests(3, prefix="lgt-upg-")  # type: ignore[attr-defined]
    box.wait_ready(box.names)  # type: ignore[attr-defined]
    box.before = snapshot(box, box.names)  # type: ignore[attr-defined]
    yield box
    box.close()  # before the other release's container boots


def unchanged(box: Container) -> None:
    now = snapshot(box, box.names)  # type: ignore[attr-defined]
    before = box.before  # type: ignore[attr-defined]
    assert now == before
    assert all(pid.isdigit() and state == "running (booted)" and managed == "no"
               for pid, state, managed in now["guests"].values()), now  # type: ignore[attr-defined]
    assert now["unit"][0] == "active" and not now["save images"], now  # type: ignore[index]


@BOTH
def test_installing_a_newer_version_of_our_package(box: Container, tmp_path: Path) -> None:
    def newer(source: Path) -> None:
        changelog = source / "debian" / "changelog"
        first, rest = changelog.read_text().split("\n", 1)
        changelog.write_text(first.replace(")", "+upgrade1)", 1) + "\n" + rest)

    deb = harness.build_deb(tmp_path, box.release, newer)
    assert "+upgrade1_all.deb" in deb.name
    box.install_deb(deb)
    version = box.run("dpkg-query", "-W", "-f", "${Version}", harness.DEB_PACKAGE).stdout
    assert version.endswith("+upgrade1"), version
    unchanged(box)


@BOTH
def test_reinstalling_libvirts_packages(box: Container) -> None:
    if box.run("apt-get", "update", "-qq", check=False, timeout=240).returncode != 0:
        pytest.skip(f"apt-get update failed: {MIRROR} cannot be reached from the container")
    installed = box.run("dpkg-query", "-W", "-f", "${Package} ${Status}\n", "libvirt*", "python3-libvirt").stdout
    packages = [line.split()[0] for line in installed.splitlines() if line.endswith(" installed")
                and not line.startswith(harness.DEB_PACKAGE)]
    assert "libvirt-daemon-system" in packages, packages
    reinstall = box.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--reinstall",
                        *packages, check=False, timeout=600)
    if reinstall.returncode != 0 and "Failed to fetch" in reinstall.stderr + reinstall.stdout:
        pytest.skip("the libvirt packages could not be downloaded")
    assert reinstall.returncode == 0, reinstall.stdout[-3000:] + reinstall.stderr[-3000:]
    print(f"reinstalled on {box.release}: {' '.join(packages)}")
    unchanged(box)
    # Debian's script stays diverted: the file in its place is still our shim
    diversions = box.run("dpkg-divert", "--list", "libvirt-guests*").stdout
    assert f"{SCRIPT} to {SCRIPT}.distrib" in diversions
    assert box.run(SCRIPT, "check-config", check=False).returncode == 0


@BOTH
def test_removing_purging_and_installing_our_package_again(box: Container, debs) -> None:
    box.run("dpkg", "-r", harness.DEB_PACKAGE)
    unchanged(box)
    assert "libvirt-guests.sh" not in box.run("dpkg-divert", "--list", "libvirt-guests*").stdout
    assert "guest_is_on" in box.path(SCRIPT).read_text()  # Debian's own script is back
    box.run("dpkg", "--purge", harness.DEB_PACKAGE)
    unchanged(box)
    box.install_deb(debs(box.release))
    unchanged(box)
    assert box.run("libvirt-guests", "--version", check=False).returncode == 0


@BOTH
def test_after_all_that_a_poweroff_saves_and_a_boot_restores_every_guest(box: Container) -> None:
    names = box.names  # type: ignore[attr-defined]
    box.poweroff()
    entries = box.journal()
    lines = harness.service_lines(entries, boot=harness.boot_ids(entries)[-1])
    summary = [msg for _, _, msg in lines if msg.startswith("libvirt-guests stop:")]
    assert len(summary) == 1 and "3 saved" in summary[0], lines  # the only stop of that boot: this poweroff's
    box.boot()
    states, _ = box.wait_states(names, RESTORED, timeout=120)
    assert states == {n: RESTORED for n in names}
    remove_guests(box)
