"""A Debian systemd host (systemd-nspawn; Debian 12 and 13) powers off with
guests running and boots them back: our .deb (Debian's unit + our drop-in)
and, for comparison, Debian's original script, in the same harness.

Each module-scoped container is booted several times; the tests of a module
run in order and share it (a boot costs a second, guests cost more).  The
core scenarios run on both releases (``@BOTH``), the others on Debian 12 only,
where they were first proven (CI's time).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd import harness
from tests.systemd.conftest import on
from tests.systemd.harness import Container
from tests.systemd.root import RELEASES

BIG = {"count": 8, "memory_mib": 512, "dirty_mib": 384}  # issue 11, item 1
RESTORED = "running (restored)"
DROP_IN = "/usr/lib/systemd/system/libvirt-guests.service.d/libvirt-guests-python.conf"
#: What each release runs us with: Python, libvirt (daemon and python3-libvirt), python-dotenv, and the package
#: that ships Debian's libvirt-guests.sh (the one our .deb diverts).
STACK = {"bookworm": {"python": "3.11", "libvirt": "9.0.0", "dotenv": "0.21", "script_in": "libvirt-daemon"},
         "trixie": {"python": "3.13", "libvirt": "11.3.0", "dotenv": "1.0", "script_in": "libvirt-daemon-common"}}
BOTH = on(*RELEASES, fixture="ours")
DEBIAN12 = on("bookworm", fixture="ours")


class StatusPoller:
    """Collect the distinct StatusText values of libvirt-guests.service while a poweroff runs."""

    def __init__(self, box: Container) -> None:
        self.box, self.seen = box, []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self.box.pid1:
            try:
                text = self.box.run("systemctl", "show", "-P", "StatusText", "libvirt-guests",
                                    check=False, timeout=5).stdout.strip()
            except Exception:  # noqa: BLE001 - the container is going away under us
                return
            if text and text not in self.seen:
                self.seen.append(text)
            time.sleep(0.05)

    def __enter__(self) -> StatusPoller:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.thread.join(10)


def last_boot(box: Container) -> tuple[list, str]:
    entries = box.journal()
    return entries, harness.boot_ids(entries)[-1]


def first(events: list[tuple[float, str, str]], unit: str, prefix: str) -> float:
    """When systemd first logged ``prefix`` for ``unit``."""
    times = [ts for ts, u, msg in events if u == unit and msg.startswith(prefix)]
    assert times, f"no '{prefix}' line for {unit}"
    return times[0]


def last(events: list[tuple[float, str, str]], unit: str, prefix: str) -> float:
    """When systemd last logged ``prefix`` for ``unit`` (the poweroff's, not the restart's)."""
    times = [ts for ts, u, msg in events if u == unit and msg.startswith(prefix)]
    assert times, f"no '{prefix}' line for {unit}"
    return times[-1]


def remove_guests(box: Container, keep: int = 0) -> None:
    """Destroy and undefine the container's guests (their save images too), but the first ``keep`` running ones."""
    names = box.run("virsh", "list", "--name", "--all").stdout.split()
    running = box.run("virsh", "list", "--name").stdout.split()
    for name in names:
        if name in running[:keep]:
            continue
        box.run("virsh", "-q", "destroy", name, check=False)
        box.run("virsh", "-q", "undefine", "--managed-save", name)


def cycle(box: Container, names: list[str], restart_libvirtd: bool = True) -> dict:
    """restart libvirtd (as a package upgrade does), poweroff, boot; what happened."""
    if restart_libvirtd:
        box.run("systemctl", "restart", "libvirtd")
    with StatusPoller(box) as poller:
        halt = box.poweroff()
    entries, boot = last_boot(box)
    events = harness.unit_events(entries, boot)
    lines = harness.service_lines(entries, boot=boot)
    t0 = time.monotonic()
    box.boot()
    states, _ = box.wait_states(names, RESTORED, timeout=120)
    return {"halt": halt, "up": time.monotonic() - t0, "events": events, "lines": lines, "states": states,
            "statuses": poller.seen}


# -- ours: Debian's unit running our script through the .deb, with our drop-in ---------------------------------


