"""Issue 21, ordering: what libvirt-guests.service is ordered after, as
systemd itself loads it in a booted Debian 12 and Debian 13, and that a real
poweroff honours it.

At shutdown systemd stops units in the reverse order of their After=: every
unit ours is After= stays up until our stop has saved or shut down the
guests.  Besides the libvirt daemons, virtlogd, virtlockd and the machine
scopes (issue 11), that is network storage (remote-fs.target, the iSCSI
daemon and sessions: a guest whose disk is on NFS or iSCSI must be saved
before its disk goes) and NUT's server and drivers (a stop may ask the UPS
for its remaining runtime).  libvirtd.service is After=remote-fs.target and
iscsid.service too, but that orders us only while libvirtd.service is
active: not when only its socket is (socket activation), nor with the
modular daemons.  So ours says it itself.

The real iSCSI and NUT units are not in the test roots; the poweroff test
puts units of the same names in /etc, with the relations that matter of
Debian's (open-iscsi 2.1.8 and 2.1.11, nut 2.8.0 and 2.8.1, whose unit names
are the same in both releases), whose ExecStop records whether
libvirt-guests.service had finished stopping.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.systemd import harness
from tests.systemd.conftest import on
from tests.systemd.harness import Container
from tests.systemd.root import RELEASES
from tests.systemd.test_shutdown import DROP_IN, last

BOTH = on(*RELEASES, fixture="box")
#: What our unit and the .deb's drop-in order libvirt-guests.service after, beyond Debian's own unit.
OURS_AFTER = ["libvirtd.service", "virtqemud.service", "virtlxcd.service", "virtxend.service", "virtvboxd.service",
              "virtvzd.service", "virtlogd.service", "virtlockd.service", "machine.slice", "systemd-machined.service",
              "remote-fs.target", "iscsid.service", "iscsi.service", "open-iscsi.service",
              "nut-server.service", "nut-driver.target"]
VENDOR_UNIT = "/usr/lib/systemd/system/libvirt-guests.service"
ORDER_LOG = "/var/log/lgt-order"
RECORD = f"ExecStop=/bin/sh -c 'echo \"%n $(systemctl is-active libvirt-guests.service)\" >> {ORDER_LOG}'\n"
#: Stand-ins for open-iscsi's and nut-server's units: their names and the relations between them.
STUBS = {
    "iscsid.service": "[Unit]\nDefaultDependencies=no\nConflicts=shutdown.target\nBefore=shutdown.target\n"
                      "Before=remote-fs-pre.target\n",
    "open-iscsi.service": "[Unit]\nDefaultDependencies=no\nConflicts=shutdown.target\nBefore=shutdown.target\n"
                          "After=iscsid.service\nBefore=remote-fs-pre.target\n",
    "nut-driver@.service": "[Unit]\nPartOf=nut-driver.target\n",
    "nut-driver.target": "[Unit]\nDescription=stand-in for nut-driver.target\n"
                         "[Install]\nWantedBy=multi-user.target\n",
    "nut-server.service": "[Unit]\nAfter=nut-driver.target\nWants=nut-driver.target\n",
}
STUB_SERVICE = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n" + RECORD


@pytest.fixture(scope="module")
def box(request: pytest.FixtureRequest, make_container, debs) -> Iterator[Container]:
    """Our .deb on the release's root: Debian's libvirt-guests.service with our drop-in."""
    box = make_container("units", request.param)
    box.boot()
    box.install_deb(debs(request.param))
    box.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
    yield box
    box.close()  # before the other release's container boots


def after(box: Container, unit: str = "libvirt-guests.service") -> list[str]:
    return box.run("systemctl", "show", "-P", "After", unit).stdout.split()


def vendor_after(box: Container) -> list[str]:
    """The After= of the release's own libvirt-guests.service file."""
    text = box.path(VENDOR_UNIT).read_text()
    return [u for line in text.splitlines() if line.startswith("After=") for u in line[6:].split()]


