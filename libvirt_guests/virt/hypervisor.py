"""Access to libvirt through libvirt-python: one connection per URI,
lifecycle events to learn when a guest stops (with a polling fallback),
reconnection when the daemon goes away."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import libvirt

from libvirt_guests.output import shown_error, shown_uri

POLL_FALLBACK = 1.0  # seconds between state checks when no event arrives
_DOM0_UUID = "00000000-0000-0000-0000-000000000000"
_RETRYABLE_CONNECT = {libvirt.VIR_ERR_SYSTEM_ERROR}
_GONE = {libvirt.VIR_ERR_NO_DOMAIN}
# The filtered listings that answer planning's questions for all guests at once.
_PAUSED = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE | libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED
_TRANSIENT = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE | libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT
_NO_ID = 0xFFFFFFFF  # virDomainGetID's (unsigned int) -1: not running
# virUUIDParse: leading blanks (C isspace), 16 pairs of hex digits with any
# '-' or ' ' before each pair, trailing blanks.
_UUID_TEXT = re.compile(r"[ \t\n\v\f\r]*((?:[- ]*[0-9a-fA-F]{2}){16})[ \t\n\v\f\r]*")

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "idle",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "in shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


class VirtError(Exception):
    """A failed libvirt call, classified for the engines. Its text is made
    for printing: libvirt's message redacted and escaped (shown_error)."""

    shown = True

    def __init__(self, message: str, *, vanished: bool = False, disconnected: bool = False) -> None:
        super().__init__(message)
        self.vanished = vanished
        self.disconnected = disconnected


class NoAnswer(VirtError):
    """libvirt accepted the connection and did not answer in time."""


_loop_lock = threading.Lock()
_loop_started = False


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread.

    Must run before the first connection is opened."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _message(err: libvirt.libvirtError) -> str:
    """libvirt's text, for printing: it may echo a URI with its credentials
    or a guest's name (shown_error)."""
    return shown_error(err.get_error_message() or str(err))


# The credential types virsh's default authentication (virConnectAuthPtrDefault) offers.
AUTH_CREDENTIALS = [
    libvirt.VIR_CRED_AUTHNAME,
    libvirt.VIR_CRED_ECHOPROMPT,
    libvirt.VIR_CRED_REALM,
    libvirt.VIR_CRED_PASSPHRASE,
    libvirt.VIR_CRED_NOECHOPROMPT,
    libvirt.VIR_CRED_EXTERNAL,
]


def auth_callback(creds: list[list[object]], _opaque: object) -> int:
    """Answer libvirt's credential questions as virsh's default callback
    does, without a terminal: libvirt fills what /etc/libvirt/auth.conf (or
    $LIBVIRT_AUTH_FILE) holds before it asks, but only when a callback is
    given (with libvirt.open() a SASL login fails even with auth.conf). What
    it still asks nobody can answer at host shutdown: take the offered
    default, else fail (-1) rather than wait for a prompt."""
    for cred in creds:
        kind, _prompt, challenge, default = cred[0], cred[1], cred[2], cred[3]
        if kind == libvirt.VIR_CRED_EXTERNAL and challenge == "PolicyKit":
            continue  # as virsh: polkit decides on its own
        if default is None:
            return -1
        cred[4] = default
    return 0


def _open_bounded(uri: str | None, within: float | None) -> libvirt.virConnect:
    """libvirt.openAuth in a daemon thread, given up after `within` seconds:
    a call blocked in C cannot be cancelled, only left behind (and the
    connection it may still open later is closed)."""
    box: dict[str, object] = {}
    done = threading.Event()
    lock = threading.Lock()

    def work() -> None:
        try:
            box["conn"] = libvirt.openAuth(uri, [AUTH_CREDENTIALS, auth_callback, None], 0)
        except libvirt.libvirtError as err:
            box["error"] = err
        except (ValueError, TypeError) as err:  # a NUL in the URI ("embedded null character")
            box["error"] = libvirt.libvirtError(f"not a URI libvirt can open ({err})")
        with lock:
            done.set()
            abandoned = "abandoned" in box
        if abandoned and "conn" in box:
            with contextlib.suppress(Exception):
                box["conn"].close()  # type: ignore[attr-defined]

    threading.Thread(target=work, name=f"open-{uri or 'default'}", daemon=True).start()
    done.wait(within)
    with lock:
        if not done.is_set():
            box["abandoned"] = True
            raise NoAnswer(f"no answer from libvirt within {within:g} s", disconnected=True)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["conn"]  # type: ignore[return-value]


