"""Issue 19 on real guests: a guest's metadata naming a command as its peer
never makes root run it, and its shutdown_timeout="0" never holds a stop."""

from __future__ import annotations

import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

import libvirt

from .support import Tool, state

NS = "urn:libvirt-guests:policy:1"


def _set_policy(dom: libvirt.virDomain, **attrs: str) -> None:
    """As whoever may edit the domain's XML would (no check of ours in the way)."""
    xml = "<policy " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items()) + "/>"
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, "guests", NS,
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_AFFECT_LIVE)


def test_a_command_in_migrate_to_never_runs(guests, tool: Tool, system_conn, tmp_path: Path) -> None:
    marker = tmp_path / "ran-as-root"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexit 1\n")
    script.chmod(0o755)
    ext, ssh = guests.create(2)
    _set_policy(ext, on_shutdown="migrate suspend", migrate_to=f"qemu+ext:///system?command={script}")
    _set_policy(ssh, on_shutdown="migrate suspend", migrate_to=f"qemu+ssh://localhost/system?command={script}")
    tool.configure(ON_SHUTDOWN="suspend")
    plan = tool.run("plan", "stop")
    assert plan.returncode == 0, plan
    result = tool.run("stop")
    assert result.returncode == 0, result
    assert not marker.exists(), marker.read_text()
    for dom in (ext, ssh):
        assert result.stderr.count(f"warning: guest {dom.name()}: policy migrate_to=") == 1, result.stderr
        assert state(system_conn, dom) == "saved"  # the rest of its chain
    assert tool.run("plan", "start").returncode == 0
    started = tool.run("start")
    assert started.returncode == 0, started
    assert state(system_conn, ext) == state(system_conn, ssh) == "running"
    assert tool.run("policy", ext.name()).returncode == 0
    assert tool.run("policy", ext.name(), "--migrate-to", f"qemu+ext:///system?command={script}").returncode == 2
    assert not marker.exists(), marker.read_text()


def test_a_guests_zero_shutdown_timeout_is_the_hosts(guests, tool: Tool, system_conn) -> None:
    """Reproduced: shutdown_timeout="0" from metadata with SHUTDOWN_TIMEOUT=2 waited for ever on a guest
    that ignores the power button."""
    (stubborn,) = guests.create(1, mode="stubborn")
    _set_policy(stubborn, shutdown_timeout="0")
    tool.configure(ON_SHUTDOWN="shutdown poweroff", SHUTDOWN_TIMEOUT="2")
    started = time.monotonic()
    result = tool.run("stop", timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 0, result
    assert f"Shutdown of guest {stubborn.name()} failed to complete in time." in result.stdout
    assert f"Powering off guest {stubborn.name()}" in result.stdout
    assert state(system_conn, stubborn) == "off"
    assert took < 30, took
    print(f"stop took {took:.1f} s")
