"""Access to libvirt through libvirt-python: one connection per URI,
lifecycle events to learn when a guest stops (with a polling fallback),
reconnection when the daemon goes away."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable

import libvirt

from libvirt_guests.output import shown_error, shown_uri
from libvirt_guests.virt.errors import NoAnswer, VirtError
from libvirt_guests.virt.guest import Guest, Listed
from libvirt_guests.virt.waits import Waits

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