class Hypervisor:
    """One libvirt connection for one URI as written in URIS."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.conn: libvirt.virConnect | None = None
        self.waits = Waits()
        self._connect_lock = threading.Lock()
        self._callback_id: int | None = None
        self.events_error: str | None = None  # why this connection has no domain events
        self.answer_within: float | None = None  # seconds an open may take (None: no bound)
        self.reconnects = 0

    @property
    def open_uri(self) -> str | None:
        return None if self.uri == "default" else self.uri

    # -- connection --------------------------------------------------------

    def connect(
        self,
        retry_for: float = 0.0,
        on_retry: Callable[[str], None] | None = None,
        answer_within: float | None = None,
    ) -> None:
        """Open the connection, retrying up to retry_for seconds while the
        daemon is not answering; raise VirtError when it cannot be opened.
        answer_within bounds each attempt: a daemon that accepts the
        connection and then never answers (stopped, hung) counts as not
        reachable, and the attempt is left behind in its thread."""
        start_event_loop()
        if answer_within is not None:
            self.answer_within = answer_within
        deadline = time.monotonic() + retry_for
        told = False
        while True:
            try:
                conn = _open_bounded(self.open_uri, self.answer_within)
                break
            except libvirt.libvirtError as err:
                retryable = err.get_error_code() in _RETRYABLE_CONNECT
                if not retryable or time.monotonic() >= deadline:
                    raise VirtError(_message(err), disconnected=True) from None
                if on_retry and not told:
                    on_retry(f"{shown_uri(self.uri)}: {_message(err)}; retrying for up to {retry_for:g} s")
                    told = True
                time.sleep(0.5)
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(5, 3)  # local drivers (test:///) have none
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(self._on_close, None)
        try:
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
            )
            self.events_error = None
        except libvirt.libvirtError as err:
            # A driver without domain events: Waits.until polls every POLL_FALLBACK seconds.
            self._callback_id = None
            self.events_error = _message(err)
        self.conn = conn

    def connected_uri(self) -> str | None:
        """libvirt's name of this connection (`default` resolved), or None."""
        try:
            return self._require().getURI()
        except (libvirt.libvirtError, VirtError):
            return None

    def alive(self) -> bool:
        if self.conn is None:
            return False
        try:
            return bool(self.conn.isAlive())
        except libvirt.libvirtError:
            return False

    def reconnect(self, retry_for: float, on_retry: Callable[[str], None] | None = None) -> None:
        """Reopen a lost connection (once, whichever thread gets here first)."""
        with self._connect_lock:
            if self.alive():
                return
            self.conn = None
            self.reconnects += 1
            self.connect(retry_for, on_retry)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if self._callback_id is not None:
                conn.domainEventDeregisterAny(self._callback_id)
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def _on_lifecycle(self, _conn: object, dom: libvirt.virDomain, _event: int, _detail: int, _opaque: object) -> None:
        try:
            uuid: str | None = dom.UUIDString()  # local: no call to the daemon
        except libvirt.libvirtError:
            uuid = None
        self.waits.event(uuid)

    def _on_close(self, _conn: object, _reason: int, _opaque: object) -> None:
        self.waits.closed()

    def _error(self, err: libvirt.libvirtError) -> VirtError:
        return VirtError(_message(err), vanished=err.get_error_code() in _GONE, disconnected=not self.alive())

    def _require(self) -> libvirt.virConnect:
        if self.conn is None:
            raise VirtError(f"not connected to {shown_uri(self.uri)}", disconnected=True)
        return self.conn

    # -- guests ------------------------------------------------------------

    def running(self, persistent: bool | None = None) -> list[Guest]:
        """Active guests ordered by domain id, as `virsh list` orders them,
        each with what planning asks of it (Listed: paused, persistent) from
        two more listings: three calls per URI, none per guest."""
        flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        if persistent is True:
            flags |= libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT
        elif persistent is False:
            flags |= libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT
        try:
            domains = self._require().listAllDomains(flags)
            listed = [(dom.ID(), dom) for dom in domains if dom.UUIDString() != _DOM0_UUID]
        except libvirt.libvirtError as err:
            raise self._error(err) from None
        paused = self._listed_uuids(_PAUSED)
        transient = None if persistent is not None else self._listed_uuids(_TRANSIENT)
        guests = []
        for _id, dom in sorted(listed, key=lambda p: p[0]):
            uuid = dom.UUIDString()
            facts = Listed(
                active=True,
                paused=None if paused is None else uuid in paused,
                persistent=persistent if transient is None else uuid not in transient,
            )
            guests.append(Guest(self, uuid, dom.name(), dom, facts))
        return guests

    def lookup(self, ident: str) -> Guest | None:
        """A guest by UUID or name; None if it is not defined (any more)."""
        conn = self._require()
        try:
            try:
                dom = conn.lookupByUUIDString(ident)
            except libvirt.libvirtError as err:
                if err.get_error_code() not in _GONE and err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                    raise
                dom = conn.lookupByName(ident)
        except libvirt.libvirtError as err:
            if err.get_error_code() in _GONE:
                return None
            raise self._error(err) from None
        return Guest(self, dom.UUIDString(), dom.name(), dom)

    def lookup_all(self, idents: Iterable[str], facts: bool = True) -> dict[str, Guest | None]:
        """lookup() of many guests from one listing of every domain: each
        ident as lookup() finds it (by UUID, else by name), None where no
        domain has it. With facts, two more listings tell planning which
        guests are paused and which have a managed-save image (Listed).
        A failed listing raises VirtError (callers may then look up one by one)."""
        try:
            domains = self._require().listAllDomains(0)
        except libvirt.libvirtError as err:
            raise self._error(err) from None
        by_uuid = {dom.UUIDString(): dom for dom in domains}
        by_name = {dom.name(): dom for dom in domains}
        paused = saved = None
        if facts:
            paused = self._listed_uuids(_PAUSED)
            saved = self._listed_uuids(libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)
        found: dict[str, Guest | None] = {}
        for ident in idents:
            uuid = parse_uuid(ident)
            dom = by_uuid.get(uuid) if uuid is not None else None
            if dom is None:
                dom = by_name.get(ident)
            if dom is None:
                found[ident] = None
                continue
            uuid = dom.UUIDString()
            listed = None
            if facts:
                listed = Listed(
                    active=dom.ID() not in (-1, _NO_ID),
                    paused=None if paused is None else uuid in paused,
                    managed_save=None if saved is None else uuid in saved,
                )
            found[ident] = Guest(self, uuid, dom.name(), dom, listed)
        return found

    def _listed_uuids(self, flags: int) -> set[str] | None:
        """The UUIDs a filtered listing names; None if it failed (a driver
        that cannot filter so): the guests are then asked one by one."""
        try:
            return {dom.UUIDString() for dom in self._require().listAllDomains(flags)}
        except libvirt.libvirtError:
            return None


