"""The package's own libvirt layer (virt.py) against real QEMU guests."""

from __future__ import annotations

import time

import libvirt

from libvirt_guests.virt.hypervisor import Hypervisor

from .support import SYSTEM_URI, state


def test_managed_save_and_restore(guests, system_conn) -> None:
    (dom,) = guests.create(1)
    hv = Hypervisor(SYSTEM_URI)
    hv.connect()
    try:
        guest = hv.lookup(dom.UUIDString())
        assert guest is not None and guest.is_active() and guest.is_persistent()
        guest.managed_save(libvirt.VIR_DOMAIN_SAVE_RUNNING)
        assert state(system_conn, dom) == "saved"
        guest.start()
        assert state(system_conn, dom) == "running"
        assert not guest.has_managed_save()  # the image is consumed by the restore
    finally:
        hv.close()


def test_shutdown_completes_for_normal_guest_not_for_stubborn(guests, system_conn) -> None:
    normal = guests.create(1)[0]
    stubborn = guests.create(1, mode="stubborn")[0]
    hv = Hypervisor(SYSTEM_URI)
    hv.connect()
    try:
        g_normal, g_stubborn = hv.lookup(normal.name()), hv.lookup(stubborn.name())
        g_normal.shutdown()
        g_stubborn.shutdown()
        started = time.monotonic()
        assert g_normal.wait_inactive(60)
        took = time.monotonic() - started
        assert not g_stubborn.wait_inactive(5)
        assert state(system_conn, stubborn) == "running"
        assert took < 30
    finally:
        hv.close()


def test_transient_guest_is_seen_as_transient(guests) -> None:
    persistent = guests.create(1)[0]
    transient = guests.create(1, transient=True)[0]
    hv = Hypervisor(SYSTEM_URI)
    hv.connect()
    try:
        names = {g.name: g for g in hv.running()}
        assert not names[transient.name()].is_persistent()
        assert names[persistent.name()].is_persistent()
        assert [g.name for g in hv.running(persistent=False)] == [transient.name()]
    finally:
        hv.close()


def test_save_progress_from_job_statistics(guests) -> None:
    import threading

    (dom,) = guests.create(1, memory_mib=512, dirty_mib=400)
    hv = Hypervisor(SYSTEM_URI)
    hv.connect()
    try:
        guest = hv.lookup(dom.name())
        saver = threading.Thread(target=guest.managed_save, args=(libvirt.VIR_DOMAIN_SAVE_RUNNING,))
        saver.start()
        seen = []
        while saver.is_alive():
            progress = guest.job_progress()
            if progress is not None:
                seen.append(progress)
            time.sleep(0.1)
        saver.join()
        assert seen, "no job statistics during a 512 MiB save"
        assert any(0 < p.processed < p.total for p in seen)
        assert seen[-1].total >= 400 * 2**20
        guest.start()
    finally:
        hv.close()


def test_listing_facts_are_each_guests_own_answers(guests) -> None:
    """What planning takes from the listings (virt.Listed: active, paused,
    persistent, managed save) is what asking each QEMU guest answers."""
    running, paused, saved, off = guests.create(4)
    transient = guests.create(1, transient=True)[0]
    paused.suspend()
    saved.managedSave(0)
    off.destroy()
    hv = Hypervisor(SYSTEM_URI)
    hv.connect()
    try:
        listed = {g.uuid: g for g in hv.running()}
        assert {running.UUIDString(), paused.UUIDString(), transient.UUIDString()} <= set(listed)
        found = hv.lookup_all([d.UUIDString() for d in (running, paused, saved, off, transient)])
        for guest in [*listed.values(), *found.values()]:
            assert guest is not None and guest.listed is not None
            facts = guest.listed
            assert facts.active == guest.is_active(), guest
            assert facts.paused in (None, guest.is_paused()), guest
            assert facts.persistent in (None, guest.is_persistent()), guest
            assert facts.managed_save in (None, guest.has_managed_save()), guest
        assert listed[paused.UUIDString()].listed.paused is True  # type: ignore[union-attr]
        assert listed[transient.UUIDString()].listed.persistent is False  # type: ignore[union-attr]
        assert found[saved.UUIDString()].listed.managed_save is True  # type: ignore[union-attr]
        assert found[off.UUIDString()].listed.managed_save is False  # type: ignore[union-attr]
        assert found[off.UUIDString()].listed.active is False  # type: ignore[union-attr]
    finally:
        hv.close()
