"""Real QEMU guests for tests: domain XML, a factory, wait helpers, cleanup.

Every guest is named ``lgt-<pid>-<n>`` so concurrent runs never collide and
:func:`sweep_leftovers` can find what a crashed run left behind.  A guest
prints :data:`READY_MARKER` on its serial port (a file) once its ACPI power
button handler is armed.  The serial log is truncated whenever QEMU starts,
including a restore from a managed save, so after a restore wait for state
``running`` (:func:`wait_running`), not for the marker.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import uuid as uuidlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.sax.saxutils import escape

import libvirt

from tests.testbed.daemons import URI, ensure_libvirtd, pid_alive
from tests.testbed.images import (
    FAILED_MARKER,
    READY_MARKER,
    Images,
    cache_dir,
    ensure_images,
)

PREFIX = "lgt-"
MODES = ("normal", "stubborn", "slow")
POLL = 0.2
BOOT_TIMEOUT = 120.0
MIN_MEMORY_MIB = 96
#: Memory the guest kernel and initramfs need (128 MiB leaves ~71 MiB free).
GUEST_OVERHEAD_MIB = 72
SERIAL_SUBDIR = "serial"

_counter = itertools.count(1)
_counter_lock = threading.Lock()


class GuestTimeout(TimeoutError):
    """A guest did not reach the expected state in time."""


def domain_type() -> str:
    """Return ``'kvm'`` where hardware KVM really works, else ``'qemu'`` (TCG).

    Needs /dev/kvm, the kvm_intel or kvm_amd module, and vmx/svm in
    /proc/cpuinfo; the paravirtual ``kvm_pvm`` cannot run a stock kernel.
    ``LGT_DOMAIN_TYPE`` overrides the detection.
    """
    forced = os.environ.get("LGT_DOMAIN_TYPE")
    if forced in ("kvm", "qemu"):
        return forced
    if not Path("/dev/kvm").exists():
        return "qemu"
    if not any(Path(f"/sys/module/{m}").exists() for m in ("kvm_intel", "kvm_amd")):
        return "qemu"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "qemu"
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return "kvm" if ("vmx" in flags or "svm" in flags) else "qemu"
    return "qemu"


def serial_dir(images: Images | None = None) -> Path:
    """Return (creating it) the directory that holds the guests' serial logs."""
    path = (images.cache_dir if images else cache_dir()) / SERIAL_SUBDIR
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
    return path


def serial_log_path(name: str, images: Images | None = None) -> Path:
    """Return the serial log file of guest ``name``."""
    return serial_dir(images) / f"{name}.log"


