"""Measure real managed-save images against the planner's upper bound
(stop/budget.py save_bound), and the save rate of this host (issue 22).

    python -m bench.saveimages [--json bench/results-saveimages.json]

For each memory size, a guest with nothing dirtied and one with most of its
memory filled (lgt.dirty): one managed save each, alone (the image's size and
the save's seconds); then all of them saved at once (the aggregate rate).
Needs root and the test bed; run under `flock /tmp/qemu-system.lock`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt

from libvirt_guests.stop.budget import MIB, GuestFacts, save_bound
from tests.testbed.daemons import ensure_libvirtd
from tests.testbed.guests import GUEST_OVERHEAD_MIB, GuestFactory, sweep_leftovers
from tests.testbed.images import ensure_images

URI = "qemu:///system"
SAVE_DIR = Path("/var/lib/libvirt/qemu/save")


def image_of(dom: libvirt.virDomain) -> int:
    return (SAVE_DIR / f"{dom.name()}.save").stat().st_size


def bound_of(dom: libvirt.virDomain) -> int:
    facts = GuestFacts(dom.UUIDString(), dom.name(), ("suspend",), 0, dom.maxMemory() * 1024)
    return save_bound(facts, "raw")


def measure(sizes: list[int]) -> dict[str, object]:
    ensure_libvirtd()
    conn = libvirt.open(URI)
    sweep_leftovers(conn)
    factory = GuestFactory(conn, ensure_images())
    rows: list[dict[str, object]] = []
    try:
        specs = [(mib, dirty) for mib in sizes for dirty in (0, mib - GUEST_OVERHEAD_MIB - 8)]
        for mib, dirty in specs:
            (dom,) = factory.create(1, memory_mib=mib, dirty_mib=dirty)
            started = time.monotonic()
            dom.managedSave(libvirt.VIR_DOMAIN_SAVE_RUNNING)
            took = time.monotonic() - started
            size, bound = image_of(dom), bound_of(dom)
            rows.append({"memory_mib": mib, "dirty_mib": dirty, "image_bytes": size, "bound_bytes": bound,
                         "image_over_bound": round(size / bound, 3), "save_seconds": round(took, 2),
                         "rate_mib_s": round(size / MIB / took, 1)})
            print(json.dumps(rows[-1]), flush=True)
            dom.managedSaveRemove()
        # all at once: the aggregate rate, dirtied guests of every size
        doms = [factory.create(1, memory_mib=mib, dirty_mib=mib - GUEST_OVERHEAD_MIB - 8)[0] for mib in sizes]
        started = time.monotonic()
        with ThreadPoolExecutor(len(doms)) as pool:
            list(pool.map(lambda d: d.managedSave(libvirt.VIR_DOMAIN_SAVE_RUNNING), doms))
        took = time.monotonic() - started
        total = sum(image_of(d) for d in doms)
        together = {"guests": len(doms), "bytes": total, "seconds": round(took, 2),
                    "rate_mib_s": round(total / MIB / took, 1)}
        print(json.dumps(together), flush=True)
        for dom in doms:
            dom.managedSaveRemove()
    finally:
        factory.cleanup()
    return {"alone": rows, "together": together}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.sizes)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