@BOTH
def test_debian_unit_with_our_drop_in_is_ordered_after_storage_nut_and_the_daemons(box: Container) -> None:
    loaded = after(box)
    drop_ins = box.run("systemctl", "show", "-P", "DropInPaths", "libvirt-guests").stdout.split()
    assert DROP_IN in drop_ins or DROP_IN[4:] in drop_ins, drop_ins
    missing = [u for u in [*vendor_after(box), *OURS_AFTER] if u not in loaded]
    assert not missing, f"libvirt-guests.service not After= {missing}"
    # at least as safe as libvirt's own daemon unit about storage: what libvirtd waits for, we outlive
    for unit in ("remote-fs.target", "iscsid.service"):
        assert unit in after(box, "libvirtd.service"), unit
    # nothing of this makes an ordering cycle (systemd would break it by dropping a job)
    cycles = [e.get("MESSAGE", "") for e in box.journal() if "ordering cycle" in str(e.get("MESSAGE", ""))]
    assert not cycles, cycles


@BOTH
def test_own_unit_is_ordered_the_same_way(box: Container) -> None:
    """packaging/systemd/libvirt-guests.service alone (the .deb's drop-in masked), in this release's systemd."""
    mask = "/etc/systemd/system/libvirt-guests.service.d/libvirt-guests-python.conf"
    box.run("mkdir", "-p", mask.rsplit("/", 1)[0])
    box.run("ln", "-sf", "/dev/null", mask)
    box.install_unit(harness.REPO / "packaging" / "systemd" / "libvirt-guests.service")
    try:
        show = box.run("systemctl", "show", "-P", "FragmentPath", "-P", "DropInPaths", "libvirt-guests").stdout
        assert show.split()[0] == "/etc/systemd/system/libvirt-guests.service", show
        loaded = after(box)
        missing = [u for u in [*vendor_after(box), *OURS_AFTER] if u not in loaded]
        assert not missing, f"our own unit not After= {missing}"
        verify = box.run("systemd-analyze", "verify", "/etc/systemd/system/libvirt-guests.service", check=False)
        assert "ordering cycle" not in verify.stderr.lower(), verify.stderr
    finally:
        box.run("rm", "-f", mask, "/etc/systemd/system/libvirt-guests.service")
        box.run("systemctl", "daemon-reload")
    paths = box.run("systemctl", "show", "-P", "FragmentPath", "-P", "DropInPaths", "libvirt-guests").stdout.split()
    assert paths[0].endswith("/systemd/system/libvirt-guests.service") and not paths[0].startswith("/etc/"), paths
    assert [p for p in paths[1:] if p.endswith(DROP_IN[4:])], paths  # the .deb's drop-in is back in force


@BOTH
def test_poweroff_stops_network_storage_and_nut_only_after_our_stop(box: Container) -> None:
    """A real poweroff with a guest to save: iSCSI, NUT and remote-fs.target stop only once we have stopped."""
    for name, unit in STUBS.items():
        body = unit if name.endswith(".target") else unit + STUB_SERVICE
        if name == "open-iscsi.service":
            body += "[Install]\nAlias=iscsi.service\n"
        box.write(f"/etc/systemd/system/{name}", body)
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "enable", "-q", "open-iscsi.service", "nut-driver.target")
    box.run("mkdir", "-p", "/etc/systemd/system/nut-driver.target.wants")
    box.run("ln", "-sf", "/etc/systemd/system/nut-driver@.service",
            "/etc/systemd/system/nut-driver.target.wants/nut-driver@ups1.service")
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "start", "iscsid.service", "open-iscsi.service", "nut-driver.target", "nut-server.service")
    active = box.run("systemctl", "is-active", "iscsid", "open-iscsi", "nut-driver@ups1", "nut-server",
                     "remote-fs.target", "libvirt-guests", check=False).stdout.split()
    assert active == ["active"] * 6, active
    names = box.define_guests(1, memory_mib=256, dirty_mib=128, prefix="lgt-order-")
    box.wait_ready(names)
    box.poweroff()

    recorded = dict(line.split() for line in box.path(ORDER_LOG).read_text().splitlines())
    # each stand-in's ExecStop ran once libvirt-guests.service was already inactive, not while it was saving
    assert recorded == {u: "inactive" for u in ("iscsid.service", "open-iscsi.service", "nut-driver@ups1.service",
                                                "nut-server.service")}, recorded
    entries = box.journal()
    events = harness.unit_events(entries, harness.boot_ids(entries)[-1])
    ours_stopped = last(events, "libvirt-guests.service", "Stopped ")
    assert last(events, "remote-fs.target", "Stopped target") >= ours_stopped
    lines = harness.service_lines(entries, boot=harness.boot_ids(entries)[-1])
    summary = [msg for _, _, msg in lines if msg.startswith("libvirt-guests stop:")]
    assert summary and "1 saved" in summary[-1], lines
