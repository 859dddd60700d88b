"""Live migration of a guest to a peer host: the primitives of the `migrate`
action, independent of the stop engine.

Contract shared by every function here:

* Nothing here stops, saves or destroys a guest, and nothing uses post-copy:
  whatever goes wrong, the guest keeps running on this host (unless it
  vanished on its own). Only a migration that libvirt reports finished moves
  it; from then on it runs on the peer and its definition here is shut off
  (reason "migrated") or, with ``undefine_source``, gone.
* libvirt errors come back as values (reasons, outcomes) or as
  :class:`~libvirt_guests.virt.hypervisor.VirtError`, never as ``libvirt.libvirtError``.
* "A guest never runs on two hosts": a caller turns autostart off here
  (:func:`disable_autostart_here`) before migrating, and turns it back on
  (:func:`restore_autostart`) if the migration did not happen or when the
  guest comes back.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from libvirt_guests.output import shown, shown_error, shown_uri
from libvirt_guests.virt.errors import STATE_NAMES, VirtError
from libvirt_guests.virt.guest import Guest
from libvirt_guests.virt.hypervisor import Hypervisor

MIGRATE_FLAGS = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_AUTO_CONVERGE
ABORT_GRACE = 5.0  # seconds to wait for an aborted migration to end before giving up on it
PROGRESS_EVERY = 2.0  # seconds between on_progress calls
ABORT_RETRY = 0.5  # abortJob again this often while no job is visible yet
WATCH_EVERY = 1.0  # seconds between checks that the peer connection is alive

MIGRATED = "migrated"
FAILED = "failed"
ABORTED = "aborted"
NO_EFFECT = "abort had no effect"
INTERRUPTED = "interrupted"  # the reason of a migration aborted at a signal's bound
PEER_LOST = "lost the connection to the peer"


@dataclass(frozen=True)
class MigrateProgress:
    """One look at the migration job (bytes; ``total`` 0 when unknown)."""

    processed: int
    remaining: int
    total: int
    elapsed: float  # seconds since migrate_live was called


@dataclass(frozen=True)
class MigrateOutcome:
    """What became of one migration.

    ``result`` is :data:`MIGRATED`, :data:`FAILED` or :data:`ABORTED`.
    ``reason`` is empty after a migration, libvirt's message (or
    :data:`NO_EFFECT`) after a failure, ``"timeout"``, ``"deadline"`` or
    :data:`INTERRUPTED` after an abort. ``running_here`` and ``state_here`` say how the guest is found
    on this host afterwards (``state_here`` is ``"vanished"`` when it is no
    longer defined here, e.g. after a migration with ``undefine_source``).
    ``job_left`` is True only with :data:`NO_EFFECT`: the migration job may
    still be running, and may still move the guest.
    """

    result: str
    reason: str
    seconds: float
    running_here: bool
    state_here: str
    job_left: bool = False
    detail: str = ""  # libvirt's message after an abort

    @property
    def migrated(self) -> bool:
        return self.result == MIGRATED


def open_peer(uri: str, timeout: float) -> Hypervisor:
    """Connect to the peer ``uri``, retrying a daemon that is not answering
    for up to ``timeout`` seconds; raise VirtError when it cannot be reached.
    Each attempt is bounded too (Hypervisor.connect's answer_within), so a
    peer that never answers (a black-holed address) costs about ``timeout``
    seconds, not TCP's minutes."""
    peer = Hypervisor(uri)
    peer.connect(retry_for=timeout, answer_within=max(timeout, 0.1))
    return peer


def _cpu_reason(guest: Guest, peer: Hypervisor) -> str | None:
    """Why the peer's hypervisor cannot give the guest its CPU, or None.

    Guests without a ``<cpu>`` element (the hypervisor's default CPU) and with
    an unexpanded ``host-model`` (expanded on the peer when it starts there)
    count as compatible; ``host-passthrough``/``maximum`` cannot be compared
    from the XML and are left to libvirt's own check at migration time."""
    with guest.errors():
        xml = str(guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))

    root = ET.fromstring(xml)
    cpu = root.find("cpu")
    if cpu is None or cpu.find("model") is None:
        return None
    if cpu.get("mode", "custom") != "custom":
        return None
    ostype = root.find("os/type")
    arch = ostype.get("arch") if ostype is not None else None
    machine = ostype.get("machine") if ostype is not None else None
    emulator = root.findtext("devices/emulator")
    cpu_xml = ET.tostring(cpu, encoding="unicode")
    conn = peer._require()
    try:
        try:
            verdict = conn.compareHypervisorCPU(emulator, arch, machine, root.get("type"), cpu_xml, 0)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            verdict = conn.compareCPU(cpu_xml, 0)
    except libvirt.libvirtError as err:
        return f"the peer cannot compare the guest's CPU: {shown_error(err.get_error_message() or err)}"
    if verdict == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        model = cpu.findtext("model") or "?"
        return f"the peer's CPU is incompatible with the guest's ({model})"
    if verdict == libvirt.VIR_CPU_COMPARE_ERROR:
        return "the peer could not compare the guest's CPU"
    return None


