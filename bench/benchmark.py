"""Benchmark: Debian's libvirt-guests.sh, ours, and the floor (every operation
launched at once with raw libvirt calls), on the same real guests in one run.

    python -m bench.benchmark [--sizes 1 4 8] [--memory 128] [--json bench/results.json]
    python -m bench.benchmark --sizes 24 --scenarios suspend --save-caps --wave 8 --json bench/results-n24.json

--scenarios picks what runs at each size: suspend (stop with suspend, then
start) and shutdown (stop with shutdown, one at a time and N at a time; each
needs a cold boot of every guest afterwards). Guests boot --wave at a time,
each wave waited for until every guest is up: on 2 cores under TCG, two dozen
guests booting at once starve each other.

Needs root and the test bed (tests/testbed/setup.sh); starts libvirtd if it is
not running. Refuses to run beside guests it did not create: stop acts on every
running guest. Prints a Markdown table; BENCHMARKS.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import libvirt

from tests.realguest.support import Original, Tool, state
from tests.testbed.daemons import ensure_libvirtd
from tests.testbed.guests import GuestFactory, sweep_leftovers
from tests.testbed.images import ensure_images

URI = "qemu:///system"
SCENARIOS = ("suspend", "shutdown")
T = TypeVar("T")


def timed(func: Callable[[], object]) -> float:
    started = time.monotonic()
    func()
    return time.monotonic() - started


def run_ours(tool: Tool, command: str) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one run of our tool."""
    started = time.monotonic()
    proc = subprocess.Popen(tool.command(command), env=tool.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _pid, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0,):
        raise RuntimeError(f"ours {command} failed ({proc.returncode}): {out.decode(errors='replace')}")
    return took, usage.ru_maxrss


def run_original(original: Original, command: str) -> float:
    started = time.monotonic()
    result = original.run(command, timeout=1800)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"original {command} failed: {result.stdout}{result.stderr}")
    return took


def all_at_once(doms: list[libvirt.virDomain], action: Callable[[libvirt.virDomain], object]) -> None:
    with ThreadPoolExecutor(max_workers=len(doms)) as pool:
        list(pool.map(action, doms))


def floor_save(conn: libvirt.virConnect, doms: list[libvirt.virDomain]) -> float:
    return timed(lambda: all_at_once(doms, lambda d: d.managedSave(libvirt.VIR_DOMAIN_SAVE_RUNNING)))


def floor_start(doms: list[libvirt.virDomain]) -> float:
    return timed(lambda: all_at_once(doms, lambda d: d.create()))


def floor_shutdown(conn: libvirt.virConnect, doms: list[libvirt.virDomain]) -> float:
    def down(dom: libvirt.virDomain) -> None:
        dom.shutdown()
        while dom.isActive():
            time.sleep(0.02)

    return timed(lambda: all_at_once(doms, down))


def expect(conn: libvirt.virConnect, doms: list[libvirt.virDomain], wanted: str) -> None:
    states = {d.name(): state(conn, d) for d in doms}
    if set(states.values()) != {wanted}:
        raise RuntimeError(f"expected every guest {wanted}: {states}")


def waves(items: list[T], size: int) -> list[list[T]]:
    """items in consecutive slices of at most size (all at once if size < 1)."""
    size = size if size > 0 else max(1, len(items))
    return [items[i:i + size] for i in range(0, len(items), size)]


def boot(factory: GuestFactory, n: int, memory: int, wave: int, guest: dict[str, object]) -> list[libvirt.virDomain]:
    """Define and cold boot n guests, wave at a time, each wave up before the next (not timed)."""
    doms: list[libvirt.virDomain] = []
    for part in waves(list(range(n)), wave):
        doms += factory.create(len(part), memory_mib=memory, **guest)  # type: ignore[arg-type]
    return doms


def reboot(factory: GuestFactory, conn: libvirt.virConnect, doms: list[libvirt.virDomain], wave: int = 0) -> None:
    """Cold boot guests that were shut down, wave at a time (not timed)."""
    for part in waves(doms, wave):
        for dom in part:
            if not dom.isActive():
                dom.create()
        factory.wait_ready(part)
    expect(conn, doms, "running")