def parse_uuid(text: str) -> str | None:
    """A UUID as libvirt's lookupByUUIDString reads it (virUUIDParse: 32 hex
    digits, '-' or ' ' allowed between pairs, blanks around), in the form
    UUIDString() gives; None where libvirt would refuse it (INVALID_ARG)."""
    match = _UUID_TEXT.fullmatch(text)
    if match is None:
        return None
    digits = re.sub(r"[- ]", "", match.group(1)).lower()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


class Waits:
    """Waiting for something to hold, re-checked on lifecycle events. Waiters
    of one guest wait on that guest's condition (all share one lock), so an
    event wakes only them, not every waiter of the connection; a close of the
    connection wakes everyone; without events, each looks every POLL_FALLBACK
    seconds. Key None: waiters of any guest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str | None, threading.Condition] = {}
        self._events: dict[str | None, int] = {}  # lifecycle events seen, per guest UUID
        self._closes = 0
        self._wakes = 0  # wake() calls: seen by the waiters of any guest only
        # per guest UUID: (what had happened, when) the last time done() said no
        self._said_no: dict[str, tuple[int, float]] = {}

    def event(self, uuid: str | None) -> None:
        with self._lock:
            for key in {uuid, None}:
                self._events[key] = self._events.get(key, 0) + 1
                if key in self._waiters:
                    self._waiters[key].notify_all()

    def closed(self) -> None:
        with self._lock:
            self._closes += 1
            for waiters in self._waiters.values():
                waiters.notify_all()

    def _seen(self, key: str | None) -> int:
        """With the lock held: how much has happened that concerns `key`."""
        return self._events.get(key, 0) + self._closes + (self._wakes if key is None else 0)

    def seen(self, uuid: str | None) -> int:
        """A count that changes whenever something concerns `uuid` (any guest if None)."""
        with self._lock:
            return self._seen(uuid)

    def wait_any(self, seen: int, timeout: float) -> None:
        """Wait up to timeout for anything to happen to any guest after
        seen(None) returned `seen` (or for wake())."""
        with self._lock:
            waiters = self._waiters.setdefault(None, threading.Condition(self._lock))
            if self._seen(None) == seen:
                waiters.wait(timeout=timeout)

    def wake(self) -> None:
        """Let the waiters of any guest look again (nothing happened)."""
        with self._lock:
            self._wakes += 1
            if None in self._waiters:
                self._waiters[None].notify_all()

    def until(self, done: Callable[[], bool], timeout: float | None, uuid: str | None = None) -> bool:
        """Wait until done() holds, re-checking on every lifecycle event of
        the guest `uuid` (of any guest if None), on a close of the
        connection, and every POLL_FALLBACK seconds; False on timeout.

        For one guest, done() is not asked again while nothing happened to it
        since it last said no, less than POLL_FALLBACK seconds ago: a caller
        that waits in slices (to look at its own bounds in between) does not
        ask libvirt twice per slice (issue 13: 4 calls a second per guest)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            waiters = self._waiters.setdefault(uuid, threading.Condition(self._lock))
        while True:
            with self._lock:
                seen = self._seen(uuid)
                said_no = self._said_no.get(uuid) if uuid is not None else None
            now = time.monotonic()
            if said_no is None or said_no[0] != seen or now - said_no[1] >= POLL_FALLBACK:
                if done():
                    return True
                said_no = (seen, now)
                if uuid is not None:
                    with self._lock:
                        self._said_no[uuid] = said_no
            next_look = said_no[1] + POLL_FALLBACK
            end = next_look if deadline is None else min(next_look, deadline)
            left = end - time.monotonic()
            if deadline is not None and deadline - time.monotonic() <= 0:
                return False
            with self._lock:
                if self._seen(uuid) == seen and left > 0:
                    waiters.wait(timeout=left)


