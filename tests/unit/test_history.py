"""The history of each guest's stops and starts, and the remembered refused
saves: bounded, atomic, never raising, and never a reason for a run to set
its other state aside."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import libvirt
import pytest

from libvirt_guests.config.load import Paths
from libvirt_guests.state.history import (
    KEEP_PER_GUEST,
    KEEP_PER_URI,
    MAX_TEXT,
    GuestEvent,
    History,
    Recorder,
    StopRecord,
    record,
)
from libvirt_guests.state.refusals import Refusal, Refusals, devices_fingerprint, forget, remember
from libvirt_guests.virt import saveimage

from .support import TEST_URI, Driver, Files

NOBODY = 65534
UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
OTHER = "aaaaaaaa-f6a4-8304-79aa-97f2502e193f"


def event(when: float, uuid: str = UUID, **changes: object) -> GuestEvent:
    values: dict[str, object] = dict(
        when=when, kind="stop", uri="qemu:///system", uuid=uuid, name="web", action="suspend", planned="suspend",
        reason="", result="done", seconds=2.5, bytes_written=123456, memory_bytes=1 << 30)
    values.update(changes)
    return GuestEvent(**values)  # type: ignore[arg-type]


def stop(when: float, uri: str = "qemu:///system") -> StopRecord:
    return StopRecord(when, uri, 2, 2 << 30, 10.0, 0, False, False)


def test_missing_history_is_empty_without_problem(tmp_path: Path) -> None:
    history = History.load(tmp_path / "none")
    assert history.problem is None and history.guest(UUID) == [] and history.stops("qemu:///system") == []


def test_record_round_trip_private_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "list.history"
    assert record(path, [event(1.0), event(2.0, kind="start", action="restore")], [stop(1.0)]) is None
    assert record(path, [event(3.0, OTHER, name="db\x1b[31m")], []) is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.history"]  # no temporary file left
    history = History.load(path)
    assert history.problem is None
    assert history.guest(UUID) == [event(1.0), event(2.0, kind="start", action="restore")]
    assert history.guest(OTHER)[0].name == "db\x1b[31m"  # kept as given; escaped when printed
    assert history.stops("qemu:///system") == [stop(1.0)]
    assert history.guests() == [UUID, OTHER]


def test_bounded_per_guest_and_per_uri(tmp_path: Path) -> None:
    path = tmp_path / "h"
    for n in range(KEEP_PER_GUEST + 5):
        record(path, [event(float(n)), event(float(n), OTHER)], [stop(float(n)), stop(float(n), "lxc:///")])
    history = History.load(path)
    assert [e.when for e in history.guest(UUID)] == [float(n) for n in range(5, KEEP_PER_GUEST + 5)]
    assert len(history.guest(OTHER)) == KEEP_PER_GUEST
    for n in range(KEEP_PER_URI):
        record(path, [], [stop(100.0 + n)])
    assert [s.when for s in History.load(path).stops("qemu:///system")] == [100.0 + n for n in range(KEEP_PER_URI)]
    assert len(History.load(path).stops("lxc:///")) == KEEP_PER_GUEST + 5


def test_long_texts_and_odd_numbers_never_damage_the_file(tmp_path: Path) -> None:
    path = tmp_path / "h"
    assert record(path, [event(1.0, name="x" * 5000, reason="failed: " + "y" * 5000, seconds=float("nan"))],
                  []) is None
    history = History.load(path)
    assert history.problem is None
    (saved,) = history.guest(UUID)
    assert len(saved.name) == MAX_TEXT and saved.seconds == 0.0


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[]", b'{"version": 1, "events": [{"when": 1}]}',
                                     b'{"version": 1, "events": {}}', b'{"version": 1, "stops": [{"uri": 3}]}',
                                     b'{"version": 99}', b"[" * 100000])
def test_damaged_history_is_set_aside_and_started_afresh(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "h"
    path.write_bytes(content)
    loaded = History.load(path)
    assert loaded.problem is not None and "\n" not in loaded.problem
    assert loaded.guest(UUID) == []
    assert path.read_bytes() == content  # load sets nothing aside
    problem = record(path, [event(5.0)], [])
    assert problem is not None and "set aside" in problem and "\n" not in problem
    assert History.load(path).guest(UUID) == [event(5.0)]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("h.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == content


def test_newer_fields_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "h"
    record(path, [event(1.0)], [])
    doc = json.loads(path.read_text())
    doc["events"][0]["later_field"] = 7
    path.write_text(json.dumps(doc))
    assert History.load(path).guest(UUID) == [event(1.0)]


def test_untrusted_history_is_not_read_nor_written_through(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    path = tmp_path / "h"
    path.symlink_to(target)
    assert "symbolic link" in (History.load(path).problem or "")
    problem = record(path, [event(1.0)], [])
    assert problem is not None and "untrusted" in problem
    assert target.read_text() == "keep" and not path.is_symlink()
    assert History.load(path).guest(UUID) == [event(1.0)]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_history_of_another_user_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "h"
    record(path, [event(1.0)], [])
    os.chown(path, NOBODY, NOBODY)
    assert "not to us" in (History.load(path).problem or "")


def test_history_in_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    problem = record(tmp_path / "missing-dir" / "h", [event(1.0)], [])
    assert problem is not None and "cannot" in problem and "\n" not in problem
    assert record(Path(os.devnull), [event(1.0)], []) is None  # /dev/null: no history, not a problem
    assert History.load(Path(os.devnull)).problem is None


def test_paths_defaults_and_environment(tmp_path: Path) -> None:
    paths = Paths.resolve(list_file=str(tmp_path / "list"), environ={})
    assert paths.history_file == tmp_path / "list.history"
    assert paths.refusals_file == tmp_path / "list.refused"
    env = {"LIBVIRT_GUESTS_HISTORY_FILE": str(tmp_path / "h"), "LIBVIRT_GUESTS_REFUSALS_FILE": str(tmp_path / "r")}
    paths = Paths.resolve(list_file=str(tmp_path / "list"), environ=env)
    assert (paths.history_file, paths.refusals_file) == (tmp_path / "h", tmp_path / "r")


def test_damaged_history_never_makes_a_stop_set_its_state_aside(files: Files, driver: Driver, run) -> None:
    a = driver.guest()
    history = Path(f"{files.list_file}.history")
    refusals = Path(f"{files.list_file}.refused")
    history.write_bytes(b"\x00garbage{")
    remember(refusals, Refusal(OTHER, "f" * 64, "migration blocker", 1.0))
    files.lock_file.touch()
    result = run("stop")
    assert result.code == 0, result
    assert driver.state(a) == "saved"
    names = sorted(p.name for p in files.list_file.parent.iterdir())
    assert "list" in names and not any(".damaged-" in n and not n.startswith("list.history") for n in names), names
    assert not any(".untrusted-" in n for n in names), names
    assert Refusals.load(refusals).refused(OTHER, "f" * 64) is not None  # the refusals are untouched
    assert "history" in result.err and "set aside" in result.err  # one line about the history alone
    assert [n for n in names if ".damaged-" in n][0].startswith("list.history.damaged-")
    assert [e.kind for e in History.load(history).guest(a.UUIDString())] == ["stop"]
    assert run("start").code == 0
    assert driver.state(a) == "running"


def test_stop_and_start_on_the_test_driver_are_recorded(files: Files, driver: Driver, run) -> None:
    saved, down = driver.guest(), driver.guest(policy='<policy on_shutdown="shutdown"/>')
    files.write_config(ON_SHUTDOWN="suspend", ON_BOOT="start", PARALLEL_SAVE="3")
    files.lock_file.touch()
    assert run("stop").code == 0
    assert run("start").code == 0
    history = History.load(Path(f"{files.list_file}.history"))
    stop_saved, start_saved = history.guest(saved.UUIDString())
    assert (stop_saved.kind, stop_saved.action, stop_saved.planned, stop_saved.result) == \
        ("stop", "suspend", "suspend", "saved")
    assert stop_saved.uri == TEST_URI and stop_saved.name == saved.name() and stop_saved.reason == ""
    assert stop_saved.bytes_written is None  # the test driver writes no image
    assert stop_saved.memory_bytes == 65536 * 1024 and stop_saved.seconds >= 0
    assert (start_saved.kind, start_saved.action, start_saved.result) == ("start", "restore", "restored")
    stop_down, start_down = history.guest(down.UUIDString())
    assert (stop_down.action, stop_down.planned, stop_down.result) == ("shutdown", "shutdown", "shutdown")
    assert (start_down.action, start_down.planned, start_down.result) == ("boot", "start", "booted")
    assert history.stops(TEST_URI) == []  # no image size known: no rate learnt from it
    shown = run("report")
    assert shown.code == 0 and f"{saved.name()} ({saved.UUIDString()}) on {TEST_URI}:" in shown.out


def test_the_budgets_reason_is_recorded_with_the_configured_action(files: Files, driver: Driver, run) -> None:
    """A guest whose chain the stop's budget changed (here: transient, so it cannot be saved) is recorded with
    the action configured for it and why the budget changed it, not only with what settled it."""
    transient = driver.guest(transient=True)
    files.write_config(ON_SHUTDOWN="suspend", PERSISTENT_ONLY="false")
    files.lock_file.touch()
    assert run("stop").code == 0
    (event,) = History.load(Path(f"{files.list_file}.history")).guest(transient.UUIDString())
    assert (event.planned, event.action, event.result) == ("suspend", "shutdown", "shutdown")
    assert event.reason.split("; ")[0] == "blocker", event.reason


# --- refusals --------------------------------------------------------------------------------------------

DOMAIN = """<domain type='kvm'><name>g</name><uuid>{uuid}</uuid><memory>65536</memory>
<metadata><x:policy xmlns:x='urn:x'>{meta}</x:policy></metadata>
<devices>
  <disk type='file' device='disk'><source file='/var/lib/g.qcow2'/><target dev='vda' bus='virtio'/>{alias}</disk>
  <graphics type='vnc' port='{port}' autoport='yes'/>
  <serial type='pty'>{pty}<target port='0'/></serial>
  {extra}
