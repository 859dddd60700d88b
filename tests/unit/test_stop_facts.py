"""The facts the budget plans with (stop/facts.py): definitions, the save
directory, qemu.conf, the history and the refusals store."""

from __future__ import annotations

import os
from pathlib import Path

import libvirt
import pytest

from libvirt_guests.outcomes import Outcome
from libvirt_guests.state.history import GuestEvent, History, StopRecord, record
from libvirt_guests.state.refusals import Refusal, Refusals, devices_fingerprint, remember
from libvirt_guests.stop import facts
from libvirt_guests.stop.budget import MIB
from libvirt_guests.virt import saveimage

PLAIN = """<domain type='qemu'><name>g</name><memory unit='MiB'>512</memory>
<devices><serial type='pty'/></devices></domain>"""


def domain(devices: str, extra: str = "") -> str:
    return (f"<domain type='kvm'><name>g</name><memory unit='KiB'>1048576</memory>{extra}"
            f"<devices>{devices}</devices></domain>")


def test_plain_definition_has_memory_and_no_blocker() -> None:
    d = facts.read_definition(PLAIN)
    assert d == facts.Definition(512 * MIB, 0, ())


@pytest.mark.parametrize(("devices", "extra", "expect"), [
    ("<hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x01' slot='0x00' "
     "function='0x0'/></source></hostdev>", "", "host device passthrough (pci 0x0000:0x01:0x00:0x0)"),
    ("<hostdev mode='subsystem' type='mdev'><source><address uuid='x'/></source></hostdev>", "",
     "host device passthrough (mdev"),
    ("<interface type='hostdev'><source><address type='pci'/></source></interface>", "", "interface type='hostdev'"),
    ("<filesystem type='mount'><driver type='virtiofs'/><source dir='/srv'/><target dir='share'/></filesystem>", "",
     "virtiofs shared file system 'share'"),
    ("<shmem name='s'><model type='ivshmem-doorbell'/><server path='/tmp/s'/></shmem>", "", "shmem"),
    ("<shmem name='s'><model type='ivshmem-plain'/><role>peer</role></shmem>", "", "peer mode"),
    # on this test bed QEMU 7.2 refused a save of exactly this (libvirt's live XML had no role)
    ("<shmem name='s'><model type='ivshmem-plain'/><size unit='M'>1</size></shmem>", "", "'s' in peer mode"),
    ("", "<cpu><feature policy='require' name='invtsc'/></cpu>", "invtsc"),
])
def test_blockers_from_the_definition(devices: str, extra: str, expect: str) -> None:
    found = facts.read_definition(domain(devices, extra)).blockers
    assert len(found) == 1 and expect in found[0], found


@pytest.mark.parametrize("devices", [
    # 9p blocks only while mounted in the guest: learnt, not assumed
    "<filesystem type='mount' accessmode='mapped'><source dir='/srv'/><target dir='share'/></filesystem>",
    "<shmem name='s'><model type='ivshmem-plain'/><role>master</role></shmem>",
    "<interface type='network'><source network='default'/></interface>",
    "<hostdev_not_really/>",
])
def test_not_blockers(devices: str) -> None:
    assert facts.read_definition(domain(devices)).blockers == ()
    assert facts.read_definition(domain("", "<cpu><feature policy='disable' name='invtsc'/></cpu>")).blockers == ()


def test_video_ram_counts_and_bad_xml_gives_nothing() -> None:
    d = facts.read_definition(domain("<video><model type='qxl' ram='65536' vram='65536' vgamem='16384'/></video>"))
    assert d.extra_ram_bytes == (64 + 64 + 16) * MIB and d.memory_bytes == 1024 * MIB
    assert facts.read_definition("<domain") == facts.Definition(0, 0, ())
    assert facts.read_definition("<domain><memory unit='GiB'>2</memory></domain>").memory_bytes == 2 * 1024 * MIB