def bench_size(
    n: int, memory: int, conn: libvirt.virConnect, work: Path, save_caps: list[int], guest: dict[str, object],
    scenarios: tuple[str, ...] = SCENARIOS, wave: int = 0,
) -> dict[str, object]:
    factory = GuestFactory(conn, ensure_images())
    result: dict[str, object] = {"n": n, "memory_mib": memory, "scenarios": list(scenarios), "wave": wave,
                                 "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "load_before": os.getloadavg()[0]}
    try:
        doms = boot(factory, n, memory, wave, guest)
        tool, original = Tool(work / f"ours-{n}"), Original(work / f"debian-{n}")
        if "suspend" in scenarios:
            bench_suspend(result, conn, doms, tool, original, save_caps)
        if "shutdown" in scenarios:
            bench_shutdown(result, n, factory, conn, doms, tool, original, wave)
    finally:
        factory.cleanup()
    result["load_after"] = os.getloadavg()[0]
    return result


def bench_suspend(
    result: dict[str, object], conn: libvirt.virConnect, doms: list[libvirt.virDomain], tool: Tool,
    original: Original, save_caps: list[int],
) -> None:
    """Stop with suspend, then start: Debian's, ours, the floor (then ours at each PARALLEL_SAVE)."""
    original.configure(ON_SHUTDOWN="suspend", ON_BOOT="start")
    result["debian_suspend"] = run_original(original, "stop")
    expect(conn, doms, "saved")
    result["debian_start"] = run_original(original, "start")
    expect(conn, doms, "running")
    tool.configure(URIS="default", ON_SHUTDOWN="suspend", ON_BOOT="start")
    result["ours_suspend"], result["ours_suspend_rss_kib"] = run_ours(tool, "stop")
    expect(conn, doms, "saved")
    result["ours_start"], result["ours_start_rss_kib"] = run_ours(tool, "start")
    expect(conn, doms, "running")
    result["floor_suspend"] = floor_save(conn, doms)
    expect(conn, doms, "saved")
    result["floor_start"] = floor_start(doms)
    expect(conn, doms, "running")
    for cap in save_caps:
        tool.configure(URIS="default", ON_SHUTDOWN="suspend", PARALLEL_SAVE=str(cap))
        result[f"ours_suspend_cap{cap}"], _ = run_ours(tool, "stop")
        expect(conn, doms, "saved")
        run_ours(tool, "start")


def bench_shutdown(
    result: dict[str, object], n: int, factory: GuestFactory, conn: libvirt.virConnect,
    doms: list[libvirt.virDomain], tool: Tool, original: Original, wave: int,
) -> None:
    """Stop with shutdown, one at a time and N at a time: Debian's, ours, the floor."""
    for label, parallel in (("seq", "0"), ("par", str(n))):
        original.configure(ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN=parallel, ON_BOOT="start")
        result[f"debian_shutdown_{label}"] = run_original(original, "stop")
        expect(conn, doms, "off")
        original.list_file.unlink(missing_ok=True)
        reboot(factory, conn, doms, wave)
        tool.configure(URIS="default", ON_SHUTDOWN="shutdown", PARALLEL_SHUTDOWN=parallel)
        result[f"ours_shutdown_{label}"], result[f"ours_shutdown_{label}_rss_kib"] = run_ours(tool, "stop")
        expect(conn, doms, "off")
        tool.list_file.unlink(missing_ok=True)
        tool.state_file.unlink(missing_ok=True)
        reboot(factory, conn, doms, wave)
    result["floor_shutdown"] = floor_shutdown(conn, doms)
    expect(conn, doms, "off")


def markdown(results: list[dict[str, object]]) -> str:
    rows = [
        ("stop, suspend", "debian_suspend", "ours_suspend", "floor_suspend"),
        ("start after it", "debian_start", "ours_start", "floor_start"),
        ("stop, shutdown, PARALLEL_SHUTDOWN=0", "debian_shutdown_seq", "ours_shutdown_seq", "floor_shutdown"),
        ("stop, shutdown, PARALLEL_SHUTDOWN=N", "debian_shutdown_par", "ours_shutdown_par", "floor_shutdown"),
    ]
    lines = ["| N | scenario | Debian (s) | ours (s) | floor (s) | ours / Debian | ours / floor |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        for label, deb, ours, floor in rows:
            if deb not in res:
                continue  # a scenario not run at this size
            d, o, f = float(res[deb]), float(res[ours]), float(res[floor])  # type: ignore[arg-type]
            lines.append(f"| {res['n']} | {label} | {d:.2f} | {o:.2f} | {f:.2f} | {o / d:.2f} | {o / f:.2f} |")
    lines += ["", "| N | peak RSS of ours, stop suspend / start / shutdown (MiB) |", "|---|---|"]
    for res in results:
        rss = [int(res[k]) / 1024 for k in ("ours_suspend_rss_kib", "ours_start_rss_kib",  # type: ignore[call-overload]
                                            "ours_shutdown_par_rss_kib") if k in res]
        lines.append(f"| {res['n']} | {' / '.join(f'{r:.1f}' for r in rss)} |")
    caps = sorted({k for res in results for k in res if k.startswith("ours_suspend_cap")},
                  key=lambda k: int(k.removeprefix("ours_suspend_cap")))
    if caps:
        lines += ["", "| N | " + " | ".join(f"PARALLEL_SAVE={k.removeprefix('ours_suspend_cap')} (s)" for k in caps)
                  + " |", "|---|" + "---|" * len(caps)]
        for res in results:
            lines.append(f"| {res['n']} | " + " | ".join(f"{float(res[k]):.2f}" for k in caps if k in res) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--memory", type=int, default=128, help="MiB per guest")
    parser.add_argument("--save-caps", type=int, nargs="*", default=[1, 2, 4, 8],
                        help="PARALLEL_SAVE values to compare at the largest size")
    parser.add_argument("--dirty", type=int, default=0, help="MiB of memory each guest dirties after boot")
    parser.add_argument("--slow", type=int, default=0, help="seconds each guest takes to power off (0: at once)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                        help="suspend: stop with suspend, then start; shutdown: stop with shutdown, 0 and N at a time")
    parser.add_argument("--wave", type=int, default=8,
                        help="guests cold booted at once, each wave up before the next (0: all at once)")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    opts = parser.parse_args()
    ensure_libvirtd()
    conn = libvirt.open(URI)
    sweep_leftovers(conn)
    foreign = [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]
    if foreign:
        print(f"refusing to run: guests are running ({', '.join(foreign)})", file=sys.stderr)
        return 1
    results = []
    with tempfile.TemporaryDirectory(prefix="lg-bench-") as work:
        for n in opts.sizes:
            caps = opts.save_caps if n == max(opts.sizes) and "suspend" in opts.scenarios else []
            guest: dict[str, object] = {"dirty_mib": opts.dirty}
            if opts.slow:
                guest.update(mode="slow", slow_seconds=opts.slow)
            results.append(bench_size(n, opts.memory, conn, Path(work), caps, guest, tuple(opts.scenarios),
                                      opts.wave))
            print(json.dumps(results[-1]), flush=True)
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