def domain_xml(
    name: str,
    *,
    mode: str = "normal",
    memory_mib: int = 128,
    dirty_mib: int = 0,
    slow_seconds: int = 5,
    uuid: str | None = None,
    images: Images | None = None,
    extra_devices: str = "",
) -> str:
    """Return the XML of a test guest (direct kernel boot, no disk or NIC).

    ``extra_devices``: XML added to <devices> as it is (e.g. a device QEMU cannot save).

    ``mode`` is ``normal`` (ACPI power button powers off), ``stubborn``
    (ignores it) or ``slow`` (powers off ``slow_seconds`` after it).
    ``dirty_mib`` MiB of guest memory are filled with non-zero data at boot.
    64 MiB of memory does not boot; 96 MiB or more does.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if memory_mib < MIN_MEMORY_MIB:
        raise ValueError(f"memory_mib={memory_mib}: guests need at least {MIN_MEMORY_MIB} MiB to boot")
    if dirty_mib > memory_mib - GUEST_OVERHEAD_MIB:
        raise ValueError(
            f"dirty_mib={dirty_mib} too big for memory_mib={memory_mib}: at most "
            f"memory_mib - {GUEST_OVERHEAD_MIB} (the guest panics out of memory otherwise)"
        )
    imgs = images or ensure_images()
    # no_timer_check: on a loaded TCG host the kernel's IO-APIC timer check fails and it panics at boot.
    cmdline = (f"console=ttyS0 quiet lgt.mode={mode} lgt.slow={int(slow_seconds)} lgt.dirty={int(dirty_mib)} "
               "i8042.noaux no_timer_check")
    uuid_elem = f"\n  <uuid>{escape(uuid)}</uuid>" if uuid else ""
    log = serial_log_path(name, imgs)
    extra = f"\n    {extra_devices}" if extra_devices else ""
    return f"""<domain type='{domain_type()}'>
  <name>{escape(name)}</name>{uuid_elem}
  <memory unit='MiB'>{int(memory_mib)}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(imgs.kernel))}</kernel>
    <initrd>{escape(str(imgs.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'>
      <source path='{escape(str(log))}'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>{extra}
  </devices>
</domain>
"""


# ----------------------------------------------------------- helpers --


def _is_no_domain(err: libvirt.libvirtError) -> bool:
    """Tell whether ``err`` says the domain does not exist (any more)."""
    return err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


def domain_state(dom: libvirt.virDomain) -> int | None:
    """Return the domain's ``VIR_DOMAIN_*`` state, or None if it vanished."""
    # List first: asking a vanished domain works too, but libvirt's default
    # error handler then prints "Domain not found" on stderr.
    if dom.UUIDString() not in {d.UUIDString() for d in dom.connect().listAllDomains(0)}:
        return None
    try:
        return dom.state()[0]
    except libvirt.libvirtError as err:
        if _is_no_domain(err):
            return None
        raise


def serial_tail(name: str, lines: int = 20, images: Images | None = None) -> str:
    """Return the last ``lines`` lines of guest ``name``'s serial log."""
    try:
        text = serial_log_path(name, images).read_text(errors="replace")
    except OSError as err:
        return f"<no serial log: {err}>"
    return "\n".join(text.splitlines()[-lines:])


def _serial_marker(name: str, images: Images | None = None) -> str | None:
    """Return the ready or failed marker guest ``name`` printed, if any."""
    try:
        with open(serial_log_path(name, images), "rb") as f:
            text = f.read()
    except OSError:
        return None
    for marker in (FAILED_MARKER, READY_MARKER):
        if marker.encode() in text:
            return marker
    return None


def wait_ready(
    doms: libvirt.virDomain | Iterable[libvirt.virDomain],
    timeout: float = BOOT_TIMEOUT,
    images: Images | None = None,
) -> None:
    """Wait until each guest printed the ready marker (after a cold boot).

    Raises :class:`GuestTimeout` naming the guest and its serial log tail if
    the marker does not show up in ``timeout`` seconds, or at once if the
    guest stops.  Do not use after a restore (the log starts empty then).
    """
    pending = [doms] if isinstance(doms, libvirt.virDomain) else list(doms)
    deadline = time.monotonic() + timeout
    while pending:
        for dom in list(pending):
            name = dom.name()
            marker = _serial_marker(name, images)
            if marker == READY_MARKER:
                pending.remove(dom)
                continue
            if marker == FAILED_MARKER:
                raise GuestTimeout(f"guest {name} failed to boot; serial log tail:\n{serial_tail(name, images=images)}")
            state = domain_state(dom)
            if state not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
                raise GuestTimeout(
                    f"guest {name} stopped (state {state}) before {READY_MARKER}; "
                    f"serial log tail:\n{serial_tail(name, images=images)}"
                )
        if not pending:
            return
        if time.monotonic() >= deadline:
            dom = pending[0]
            raise GuestTimeout(
                f"guest {dom.name()} did not print {READY_MARKER} within {timeout:.0f} s "
                f"({len(pending)} guest(s) not ready); serial log tail:\n"
                f"{serial_tail(dom.name(), images=images)}"
            )
        time.sleep(POLL)


def wait_state(dom: libvirt.virDomain, states: Iterable[int | None], timeout: float) -> bool:
    """Poll every 0.2 s until the state is one of ``states``; False on timeout.

    A vanished (transient, stopped) domain has state None.
    """
    wanted = set(states)
    deadline = time.monotonic() + timeout
    while True:
        if domain_state(dom) in wanted:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def wait_running(dom: libvirt.virDomain, timeout: float = 30.0) -> bool:
    """Wait until the guest runs (e.g. after a restore); False on timeout."""
    return wait_state(dom, (libvirt.VIR_DOMAIN_RUNNING,), timeout)


def wait_shutoff(dom: libvirt.virDomain, timeout: float = 30.0) -> bool:
    """Wait until the guest is shut off or gone (transient); False on timeout."""
    return wait_state(dom, (libvirt.VIR_DOMAIN_SHUTOFF, None), timeout)


def revive_connection(conn: libvirt.virConnect, uri: str = URI) -> bool:
    """Reopen ``conn`` in place if libvirtd went away (restart, crash).

    Starts libvirtd again if nothing answers.  Returns True if reopened.
    Needed because a connection dies with the libvirtd it talked to, while
    fixtures hand the same object to many tests.
    """
    try:
        conn.getLibVersion()
        return False
    except libvirt.libvirtError:
        pass
    ensure_libvirtd()
    fresh = libvirt.open(uri)
    old, conn._o = conn._o, fresh._o  # swap the C handle
    fresh._o = None  # now owned by conn
    with contextlib.suppress(libvirt.libvirtError):
        libvirt.libvirtmod.virConnectClose(old)
    return True


def _existing_domains(conn: libvirt.virConnect) -> dict[str, libvirt.virDomain]:
    """Return all domains by name (listing avoids noisy failed lookups)."""
    return {d.name(): d for d in conn.listAllDomains(0)}


def remove_domain(
    conn: libvirt.virConnect,
    name: str,
    images: Images | None = None,
    dom: libvirt.virDomain | None = None,
) -> bool:
    """Destroy, drop the managed save of, undefine guest ``name``; delete its logs.

    Tolerates a guest that is already gone.  Returns True if a domain existed.
    """
    if dom is None:
        dom = _existing_domains(conn).get(name)
    existed = dom is not None
    try:
        if dom is not None:
            _remove(dom)
    except libvirt.libvirtError as err:
        if not _is_no_domain(err):
            raise
    for log in serial_dir(images).glob(f"{name}.log*"):
        log.unlink(missing_ok=True)
    return existed


def _remove(dom: libvirt.virDomain) -> None:
    """Destroy ``dom`` if active and undefine it with its managed save."""
    persistent = dom.isPersistent()
    if dom.isActive():
        try:
            dom.destroy()
        except libvirt.libvirtError as err:
            # Already stopped on its own in the meantime.
            if err.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                raise
    if not persistent:
        return
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    )
    try:
        dom.undefineFlags(flags)
    except libvirt.libvirtError as err:
        if _is_no_domain(err):
            raise
        if dom.hasManagedSaveImage(0):
            dom.managedSaveRemove(0)
        dom.undefine()


def sweep_leftovers(conn: libvirt.virConnect, *, keep_live_runs: bool = True) -> list[str]:
    """Remove every ``lgt-`` domain and serial log left by earlier runs.

    With ``keep_live_runs`` guests of a still running other process
    (``lgt-<pid>-...`` with a live pid other than ours) are kept.
    Returns the names of removed domains.
    """
    me = os.getpid()

    def stale(name: str) -> bool:
        """Tell whether ``name`` belongs to no other live test run."""
        parts = name.split("-")
        if not keep_live_runs or len(parts) < 3 or not parts[1].isdigit():
            return True
        pid = int(parts[1])
        return pid == me or not pid_alive(pid)

    removed = []
    for name, dom in _existing_domains(conn).items():
        if name.startswith(PREFIX) and stale(name) and remove_domain(conn, name, dom=dom):
            removed.append(name)
    known = set(_existing_domains(conn))
    for log in serial_dir().glob(f"{PREFIX}*.log*"):
        name = log.name.split(".log", 1)[0]
        if name not in known and stale(name):
            log.unlink(missing_ok=True)
    return removed


# ----------------------------------------------------------- factory --


class GuestFactory:
    """Creates test guests on a ``qemu:///system`` connection, cleans them up."""

    def __init__(
        self,
        conn: libvirt.virConnect,
        images: Images | None = None,
        prefix: str | None = None,
    ) -> None:
        """Bind to ``conn``; names are ``<prefix><n>`` (``lgt-<pid>-<n>``)."""
        self.conn = conn
        self.images = images or ensure_images()
        self.prefix = prefix or f"{PREFIX}{os.getpid()}-"
        self.names: list[str] = []

    def _next_name(self) -> str:
        """Return a fresh, process-wide unique guest name."""
        with _counter_lock:
            return f"{self.prefix}{next(_counter)}"

    def xml(self, name: str, **kwargs: object) -> str:
        """Return the domain XML for ``name`` (see :func:`domain_xml`)."""
        return domain_xml(name, images=self.images, **kwargs)  # type: ignore[arg-type]

    def create(
        self,
        count: int = 1,
        *,
        mode: str = "normal",
        transient: bool = False,
        memory_mib: int = 128,
        dirty_mib: int = 0,
        slow_seconds: int = 5,
        extra_devices: str = "",
        start: bool = True,
        wait: bool = True,
        timeout: float = BOOT_TIMEOUT,
    ) -> list[libvirt.virDomain]:
        """Define and/or start ``count`` guests in parallel.

        Persistent guests use defineXML (+ create if ``start``); transient
        ones createXML (so they always start).  With ``wait`` (and ``start``)
        returns once every guest printed the ready marker.
        """
        if transient and not start:
            raise ValueError("a transient guest cannot be created without starting it")
        names = [self._next_name() for _ in range(count)]
        self.names.extend(names)
        xmls = [
            self.xml(n, mode=mode, memory_mib=memory_mib, dirty_mib=dirty_mib, slow_seconds=slow_seconds,
                     extra_devices=extra_devices)
            for n in names
        ]
        for n in names:
            serial_log_path(n, self.images).unlink(missing_ok=True)

        def make(xml: str) -> libvirt.virDomain:
            """Define and start (or create, if transient) one guest."""
            if transient:
                return self.conn.createXML(xml, 0)
            dom = self.conn.defineXML(xml)
            if start:
                dom.create()
            return dom

        if count == 1:
            doms = [make(xmls[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(count, 16)) as pool:
                doms = list(pool.map(make, xmls))
        if start and wait:
            wait_ready(doms, timeout, self.images)
        return doms

    def wait_ready(self, doms: libvirt.virDomain | Iterable[libvirt.virDomain], timeout: float = BOOT_TIMEOUT) -> None:
        """See :func:`wait_ready`."""
        wait_ready(doms, timeout, self.images)

    @staticmethod
    def wait_running(dom: libvirt.virDomain, timeout: float = 30.0) -> bool:
        """See :func:`wait_running`."""
        return wait_running(dom, timeout)

    @staticmethod
    def wait_shutoff(dom: libvirt.virDomain, timeout: float = 30.0) -> bool:
        """See :func:`wait_shutoff`."""
        return wait_shutoff(dom, timeout)

    def serial_log(self, dom: libvirt.virDomain | str) -> Path:
        """Return the serial log path of a guest (domain or name)."""
        name = dom if isinstance(dom, str) else dom.name()
        return serial_log_path(name, self.images)

    def lookup(self, name: str) -> libvirt.virDomain:
        """Look up one of this factory's guests on the (revived) connection."""
        revive_connection(self.conn)
        return self.conn.lookupByName(name)

    def cleanup(self) -> list[str]:
        """Remove every guest this factory made, whatever state it is in.

        Revives the connection (and libvirtd) first if a test killed it.
        Returns the names of the domains that still existed.
        """
        revive_connection(self.conn)
        removed = []
        errors = []
        existing = _existing_domains(self.conn)
        for name in self.names:
            try:
                if remove_domain(self.conn, name, self.images, dom=existing.get(name)):
                    removed.append(name)
            except libvirt.libvirtError as err:
                errors.append(f"{name}: {err}")
        self.names.clear()
        if errors:
            raise RuntimeError("cleanup failed: " + "; ".join(errors))
        return removed


def new_uuid() -> str:
    """Return a random domain UUID string."""
    return str(uuidlib.uuid4())