@pytest.fixture(scope="module")
def ours(request: pytest.FixtureRequest, make_container, debs) -> Iterator[Container]:
    """Our .deb, built in and installed on the release's own root (``request.param``)."""
    box = make_container("ours", request.param)
    box.boot()
    box.install_deb(debs(request.param))
    box.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
    yield box
    box.close()  # before the other release's container boots


@BOTH
def test_deb_installs_over_the_release_package_with_its_layout_and_stack(ours: Container) -> None:
    """The .deb built in this release's root: diversions, files in /usr/lib, Debian's unit reading our drop-in,
    and the release's Python, python3-libvirt and python3-dotenv behind the shim."""
    stack = STACK[ours.release]
    state = ours.run("systemctl", "is-system-running", check=False).stdout.strip()
    assert state == "running", ours.run("systemctl", "--failed", "--no-legend", check=False).stdout
    diversions = ours.run("dpkg-divert", "--list", "libvirt-guests*").stdout
    assert "/usr/lib/libvirt/libvirt-guests.sh to /usr/lib/libvirt/libvirt-guests.sh.distrib" in diversions
    assert "/usr/share/man/man8/libvirt-guests.8.gz to /usr/share/man/man8/libvirt-guests.distrib.8.gz" in diversions
    # Debian's script, moved aside intact (its md5sum as shipped)
    shipped = ours.run("grep", " usr/lib/libvirt/libvirt-guests.sh$",
                       f"/var/lib/dpkg/info/{stack['script_in']}.md5sums").stdout.split()[0]
    assert ours.run("md5sum", "/usr/lib/libvirt/libvirt-guests.sh.distrib").stdout.split()[0] == shipped
    files = ours.run("dpkg", "-L", harness.DEB_PACKAGE).stdout.splitlines()
    assert DROP_IN in files
    assert not [f for f in files if f.startswith(("/lib/", "/bin/", "/sbin/"))], files
    drop_ins = ours.run("systemctl", "show", "-P", "DropInPaths", "libvirt-guests").stdout.split()
    assert [p for p in drop_ins if p.endswith("/libvirt-guests-python.conf")] in ([DROP_IN], [DROP_IN[4:]])
    after = ours.run("systemctl", "show", "-P", "After", "libvirt-guests").stdout.split()
    assert "libvirtd.service" in after and "virtlogd.service" in after
    version = ours.run("libvirt-guests", "--version", check=False)
    assert version.returncode == 0, version
    probe = ours.run("python3", "-c", "import sys, libvirt, dotenv, importlib.metadata as m; "
                     "print(sys.version.split()[0], libvirt.getVersion(), m.version('python-dotenv'))").stdout.split()
    assert probe[0].startswith(stack["python"] + "."), probe
    assert "{}.{}.{}".format(*(int(probe[1]) // 1000**i % 1000 for i in (2, 1, 0))) == stack["libvirt"], probe
    assert probe[2].startswith(stack["dotenv"]), probe
    daemon = ours.run("virsh", "version", "--daemon").stdout
    assert f"Running against daemon: {stack['libvirt']}" in daemon, daemon
    shim = ours.run("/usr/lib/libvirt/libvirt-guests.sh", "check-config", check=False)
    assert shim.returncode == 0, shim


@DEBIAN12
def test_upgrade_from_the_drop_in_under_lib_keeps_it(ours: Container, debs, tmp_path: Path) -> None:
    """The .deb shipped its drop-in as /lib/systemd/system/... up to 0.1.0, now as /usr/lib/... (Debian 13's
    layout, read by Debian 12's systemd too). Under merged /usr both names are one file: the upgrade must not
    delete it as a file of the old version that the new one no longer has (the DEP17 file-loss case)."""
    def old_layout(source: Path) -> None:
        install = source / "debian" / "install"
        install.write_text(install.read_text().replace(" usr/lib/systemd/", " lib/systemd/"))
        changelog = source / "debian" / "changelog"
        first, rest = changelog.read_text().split("\n", 1)
        changelog.write_text(first.replace(")", "~old)", 1) + "\n" + rest)

    old = harness.build_deb(tmp_path, ours.release, old_layout)
    contents = subprocess.run(["dpkg-deb", "--contents", old], capture_output=True, text=True, check=True).stdout
    assert " ./lib/systemd/system/libvirt-guests.service.d/libvirt-guests-python.conf" in contents
    ours.run("dpkg", "--purge", harness.DEB_PACKAGE)
    ours.install_deb(old)
    assert "/lib/systemd/system/libvirt-guests.service.d/libvirt-guests-python.conf" in \
        ours.run("dpkg", "-L", harness.DEB_PACKAGE).stdout.splitlines()
    ours.install_deb(debs(ours.release))  # the upgrade to this tree's .deb
    assert ours.path(DROP_IN).is_file()
    assert DROP_IN in ours.run("dpkg", "-L", harness.DEB_PACKAGE).stdout.splitlines()
    assert DROP_IN in ours.run("systemctl", "show", "-P", "DropInPaths", "libvirt-guests").stdout.split()


@BOTH
def test_ours_saves_eight_dirty_guests_before_libvirtd_stops_and_restores_them(ours: Container) -> None:
    names = ours.define_guests(**BIG)
    ours.wait_ready(names, timeout=600)
    result = cycle(ours, names)
    events, lines = result["events"], result["lines"]
    print(f"measured: ours, {ours.release}, 8 guests: halt {result['halt']:.1f} s, up {result['up']:.1f} s")

    assert result["states"] == {n: RESTORED for n in names}
    summary = [msg for _, _, msg in lines if msg.startswith("libvirt-guests stop:")]
    assert summary and f"{len(names)} saved" in summary[-1] and " 0 failed" in summary[-1], lines
    assert not [msg for _, prio, msg in lines if prio <= 4], "error or warning lines at poweroff"
    # the journal parsed our <N> prefixes into priorities
    assert not any(msg.startswith("<") for _, _, msg in lines)
    assert {prio for _, prio, _ in lines} == {6}
    # every guest saved before libvirtd, virtlogd, machined and the machine scopes went away
    guests_done = last(events, "libvirt-guests.service", "Stopped ")
    for unit in ("libvirtd.service", "virtlogd.service", "systemd-machined.service"):
        assert last(events, unit, "Stopping ") >= guests_done, unit
    scopes = [(ts, u) for ts, u, msg in events if u.startswith("machine-qemu") and msg.startswith("Stopped ")]
    assert len(scopes) == len(names)  # each scope ended when its QEMU ended, after its save
    # STATUS= progress reached systemd while the stop ran
    assert any(s.startswith("Stopping guests") for s in result["statuses"]), result["statuses"]
    # and after the boot the unit's status names what start did
    status = ours.run("systemctl", "status", "libvirt-guests", check=False).stdout
    assert "active (exited)" in status
    assert "libvirt-guests start: 8 guests" in status
    remove_guests(ours)


@BOTH
def test_socket_activated_daemon_restarted_before_poweroff_and_not_running_at_boot(ours: Container) -> None:
    """libvirtd.service not enabled, only its sockets (Debian enables both): libvirtd restarted just before the
    poweroff, every guest saved; at the next boot no one starts libvirtd before our start connects, the
    connection activates it through libvirtd.socket, and every guest is restored."""
    ours.run("rm", "/etc/systemd/system/multi-user.target.wants/libvirtd.service")
    ours.run("systemctl", "daemon-reload")
    assert ours.run("systemctl", "is-enabled", "libvirtd.service", check=False).stdout.strip() == "disabled"
    assert ours.run("systemctl", "is-enabled", "libvirtd.socket").stdout.strip() == "enabled"
    names = ours.define_guests(4, prefix="lgt-sock-")
    ours.wait_ready(names)
    result = cycle(ours, names)
    lines = result["lines"]
    summary = [msg for _, _, msg in lines if msg.startswith("libvirt-guests stop:")]
    assert summary and "4 saved" in summary[-1] and " 0 failed" in summary[-1], lines
    assert not [msg for _, prio, msg in lines if prio <= 4], lines
    assert result["states"] == {n: RESTORED for n in names}
    entries, boot = last_boot(ours)
    events = harness.unit_events(entries, boot)
    ours_started = first(events, "libvirt-guests.service", "Starting ")
    assert first(events, "libvirtd.service", "Starting ") > ours_started, "libvirtd started before our start"
    assert first(events, "libvirtd.socket", "Listening ") < ours_started
    start = [msg for _, _, msg in harness.service_lines(entries, boot=boot) if msg.startswith("libvirt-guests start:")]
    assert start and "4 guests" in start[-1], start
    remove_guests(ours)
    ours.run("systemctl", "enable", "-q", "libvirtd.service")


@DEBIAN12
def test_failed_start_still_saves_at_the_next_poweroff(ours: Container) -> None:
    """Issue 10: a failed start must never cancel the next stop (ExecStart=- in our drop-in)."""
    names = ours.define_guests(2, prefix="lgt-fail-")
    ours.wait_ready(names)
    ours.poweroff()
    # the second guest's save image is damaged while the host is off: its restore fails at boot
    image = ours.path(f"/var/lib/libvirt/qemu/save/{names[1]}.save")
    assert image.exists()
    image.write_bytes(b"\0" * 4096)
    ours.boot()
    ours.wait_states(names[:1], RESTORED, timeout=60)
    entries, boot = last_boot(ours)
    lines = harness.service_lines(entries, boot=boot)
    errors = [msg for _, prio, msg in lines if prio <= 4]  # the failed guest's line is a warning
    assert any(names[1] in msg for msg in errors), lines
    show = ours.run("systemctl", "show", "-P", "ActiveState", "-P", "ExecMainStatus", "libvirt-guests").stdout
    assert show.split() == ["1", "active"] or show.split() == ["active", "1"], show
    status = ours.run("systemctl", "status", "libvirt-guests", check=False).stdout
    assert "status=1/FAILURE" in status and " 1 failed" in status, status
    assert "active (exited)" in status
    # the next poweroff still runs our stop: the guest that did come back is saved
    ours.poweroff()
    entries, boot = last_boot(ours)
    summary = [msg for _, _, msg in harness.service_lines(entries, boot=boot) if msg.startswith("libvirt-guests stop:")]
    assert summary and "1 saved" in summary[-1], summary
    ours.boot()
    assert ours.domstates(names[:1]) == {names[0]: RESTORED}
    remove_guests(ours)


@DEBIAN12
def test_restart_reload_and_status(ours: Container) -> None:
    names = ours.define_guests(1, prefix="lgt-rr-")
    ours.wait_ready(names)
    ours.run("systemctl", "reload", "libvirt-guests")  # ExecReload: nothing to do, guests untouched
    assert ours.domstates(names) == {names[0]: "running (booted)"}
    ours.run("systemctl", "restart", "libvirt-guests")  # stop saves, start restores
    assert ours.domstates(names) == {names[0]: RESTORED}
    status = ours.run("systemctl", "status", "libvirt-guests", check=False).stdout
    assert "active (exited)" in status and "libvirt-guests start: 1 guests" in status
    assert ours.run("libvirt-guests", "status").stdout == "started\n"
    remove_guests(ours)


@DEBIAN12
def test_stubborn_guest_is_powered_off_and_the_deadline_bounds_the_poweroff(ours: Container) -> None:
    ours.configure(ON_SHUTDOWN="shutdown poweroff", SHUTDOWN_TIMEOUT="300", STOP_DEADLINE="15", ON_BOOT="ignore")
    normal = ours.define_guests(1, prefix="lgt-acpi-")
    stubborn = ours.define_guests(1, prefix="lgt-stubborn-", mode="stubborn")
    ours.wait_ready(normal + stubborn)
    halt = ours.poweroff()
    assert halt < 15 + 10, f"poweroff took {halt:.1f} s with STOP_DEADLINE=15"
    entries, boot = last_boot(ours)
    lines = harness.service_lines(entries, boot=boot)
    summary = [msg for _, _, msg in lines if msg.startswith("libvirt-guests stop:")]
    assert summary and "1 shut down" in summary[-1] and "1 powered off" in summary[-1], lines
    ours.boot()
    assert all(s.startswith("shut off") for s in ours.domstates(normal + stubborn).values())
    remove_guests(ours)
    ours.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
