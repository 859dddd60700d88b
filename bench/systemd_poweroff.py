"""Poweroff-to-halt and boot-to-all-guests-running of a systemd host
(systemd-nspawn, tests/systemd/harness.py), ours vs Debian's original script.

Same harness, same guests: N guests of M MiB with D MiB dirtied, ON_SHUTDOWN=suspend,
ON_BOOT=start, libvirtd restarted before the poweroff (as a package upgrade does).
Run as root:  python -m bench.systemd_poweroff [--release trixie --guests 8 --memory 512 --dirty 384 --cycles 2]
(--release: the container root, each release's own original script and our .deb built in that root).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.systemd import harness
from tests.systemd.root import DEFAULT_RELEASE, RELEASES

RESTORED = "running (restored)"


def measure(variant: str, deb: Path | None, args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"halt": [], "up": [], "lost": [], "errors": []}
    with harness.container(work / variant, variant, args.release) as box:
        box.boot()
        if deb:
            box.install_deb(deb)
        box.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
        names = box.define_guests(args.guests, memory_mib=args.memory, dirty_mib=args.dirty)
        box.wait_ready(names, timeout=900)
        for _ in range(args.cycles):
            box.run("systemctl", "restart", "libvirtd")
            out["halt"].append(box.poweroff())
            entries = box.journal()
            lines = harness.service_lines(entries, boot=harness.boot_ids(entries)[-1])
            out["errors"].append(sum(1 for _, prio, msg in lines if prio <= 3 or msg.startswith("error:")))
            t0 = time.monotonic()
            box.boot()
            states, _ = box.wait_states(names, RESTORED, timeout=120)
            out["up"].append(time.monotonic() - t0)
            lost = [n for n, s in states.items() if s != RESTORED]
            out["lost"].append(len(lost))
            for name in lost:  # start again so the next cycle has every guest
                box.run("virsh", "start", name, check=False)
        box.poweroff()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", choices=list(RELEASES), default=DEFAULT_RELEASE)
    parser.add_argument("--guests", type=int, default=8)
    parser.add_argument("--memory", type=int, default=512)
    parser.add_argument("--dirty", type=int, default=384)
    parser.add_argument("--cycles", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lgt-bench-") as tmp:
        work = Path(tmp)
        deb = harness.build_deb(work, args.release)
        print(f"{args.release}: {args.guests} guests x {args.memory} MiB ({args.dirty} MiB dirtied), "
              f"{args.cycles} cycles each, load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M %Z')}")
        medians = {}
        for variant, package in (("original", None), ("ours", deb)):
            r = measure(variant, package, args, work)
            medians[variant] = (statistics.median(r["halt"]), statistics.median(r["up"]))
            print(f"{variant:9s} poweroff-to-halt {medians[variant][0]:5.1f} s "
                  f"(runs {', '.join(f'{x:.1f}' for x in r['halt'])}), "
                  f"boot-to-all-running {medians[variant][1]:5.1f} s (runs {', '.join(f'{x:.1f}' for x in r['up'])}), "
                  f"not restored {sum(r['lost']):.0f}, error lines {sum(r['errors']):.0f}", flush=True)
        (oh, ou), (nh, nu) = medians["original"], medians["ours"]
        print(f"ratio original/ours: halt {oh / nh:.2f}x, boot {ou / nu:.2f}x")

if __name__ == "__main__":
    main()