def check_peer(guest: Guest, peer: Hypervisor) -> list[str]:
    """Reasons the peer cannot take ``guest``; empty when it can, as far as
    can be told before trying.

    Checked, in order: the peer connection (if it is down nothing else is
    checked), the guest's CPU against the peer's (libvirt's CPU compare), the
    guest's maximum memory against the peer's free memory (libvirt has no
    memory-compare call; QEMU's own overhead is not counted), and a clash
    with a guest on the peer: the same UUID running there, or the same name
    with another UUID. Raises VirtError only if the guest itself cannot be
    read here (e.g. it vanished)."""
    if not peer.alive():
        return [f"cannot reach the peer {shown_uri(peer.uri)}"]
    reasons: list[str] = []
    try:
        cpu = _cpu_reason(guest, peer)
    except VirtError as err:
        if not err.disconnected or guest.hv.alive():
            raise
        return [f"lost the connection while comparing CPUs: {err}"]
    if cpu:
        reasons.append(cpu)

    with guest.errors():
        need_kib = int(guest.dom.maxMemory())
    try:
        free = int(peer._require().getFreeMemory())
    except libvirt.libvirtError as err:
        reasons.append(f"the peer does not report its free memory: {shown_error(err.get_error_message() or err)}")
    else:
        if need_kib * 1024 > free:
            reasons.append(f"the guest needs {need_kib // 1024} MiB, the peer has {free // 2**20} MiB free")

    clash = _clash(guest, peer)
    if clash:
        reasons.append(clash)
    return reasons


def _clash(guest: Guest, peer: Hypervisor) -> str | None:
    conn = peer._require()
    try:
        try:
            there = conn.lookupByUUIDString(guest.uuid)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        else:
            if there.isActive():
                return f"a guest with this UUID already runs on the peer ({shown(there.name())})"
            if there.name() != guest.name:
                return f"the peer defines this UUID as '{shown(there.name())}'"
            return None
        try:
            named = conn.lookupByName(guest.name)
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            return None
        state = "runs" if named.isActive() else "is defined"
        return f"another guest named '{shown(guest.name)}' {state} on the peer (UUID {named.UUIDString()})"
    except libvirt.libvirtError as err:
        return f"cannot look the guest up on the peer: {shown_error(err.get_error_message() or err)}"


def running_on_peer(peer: Hypervisor, uuid: str) -> bool:
    """True if a guest with ``uuid`` is active (running, paused...) on the
    peer. Raises VirtError when the peer cannot be asked: the caller decides
    what an unknown answer means (start should then not boot the guest)."""
    conn = peer._require()
    try:
        return bool(conn.lookupByUUIDString(uuid).isActive())
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise peer._error(err) from None


def disable_autostart_here(guest: Guest) -> bool:
    """Turn the guest's autostart off on this host; return the old flag, for
    :func:`restore_autostart`. A transient guest has none: False."""
    with guest.errors():
        old = bool(guest.dom.autostart())
    if old:
        with guest.errors():
            guest.dom.setAutostart(0)
    return old


def restore_autostart(guest: Guest, flag: bool) -> None:
    """Put back the autostart flag :func:`disable_autostart_here` returned
    (nothing to do when it was off)."""
    if flag:
        with guest.errors():
            guest.dom.setAutostart(1)


def _where(guest: Guest) -> tuple[bool, str]:
    """(running here, state name) of the guest on this host."""
    try:
        state = guest.state()
    except VirtError as err:
        if err.vanished:
            return False, "vanished"
        return False, f"unknown ({err})"
    active = state not in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_NOSTATE)
    return active, STATE_NAMES.get(state, "unknown")


def _progress(dom: libvirt.virDomain, t0: float) -> MigrateProgress | None:
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError:
        return None
    if not stats or stats.get("type") in (None, libvirt.VIR_DOMAIN_JOB_NONE):
        return None
    return MigrateProgress(int(stats.get("memory_processed", stats.get("data_processed", 0))),
                           int(stats.get("memory_remaining", stats.get("data_remaining", 0))),
                           int(stats.get("memory_total", stats.get("data_total", 0))),
                           time.monotonic() - t0)