</devices></domain>"""


def domain(meta: str = "", port: int = -1, alias: str = "", pty: str = "", extra: str = "") -> str:
    return DOMAIN.format(uuid=UUID, meta=meta, port=port, alias=alias, pty=pty, extra=extra)


def test_fingerprint_follows_devices_not_metadata_nor_boot() -> None:
    base = devices_fingerprint(domain())
    assert base and len(base) == 64
    assert devices_fingerprint(domain(meta="<changed/>")) == base
    running = domain(port=5901, alias="<alias name='virtio-disk0'/>", pty="<source path='/dev/pts/3'/>")
    assert devices_fingerprint(running) == base
    share = "<filesystem type='mount'><source dir='/srv'/><target dir='share'/></filesystem>"
    assert devices_fingerprint(domain(extra=share)) != base
    assert devices_fingerprint("<domain><name>x</name></domain>") == ""
    assert devices_fingerprint("<not xml") == ""


def test_fingerprint_of_a_test_driver_guest_survives_metadata_writes(driver: Driver) -> None:
    dom = driver.guest(running=True)
    before = devices_fingerprint(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, "changed", None, None,
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    after = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "changed" in after and devices_fingerprint(after) == before != ""


def test_refusal_remembered_until_devices_change_or_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "list.refused"
    fp = devices_fingerprint(domain())
    assert Refusals.load(path).refused(UUID, fp) is None
    assert remember(path, Refusal(UUID, fp, "cannot migrate domain:\n 9p mount", 10.0)) is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Refusals.load(path)
    assert loaded.problem is None
    refusal = loaded.refused(UUID, fp)
    assert refusal is not None and refusal.reason == "cannot migrate domain: 9p mount" and refusal.when == 10.0
    assert loaded.refused(UUID, devices_fingerprint(domain(extra="<rng model='virtio'/>"))) is None
    assert loaded.refused(UUID, "") is None
    assert forget(path, UUID) is None
    assert Refusals.load(path).refused(UUID, fp) is None and not path.exists()
    assert forget(path, UUID) is None  # nothing to forget: nothing written


def test_damaged_refusals_read_as_none_and_are_set_aside_on_write(tmp_path: Path) -> None:
    path = tmp_path / "r"
    path.write_bytes(b'{"version": 1, "refusals": [{"uuid": 1}]}')
    loaded = Refusals.load(path)
    assert loaded.problem is not None and loaded.by_uuid == {}
    problem = remember(path, Refusal(UUID, "f", "r", 1.0))
    assert problem is not None and "set aside" in problem
    assert Refusals.load(path).refused(UUID, "f") is not None
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    assert "symbolic link" in (Refusals.load(link).problem or "")
    assert "untrusted" in (forget(link, UUID) or "")
    assert not (tmp_path / "nowhere").exists()


def test_refusals_never_raise(tmp_path: Path) -> None:
    assert remember(tmp_path / "no" / "r", Refusal(UUID, "f", "r", 1.0)) is not None
    assert Refusals.load(tmp_path).problem is not None  # a directory


def test_history_and_refusals_default_beside_the_list_file(files: Files) -> None:
    paths = Paths.resolve()
    assert paths.history_file == Path(f"{files.list_file}.history")
    assert paths.refusals_file == Path(f"{files.list_file}.refused")
    assert TEST_URI  # the fixture's layout


# --- the recorder and the image sizes --------------------------------------------------------------------


def test_recorder_times_each_guest_and_each_uris_saves(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([10.0, 11.0, 12.0, 15.0, 20.0, 21.0, 22.0])
    monkeypatch.setattr("libvirt_guests.state.history.time.monotonic", lambda: next(clock))
    rec = Recorder("stop")
    rec.began("qemu:///system", UUID, "suspend", saves=True)  # 10
    rec.began("qemu:///system", OTHER, "suspend", saves=True)  # 11
    rec.finished("qemu:///system", UUID, "web", result="saved", bytes_written=100, memory_bytes=1, saved=True)  # 12
    rec.began("qemu:///system", OTHER, "shutdown")  # 15: its save failed, the chain goes on
    rec.finished("qemu:///system", OTHER, "db", planned="suspend", reason="failed: no", result="shutdown")  # 20
    rec.finished("lxc:///", UUID, "x", action="", result="vanished")  # 21: never begun
    web, db, gone = rec.events()
    assert (web.action, web.planned, web.seconds, web.bytes_written) == ("suspend", "suspend", 2.0, 100)
    assert (db.action, db.planned, db.reason, db.seconds) == ("shutdown", "suspend", "failed: no", 9.0)
    assert (gone.action, gone.seconds) == ("", 0.0)
    (saves,) = rec.stop_records(4, True, False)
    assert (saves.uri, saves.saved, saves.bytes_saved, saves.save_seconds) == ("qemu:///system", 1, 100, 2.0)
    assert (saves.parallel_save, saves.pause_before_save, saves.bypass_cache) == (4, True, False)


def test_recorder_makes_no_rate_from_unknown_sizes() -> None:
    rec = Recorder("stop")
    rec.began("qemu+ssh://h/system", UUID, "suspend", saves=True)
    rec.finished("qemu+ssh://h/system", UUID, "web", result="saved", saved=True)
    assert rec.stop_records(0, False, False) == [] and len(rec.events()) == 1


def test_image_bytes_of_a_local_save_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIBVIRT_GUESTS_SAVE_DIR", raising=False)
    assert saveimage.save_dir("qemu:///system") == Path("/var/lib/libvirt/qemu/save")
    assert saveimage.save_dir("qemu+ssh://host/system") is None
    assert saveimage.save_dir(TEST_URI) is None and saveimage.image_bytes(TEST_URI, "web") is None
    monkeypatch.setenv("LIBVIRT_GUESTS_SAVE_DIR", str(tmp_path))
    (tmp_path / "web.save").write_bytes(b"x" * 1234)
    (tmp_path / "link.save").symlink_to(tmp_path / "web.save")
    assert saveimage.image_bytes("qemu:///system", "web") == 1234
    assert saveimage.image_bytes("qemu:///system", "link") is None
    assert saveimage.image_bytes("qemu:///system", "none") is None
    for name in ("../web", "", "..", "a\0b"):
        assert saveimage.image_bytes("qemu:///system", name) is None
