"""Item 2 of issue 11: Debian's original script in the same harness, and our
own unit file (packaging/systemd/) as the second way to install ours.

The original is each release's own: Debian 12's and Debian 13's
libvirt-guests.sh and libvirt-guests.service, in that release's root.

Debian's unit is ordered after the libvirt sockets only.  What keeps
libvirtd.service running while the original saves is indirect: each guest's
machine-qemu-*.scope is After=libvirtd.service and
Before=virt-guest-shutdown.target.  When the last guest's QEMU exits at the
end of its save, its scope goes away, nothing orders libvirtd.service after
libvirt-guests any more, and systemd stops libvirtd while the script still
waits for the save's answer: "Failed to save domain".
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.systemd import harness
from tests.systemd.conftest import on
from tests.systemd.harness import Container
from tests.systemd.root import RELEASES
from tests.systemd.test_shutdown import BIG, RESTORED, cycle, last, remove_guests

BOTH = on(*RELEASES, fixture="original")
DEBIAN12 = on("bookworm", fixture="own_unit")


@pytest.fixture(scope="module")
def original(request: pytest.FixtureRequest, make_container) -> Iterator[Container]:
    """The release's own libvirt-daemon-system, untouched."""
    box = make_container("original", request.param)
    box.boot()
    box.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
    yield box
    box.close()  # before the other release's container boots


@BOTH
def test_original_with_eight_guests_saves_and_restores_them(original: Container) -> None:
    names = original.define_guests(**BIG)
    original.wait_ready(names, timeout=600)
    result = cycle(original, names)
    print(f"measured: original, {original.release}, 8 guests: halt {result['halt']:.1f} s, up {result['up']:.1f} s")
    assert result["states"] == {n: RESTORED for n in names}
    done = [msg for _, _, msg in result["lines"] if msg.endswith(": done")]
    assert len(done) == len(names)
    remove_guests(original, keep=1)


@BOTH
def test_original_orders_libvirtd_after_itself_only_through_the_scopes(original: Container) -> None:
    """Why the original can lose its last save's answer: only the machine scopes order libvirtd after it.

    (The race itself is timing: measured 4 of 4 with one 512 MiB guest, see README; not asserted here.)
    """
    names = original.run("virsh", "list", "--name").stdout.split()  # the one the previous test kept
    if not names:  # run alone
        names = original.define_guests(1, prefix="lgt-last-")
        original.wait_ready(names)
    assert len(names) == 1
    after = original.run("systemctl", "show", "-P", "After", "libvirt-guests").stdout.split()
    assert "libvirtd.service" not in after and "virt-guest-shutdown.target" in after
    scope = original.run("systemctl", "list-units", "--plain", "--no-legend", "machine-qemu*").stdout.split()[0]
    assert "libvirtd.service" in original.run("systemctl", "show", "-P", "After", scope).stdout.split()
    assert "virt-guest-shutdown.target" in original.run("systemctl", "show", "-P", "Before", scope).stdout.split()
    result = cycle(original, names)
    assert result["states"] == {names[0]: RESTORED}
    remove_guests(original)


@DEBIAN12
def test_ours_orders_libvirtd_after_itself(ours_ordering: Container) -> None:
    after = ours_ordering.run("systemctl", "show", "-P", "After", "libvirt-guests").stdout.split()
    for unit in ("libvirtd.service", "virtqemud.service", "virtlogd.service", "machine.slice",
                 "systemd-machined.service"):
        assert unit in after, unit


@pytest.fixture(scope="module")
def ours_ordering(own_unit: Container) -> Container:
    return own_unit


@pytest.fixture(scope="module")
def own_unit(request: pytest.FixtureRequest, make_container, debs) -> Container:
    """Our .deb, but libvirt-guests.service is our own unit (in /etc), without the .deb's drop-in."""
    box = make_container("unit", request.param)
    box.boot()
    box.install_deb(debs(request.param))
    box.run("rm", "/usr/lib/systemd/system/libvirt-guests.service.d/libvirt-guests-python.conf")
    box.install_unit(harness.REPO / "packaging" / "systemd" / "libvirt-guests.service")
    box.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
    return box


@DEBIAN12
def test_own_unit_saves_the_last_guest_before_libvirtd_stops(own_unit: Container) -> None:
    names = own_unit.define_guests(2, memory_mib=512, dirty_mib=384)
    own_unit.wait_ready(names, timeout=300)
    result = cycle(own_unit, names)
    events, lines = result["events"], result["lines"]
    assert last(events, "libvirtd.service", "Stopping ") >= last(events, "libvirt-guests.service", "Stopped ")
    assert not [msg for _, prio, msg in lines if prio <= 4], lines
    summary = [msg for _, _, msg in lines if msg.startswith("libvirt-guests stop:")]
    assert summary and "2 saved" in summary[-1]
    assert result["states"] == {n: RESTORED for n in names}
    show = own_unit.run("systemctl", "show", "-P", "FragmentPath", "-P", "DropInPaths", "libvirt-guests").stdout
    assert show.split() == ["/etc/systemd/system/libvirt-guests.service"], show