def migrate_live(guest: Guest, peer: Hypervisor, data_uri: str | None = None, timeout: float | None = None,
                 deadline_at: float | None = None, undefine_source: bool = False,
                 on_progress: Callable[[MigrateProgress], None] | None = None,
                 signal_end: Callable[[], float | None] | None = None) -> MigrateOutcome:
    """Migrate ``guest`` live to ``peer`` and keep it defined there.

    ``data_uri`` (e.g. ``tcp://10.0.0.2``) is where the migration stream goes;
    without it the peer names its own host name, which must resolve here.
    ``timeout`` (seconds from now) and ``deadline_at`` (``time.monotonic()``
    value) each abort the job when reached (``result`` :data:`ABORTED`,
    ``reason`` ``"timeout"``/``"deadline"``); the guest then keeps running here.
    ``signal_end``, asked again at every look (at least every
    :data:`WATCH_EVERY` seconds), is when a signal's bound aborts the job
    (None: no signal yet): ``reason`` ``"interrupted"``.
    If the job still has not ended :data:`ABORT_GRACE` seconds after the
    abort, this gives up on it: :data:`FAILED` with :data:`NO_EFFECT` and
    ``job_left``. If the connection to the peer is lost (its libvirtd died)
    the job is aborted at once: :data:`FAILED` with ``reason`` starting with
    :data:`PEER_LOST`. ``undefine_source`` removes the definition here once the
    guest runs on the peer. ``on_progress`` is called about every
    :data:`PROGRESS_EVERY` seconds, from this thread.

    Flags: live, persistent on the peer, auto-converge; never post-copy.
    Blocks until the outcome is known (libvirt's call runs in a daemon thread).
    """
    t0 = time.monotonic()

    def outcome(result: str, reason: str, job_left: bool = False, detail: str = "") -> MigrateOutcome:
        running, state = _where(guest)
        return MigrateOutcome(result, reason, time.monotonic() - t0, running, state, job_left, detail)

    if peer.conn is None or not peer.alive():
        return outcome(FAILED, f"not connected to the peer {shown_uri(peer.uri)}")
    try:
        dom = guest.dom
    except VirtError as err:
        return outcome(FAILED, str(err))
    flags = MIGRATE_FLAGS | (libvirt.VIR_MIGRATE_UNDEFINE_SOURCE if undefine_source else 0)
    params: dict[str, object] = {}
    if data_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = data_uri
    dconn = peer.conn
    box: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            dom.migrate3(dconn, params, flags)
        except libvirt.libvirtError as err:
            box["error"] = shown_error(err.get_error_message() or str(err))
        except BaseException as err:  # noqa: BLE001 - reported, never raised in a daemon thread
            box["error"] = f"{type(err).__name__}: {shown_error(err)}"
        finally:
            done.set()

    threading.Thread(target=work, name=f"migrate {guest.name}", daemon=True).start()

    limits = []
    if timeout is not None:
        limits.append((t0 + timeout, "timeout"))
    if deadline_at is not None:
        limits.append((deadline_at, "deadline"))
    next_progress = t0 + PROGRESS_EVERY
    while True:
        signalled = signal_end() if signal_end is not None else None
        now_limits = limits if signalled is None else [*limits, (signalled, INTERRUPTED)]
        limit_at, why = min(now_limits) if now_limits else (None, "")
        now = time.monotonic()
        wake = min(next_progress, now + WATCH_EVERY, limit_at if limit_at is not None else now + WATCH_EVERY)
        if done.wait(max(0.0, wake - now)):
            break
        now = time.monotonic()
        if limit_at is not None and now >= limit_at:
            return _abort(dom, done, box, why, outcome)
        if not peer.alive():
            # The source's libvirtd does not talk to the peer's (the client drives
            # the migration): it would stream to the orphaned QEMU there until the
            # end, then fail. Stop it now.
            lost = _abort(dom, done, box, PEER_LOST, outcome)
            if lost.result == ABORTED:
                return outcome(FAILED, f"{PEER_LOST}: {shown_uri(peer.uri)}", detail=lost.detail)
            return lost
        if now >= next_progress:
            next_progress = now + PROGRESS_EVERY
            if on_progress is not None:
                seen = _progress(dom, t0)
                if seen is not None:
                    on_progress(seen)
    if "error" in box:
        return outcome(FAILED, str(box["error"]))
    return outcome(MIGRATED, "")


def _abort(dom: libvirt.virDomain, done: threading.Event, box: dict[str, object], why: str,
           outcome: Callable[..., MigrateOutcome]) -> MigrateOutcome:
    """Abort the job, wait up to ABORT_GRACE seconds for it to end."""
    give_up = time.monotonic() + ABORT_GRACE
    while True:
        try:
            dom.abortJob()
            aborted = True
        except libvirt.libvirtError:
            aborted = False  # no job yet (still preparing on the peer) or already over
        if done.wait(ABORT_GRACE if aborted else ABORT_RETRY) or done.is_set():
            break
        if time.monotonic() >= give_up:
            return outcome(FAILED, f"{NO_EFFECT} ({why})", job_left=True)
    if "error" in box:
        return outcome(ABORTED, why, detail=str(box["error"]))
    return outcome(MIGRATED, "")  # it finished before the abort could stop it