@pytest.mark.parametrize(("uri", "expect"), [
    ("qemu:///system", saveimage.SYSTEM_SAVE_DIR),
    ("qemu+unix:///system", saveimage.SYSTEM_SAVE_DIR),
    ("qemu+ssh://root@host/system", None),
    ("qemu+tcp://10.0.0.2/system", None),
    ("qemu://host/system", None),
    ("test:///default", None),
    ("lxc:///system", None),
])
def test_save_dir_of(uri: str, expect: Path | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(saveimage.ENV_SAVE_DIR, raising=False)
    directory, why = saveimage.save_dir_of(uri)
    assert directory == expect
    assert bool(why) == (expect is None)
    if "//" in uri.split(":", 1)[1] and uri.split("/")[2]:
        assert "remote daemon" in why


def test_session_save_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(saveimage.ENV_SAVE_DIR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert saveimage.save_dir_of("qemu:///session")[0] == tmp_path / "libvirt/qemu/save"


def test_free_bytes(tmp_path: Path) -> None:
    free, why = facts.free_bytes(tmp_path)
    st = os.statvfs(tmp_path)
    assert free == st.f_bavail * st.f_frsize and why == ""
    free, why = facts.free_bytes(tmp_path / "missing")
    assert free is None and "cannot read the free space" in why


def test_image_format(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    assert facts.image_format(conf) == "raw"
    conf.write_text('#save_image_format = "raw"\n')
    assert facts.image_format(conf) == "raw"
    conf.write_text('save_image_format = "xz"\n# comment\n')
    assert facts.image_format(conf) == "xz"


def test_history_of_takes_the_last_save_of_the_same_memory_and_the_shutdowns() -> None:
    def ev(action: str, result: str, seconds: float, written: int | None, memory: int | None) -> GuestEvent:
        return GuestEvent(1.0, "stop", "qemu:///system", "u", "g", action, action, "", result, seconds, written,
                          memory)
    events = [ev("suspend", Outcome.SAVED, 2, 100, 512), ev("suspend", Outcome.SAVED, 2, 300, 1024),
              ev("shutdown", Outcome.SHUTDOWN, 4.5, None, 512), ev("shutdown", Outcome.LEFT_RUNNING, 9, None, 512),
              ev("suspend", Outcome.FAILED, 1, None, 512)]
    assert facts.history_of(events, 512) == (100, (4.5,))
    assert facts.history_of(events, 1024) == (300, (4.5,))
    assert facts.history_of([], 1024) == (None, ())


def test_gather_from_a_real_definition_history_and_refusals(tmp_path: Path) -> None:
    conn = libvirt.open("test:///default")
    dom = conn.defineXML("<domain type='test'><name>facts-guest</name><memory unit='MiB'>256</memory>"
                         "<os><type>hvm</type></os><devices><serial type='pty'/></devices></domain>")
    live, inactive = dom.XMLDesc(0), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    hist_path, ref_path = tmp_path / "history", tmp_path / "refused"
    memory = facts.read_definition(live).memory_bytes
    assert memory == 256 * MIB
    event = GuestEvent(1.0, "stop", "test:///default", dom.UUIDString(), "test", "suspend", "suspend", "",
                       Outcome.SAVED, 1.5, 12345, memory)
    stop = StopRecord(1.0, "test:///default", 1, 12345, 1.5, 8, True, False)
    assert record(hist_path, [event], [stop]) is None
    assert remember(ref_path, Refusal(dom.UUIDString(), devices_fingerprint(inactive), "9p mounted", 1.0)) is None
    history, refusals = History.load(hist_path), Refusals.load(ref_path)
    g = facts.guest_facts(dom.UUIDString(), "test", ("suspend",), 0, live, inactive, history, refusals, rank=None)
    assert g.refused == "9p mounted" and g.last_image_bytes == 12345 and g.max_memory_bytes == memory
    # a device added: the refusal no longer applies
    changed = inactive.replace("</devices>", "<watchdog model='i6300esb'/></devices>")
    g = facts.guest_facts(dom.UUIDString(), "test", ("suspend",), 0, live, changed, history, refusals, rank=None)
    assert g.refused is None
    settings = facts.HostSettings(1 * MIB, 60.0, 8, True, False, 0, 300)
    host = facts.host_facts("test:///default", settings, history)
    assert host.free_bytes is None and "test" in host.room_unknown_why
    assert host.records and host.records[0].bytes_saved == 12345
    dom.undefine()
    conn.close()


def test_save_dir_override_for_a_local_test_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(saveimage.ENV_SAVE_DIR, str(tmp_path))
    settings = facts.HostSettings(0, None, 8, True, False, 0, 300)
    host = facts.host_facts("test:///default", settings, History.load(tmp_path / "none"), tmp_path / "qemu.conf")
    assert host.save_dir == str(tmp_path) and host.free_bytes is not None and host.image_format == "raw"