@dataclass
class JobProgress:
    processed: int
    total: int


@dataclass(frozen=True)
class Listed:
    """What the listing that found a guest said about it: planning's answers,
    got for all guests of a URI in a few calls instead of one call per guest
    and question. None: that listing could not say, the guest is asked.
    Never used to act: what an action depends on is asked again just before
    (an admin or libvirt's autostart may have changed it since)."""

    active: bool
    paused: bool | None = None
    persistent: bool | None = None
    managed_save: bool | None = None


class AsListed:
    """A guest's planning-time answers: the listing's where it had them,
    else the guest's own (one call each)."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.listed = guest.listed

    def is_active(self) -> bool:
        return self.listed.active if self.listed is not None else self.guest.is_active()

    def is_paused(self) -> bool:
        known = self.listed.paused if self.listed is not None else None
        return known if known is not None else self.guest.is_paused()

    def is_persistent(self) -> bool:
        known = self.listed.persistent if self.listed is not None else None
        return known if known is not None else self.guest.is_persistent()

    def has_managed_save(self) -> bool:
        known = self.listed.managed_save if self.listed is not None else None
        return known if known is not None else self.guest.has_managed_save()


class Guest:
    """A domain of one Hypervisor, re-resolved by UUID after a reconnect.
    Its methods ask libvirt every time; `as_listed` answers from the listing."""

    def __init__(
        self, hv: Hypervisor, uuid: str, name: str, dom: libvirt.virDomain | None = None, listed: Listed | None = None
    ) -> None:
        self.hv = hv
        self.uuid = uuid
        self.name = name
        self.listed = listed
        self._dom = dom
        self._conn = hv.conn

    def __repr__(self) -> str:
        return f"Guest({self.hv.uri!r}, {self.name!r})"

    @property
    def dom(self) -> libvirt.virDomain:
        conn = self.hv._require()
        if self._dom is None or self._conn is not conn:
            try:
                self._dom = conn.lookupByUUIDString(self.uuid)
            except libvirt.libvirtError as err:
                raise self.hv._error(err) from None
            self._conn = conn
        return self._dom

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Around a direct libvirt call: its libvirtError becomes a VirtError
        (vanished, disconnected) that the engines understand."""
        try:
            yield
        except libvirt.libvirtError as err:
            raise self.hv._error(err) from None

    def state(self) -> int:
        with self.errors():
            return int(self.dom.state()[0])

    def state_name(self) -> str:
        return STATE_NAMES.get(self.state(), "unknown")

    def is_paused(self) -> bool:
        return self.state() == libvirt.VIR_DOMAIN_PAUSED

    @property
    def as_listed(self) -> AsListed:
        """Planning's view of this guest (see Listed)."""
        return AsListed(self)

    def is_active(self) -> bool:
        with self.errors():
            return bool(self.dom.isActive())

    def is_persistent(self) -> bool:
        with self.errors():
            return bool(self.dom.isPersistent())

    def has_managed_save(self) -> bool:
        with self.errors():
            return bool(self.dom.hasManagedSaveImage(0))

    def domain_id(self) -> int:
        with self.errors():
            return int(self.dom.ID())

    def managed_save(self, flags: int) -> None:
        with self.errors():
            self.dom.managedSave(flags)

    def remove_managed_save(self) -> None:
        with self.errors():
            self.dom.managedSaveRemove(0)

    def abort_job(self) -> None:
        with self.errors():
            self.dom.abortJob()

    def job_active(self) -> bool:
        """True while a job (such as a save started by an earlier, killed run) runs."""
        try:
            return self.dom.jobInfo()[0] not in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED)
        except (libvirt.libvirtError, VirtError):
            return False

    def job_progress(self) -> JobProgress | None:
        """Bytes written of the running job, or None if the driver cannot say."""
        try:
            stats = self.dom.jobStats(0)
        except (libvirt.libvirtError, VirtError):
            return None
        for prefix in ("memory", "data"):
            total = stats.get(f"{prefix}_total")
            if total:
                return JobProgress(int(stats.get(f"{prefix}_processed", 0)), int(total))
        return None

    def shutdown(self) -> None:
        with self.errors():
            self.dom.shutdown()

    def destroy(self) -> None:
        with self.errors():
            self.dom.destroy()

    def pause(self) -> None:
        with self.errors():
            self.dom.suspend()

    def resume(self) -> None:
        with self.errors():
            self.dom.resume()

    def start(self, flags: int = 0) -> None:
        with self.errors():
            self.dom.createWithFlags(flags)

    def sync_time(self) -> None:
        with self.errors():
            self.dom.setTime(None, libvirt.VIR_DOMAIN_TIME_SYNC)

    def metadata(self, namespace: str, live: bool | None = None) -> str | None:
        """The metadata element of `namespace`: the running definition's
        (live), the persistent one's, or (None) the running one's if the
        guest runs, else the persistent one's, decided by libvirt in the
        same call (VIR_DOMAIN_AFFECT_CURRENT)."""
        flags = libvirt.VIR_DOMAIN_AFFECT_CURRENT
        if live is not None:
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
        try:
            return self.dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, namespace, flags)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise self.hv._error(err) from None

    def set_metadata(self, xml: str | None, key: str, namespace: str, flags: int) -> None:
        with self.errors():
            self.dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, key if xml else None, namespace, flags)

    def is_off(self) -> bool:
        """Not running here (shut off, or gone), asked now."""
        try:
            return not self.is_active()
        except VirtError as err:
            if err.vanished:
                return True
            raise

    def wait_inactive(self, timeout: float | None) -> bool:
        return self.hv.waits.until(self.is_off, timeout, self.uuid)
