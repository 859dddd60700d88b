"""Live migration to a peer host against managed save, per guest, at two sizes.

The peer is the migration tests' container (tests/peer/host.py: a libvirtd in
systemd-nspawn reached over qemu+tcp, stream to tcp://127.0.0.1). For each size
one guest on the host's qemu:///system, booted with part of its memory dirtied,
then ROUNDS times: migrate it live to the peer (libvirt_guests.virt.migrate.migrate_live),
migrate it back (undefining it there), managed-save it, restore it. Wall seconds,
median of the rounds.

Touches qemu:///system: run as root under the test bed's lock,
  flock /tmp/realguest.lock .venv/bin/python -m bench.migrate [--sizes 128 512 --rounds 3 --json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import libvirt

from libvirt_guests.virt import migrate
from libvirt_guests.virt.hypervisor import Hypervisor
from tests.peer.host import peer_host
from tests.testbed.daemons import URI, ensure_libvirtd
from tests.testbed.guests import GuestFactory, wait_running

DATA_URI = "tcp://127.0.0.1"
DIRTY = {128: 48, 512: 384}


def one_size(memory: int, rounds: int, here: Hypervisor, peer: Hypervisor, factory: GuestFactory) -> dict:
    dirty = DIRTY.get(memory, max(0, memory - 128))
    (dom,) = factory.create(1, memory_mib=memory, dirty_mib=dirty, timeout=600)
    times: dict[str, list[float]] = {"migrate": [], "back": [], "save": [], "restore": []}
    for _ in range(rounds):
        guest = here.lookup(dom.UUIDString())
        assert guest is not None
        out = migrate.migrate_live(guest, peer, DATA_URI, timeout=300)
        if not out.migrated:
            raise RuntimeError(f"migration failed: {out}")
        times["migrate"].append(out.seconds)
        there = peer.lookup(dom.UUIDString())
        assert there is not None
        back = migrate.migrate_live(there, here, DATA_URI, timeout=300, undefine_source=True)
        if not back.migrated:
            raise RuntimeError(f"migration back failed: {back}")
        times["back"].append(back.seconds)
        dom = here.conn.lookupByUUIDString(dom.UUIDString())
        t0 = time.monotonic()
        dom.managedSave(0)
        times["save"].append(time.monotonic() - t0)
        t0 = time.monotonic()
        dom.create()
        wait_running(dom, 60)
        times["restore"].append(time.monotonic() - t0)
    return {"memory_mib": memory, "dirty_mib": dirty, "rounds": times,
            "median": {k: round(statistics.median(v), 2) for k, v in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ensure_libvirtd()
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open(URI)
    factory = GuestFactory(conn)
    here = Hypervisor(URI)
    here.connect(10)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="lgt-bench-peer-") as tmp, peer_host(Path(tmp)) as host:
            peer = migrate.open_peer(host.uri, 10)
            for memory in args.sizes:
                res = one_size(memory, args.rounds, here, peer, factory)
                results.append(res)
                m = res["median"]
                print(f"{memory} MiB ({res['dirty_mib']} dirtied): migrate {m['migrate']:.2f} s,"
                      f" back {m['back']:.2f} s, managed save {m['save']:.2f} s, restore {m['restore']:.2f} s",
                      flush=True)
                factory.cleanup()
            peer.close()
    finally:
        factory.cleanup()
        here.close()
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
