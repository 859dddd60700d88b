"""libvirt's own shutdown handling (issue 21) against ours, with real guests
and real poweroffs through logind, in the Debian 13 root (libvirt 11.3, dbus
and logind running).

One container boot per class of the daemon's settings (``auto_shutdown_*`` in
qemu.conf): all ``none``, restore only, save only, shutdown only, poweroff
only, all three. Each class: our .deb, two small guests (one powers off at
once on the ACPI button, one only SLOW seconds after it, longer than logind
lets the daemon delay the shutdown), ``systemctl poweroff``, boot; then
every guest that ran before runs again, none was started twice, and the
right actor acted: we (the summary of our stop says what we did) or the daemon
(our stop deferred to it, or found nothing left to do; the daemon restored or
booted the guests itself at its start, our start did not start them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.systemd import harness
from tests.systemd.harness import Container

SLOW = 12  # seconds the slow guest takes to power off: longer than logind's delay (InhibitDelayMaxSec, 5 s)
BOTH_NONE = {"auto_shutdown_try_save": "none", "auto_shutdown_try_shutdown": "none", "auto_shutdown_poweroff": "none"}
#: class -> (qemu.conf lines, who acts at the poweroff, how the guests run after the boot)
CLASSES: dict[str, tuple[dict[str, str | int], str, str]] = {
    "all_none": ({**BOTH_NONE}, "us", "running (restored)"),
    "restore_only": ({"auto_shutdown_restore": 1}, "us", "running (restored)"),
    "save_only": ({"auto_shutdown_try_save": "persistent"}, "libvirtd", "running (restored)"),
    "shutdown_only": ({"auto_shutdown_try_shutdown": "all"}, "libvirtd", "running (booted)"),
    "poweroff_only": ({"auto_shutdown_poweroff": "all"}, "libvirtd", "running (booted)"),
    "all_three": ({"auto_shutdown_try_save": "persistent", "auto_shutdown_try_shutdown": "all",
                   "auto_shutdown_poweroff": "all"}, "libvirtd", "running (restored)"),
}


def conf_lines(values: dict[str, str | int]) -> str:
    return "".join(f'{k} = "{v}"\n' if isinstance(v, str) else f"{k} = {v}\n" for k, v in values.items())


@pytest.fixture
def trixie(make_container, debs) -> Iterator[Container]:
    box = make_container("daemon", "trixie")
    box.boot()
    box.install_deb(debs("trixie"))
    box.configure(ON_SHUTDOWN="suspend", ON_BOOT="start", SHUTDOWN_TIMEOUT="60")
    yield box
    box.close()


def unit_lines(entries: list[dict], unit: str, boot: str) -> list[tuple[int, str]]:
    return [(prio, msg) for _, prio, msg in harness.service_lines(entries, unit, boot=boot)]


@pytest.mark.parametrize("name", list(CLASSES))
def test_class(trixie: Container, name: str) -> None:
    box = trixie
    values, actor, after = CLASSES[name]
    with open(box.path("/etc/libvirt/qemu.conf"), "a") as f:
        f.write(conf_lines(values))
    box.run("systemctl", "restart", "libvirtd")  # the daemon reads qemu.conf at its start
    names = box.define_guests(1, prefix="lgt-quick-") + box.define_guests(1, prefix="lgt-slow-", mode="slow",
                                                                             slow_seconds=SLOW)
    box.wait_ready(names)
    plan = box.run("libvirt-guests", "plan", "stop", check=False)
    print(f"--- {name}: plan stop\n{plan.stdout}{plan.stderr}")
    planned = json.loads(box.run("libvirt-guests", "plan", "stop", "--json").stdout)
    (uri,) = planned["uris"]
    assert uri["libvirt_shutdown"]["state"] == ("on" if actor == "libvirtd" else "off"), uri
    assert {e["name"]: e["at_host_shutdown"] for group in uri["groups"] for e in group} == {n: actor for n in names}
    check = box.run("libvirt-guests", "check-config", check=False)
    assert check.returncode == (6 if actor == "libvirtd" else 0), check
    halt = box.poweroff()
    entries = box.journal()
    down = harness.boot_ids(entries)[-1]
    stop = unit_lines(entries, "libvirt-guests.service", down)
    daemon = unit_lines(entries, "libvirtd.service", down)
    saved = {n: box.path(f"/var/lib/libvirt/qemu/save/{n}.save").exists() for n in names}
    up = box.boot()
    states, waited = box.wait_states(names, after, timeout=120)
    entries = box.journal()
    boot = harness.boot_ids(entries)[-1]
    start = unit_lines(entries, "libvirt-guests.service", boot)
    daemon_boot = unit_lines(entries, "libvirtd.service", boot)
    print(f"--- {name}: halt {halt:.1f} s, up {up:.1f} s (+{waited:.1f} s), save images {saved}")
    for title, lines in (("stop", stop), ("libvirtd at poweroff", daemon), ("start", start),
                         ("libvirtd at boot", daemon_boot)):
        print(f"--- {name}: {title}\n" + "\n".join(f"<{p}> {m}" for p, m in lines))

    # every guest that ran before runs again, as the actor left it
    assert states == {n: after for n in names}, states
    # none was started twice: no start of ours failed on a running guest, the daemon's autostart did not fail
    assert not [m for p, m in start if p <= 4], start
    assert not [m for p, m in daemon_boot if p <= 4 and re.search(r"autostart|already (running|active)", m, re.I)]
    assert not [m for p, m in stop if p <= 4], stop  # no conflict line: a real poweroff through logind
    stop_text, start_text = "\n".join(m for _, m in stop), "\n".join(m for _, m in start)
    summary = [m for _, m in stop if m.startswith("libvirt-guests stop:")]
    assert summary and " 0 failed" in summary[-1], stop
    if actor == "us":
        assert f"{len(names)} saved" in summary[-1], summary
        assert all(saved.values())
        for n in names:
            assert f"Suspending {n}: done" in stop_text and f"Resuming guest {n}: done" in start_text
    else:
        for n in names:  # we neither acted at the poweroff nor started it at the boot: the daemon did both
            assert f"Suspending {n}" not in stop_text and f"Resuming guest {n}: done" not in start_text
            assert n not in stop_text or f"Guest {n}: " in stop_text  # left to the daemon, and recorded
    print(f"measured: daemon class {name}: halt {halt:.1f} s")


def test_restart_of_our_unit_with_the_daemon_on_acts_with_one_error_line(trixie: Container) -> None:
    """Not a host shutdown (logind says no): our stop acts as always, says the conflict once; start restores."""
    box = trixie
    with open(box.path("/etc/libvirt/qemu.conf"), "a") as f:
        f.write(conf_lines({"auto_shutdown_try_save": "persistent"}))
    box.run("systemctl", "restart", "libvirtd")
    names = box.define_guests(1, prefix="lgt-manual-")
    box.wait_ready(names)
    box.run("systemctl", "restart", "libvirt-guests")
    entries = box.journal()
    lines = unit_lines(entries, "libvirt-guests.service", harness.boot_ids(entries)[-1])
    print("\n".join(f"<{p}> {m}" for p, m in lines))
    conflict = [m for p, m in lines if p <= 3 and "libvirt's own shutdown handling is on" in m]
    assert len(conflict) == 1 and "not a host shutdown through logind" in conflict[0], lines
    assert f"Suspending {names[0]}: done" in "\n".join(m for _, m in lines)
    assert box.domstates(names) == {names[0]: "running (restored)"}
