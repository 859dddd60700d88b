"""Benchmark of the stop's planning (issue 22), on real guests.

    python -m bench.planning [--json bench/results-planning.json] [--today /work/main]

For each mix of guest sizes (dirtied memory, so that images are as large as
the guests): --warmups recorded stops (suspend, no deadline; default 2: the
first after the guests boot is slower than later ones) each with a start, then
`plan stop --json` (its predicted total) and a second stop, measured: the
prediction against the measured duration. Then, with a deadline shorter than
saving everyone takes, the planned stop against today's code (--today: a
checkout without planning) on the same guests: how many are saved, how many
are left running, how long each took.

Needs root and the test bed; run under `flock /tmp/qemu-system.lock`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt

from tests.realguest.support import Tool, state
from tests.testbed.daemons import ensure_libvirtd
from tests.testbed.guests import GuestFactory, sweep_leftovers
from tests.testbed.images import ensure_images

URI = "qemu:///system"
# (memory MiB, dirtied MiB) per guest
MIXES: dict[str, list[tuple[int, int]]] = {
    "4x128": [(128, 48)] * 4,
    "2x512+2x128": [(512, 400)] * 2 + [(128, 48)] * 2,
    "2x1024+512+128": [(1024, 900)] * 2 + [(512, 400), (128, 48)],
}


def timed_run(
    tool: Tool, *args: str, checkout: Path | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """One run of the tool; `checkout`: run that checkout's code (its directory
    as the working directory too: `python -m` puts the working directory first
    on sys.path, before PYTHONPATH)."""
    env = tool.env({"PYTHONPATH": str(checkout)} if checkout else None)
    started = time.monotonic()
    result = subprocess.run(tool.command(*args), env=env, cwd=checkout, capture_output=True, text=True, timeout=600,
                            check=False)
    return time.monotonic() - started, result


def code_of(tool: Tool, checkout: Path | None) -> str:
    """Where the package that `timed_run(..., checkout=)` runs comes from."""
    env = tool.env({"PYTHONPATH": str(checkout)} if checkout else None)
    return subprocess.run([sys.executable, "-c", "import libvirt_guests; print(libvirt_guests.__file__)"], env=env,
                          cwd=checkout, capture_output=True, text=True, check=True).stdout.strip()


def bench_mix(factory: GuestFactory, conn: libvirt.virConnect, name: str, spec: list[tuple[int, int]],
              today: Path | None, warmups: int) -> dict[str, object]:
    doms = []
    for mib, dirty in spec:
        doms += factory.create(1, memory_mib=mib, dirty_mib=dirty)
    row: dict[str, object] = {"mix": name}
    with tempfile.TemporaryDirectory(prefix="lgt-bench-plan-") as tmp:
        tool = Tool(Path(tmp) / "ours")
        tool.configure(ON_SHUTDOWN="suspend", SAVE_RESERVE="0")
        recorded = []
        for _ in range(warmups):
            took, result = timed_run(tool, "stop")
            assert result.returncode == 0, result
            recorded.append(round(took, 2))
            assert tool.run("start").returncode == 0
        plan = json.loads(tool.run("plan", "stop", "--json").stdout)
        budget = plan["uris"][0]["budget"]
        measured, result = timed_run(tool, "stop")
        assert result.returncode == 0, result
        assert all(state(conn, d) == "saved" for d in doms)
        assert tool.run("start").returncode == 0
        row.update(recorded_stops_s=recorded, rate_source=budget["save_rate_source"],
                   predicted_s=budget["predicted_seconds"],
                   measured_s=round(measured, 2), rate_mib_s=round(budget["save_rate_bytes_per_second"] / 2**20),
                   error_pct=round(100 * (budget["predicted_seconds"] - measured) / measured, 1))
        # A deadline of half the measured stop: not everyone can be saved.
        deadline = max(3, round(measured / 2))
        row["deadline_s"] = deadline
        tool.configure(ON_SHUTDOWN="suspend", SAVE_RESERVE="0", STOP_DEADLINE=str(deadline))
        code = tool.run("plan", "stop", "--json").returncode
        took, result = timed_run(tool, "stop")
        states = [state(conn, d) for d in doms]
        row["planned"] = {"plan_exit": code, "took_s": round(took, 2), "saved": states.count("saved"),
                          "off": states.count("off"), "running": states.count("running"), "exit": result.returncode}
        assert tool.run("start").returncode == 0
        # those shut down boot afresh: wait until their memory is dirtied again before today's stop
        factory.wait_ready([d for d, s in zip(doms, states, strict=True) if s == "off"])
        if today is not None:
            row["today_code"] = code_of(tool, today)
            took, result = timed_run(tool, "stop", checkout=today)
            states = [state(conn, d) for d in doms]
            row["today"] = {"took_s": round(took, 2), "saved": states.count("saved"), "off": states.count("off"),
                            "running": states.count("running"), "exit": result.returncode}
            assert timed_run(tool, "start", checkout=today)[1].returncode == 0
        assert all(state(conn, d) == "running" for d in doms), [state(conn, d) for d in doms]
    for dom in doms:
        dom.destroy()
        dom.undefine()
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| mix | predicted s | measured s | error | rate MiB/s | deadline s | planned: saved/off/running, s "
             "| today: saved/off/running, s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, t = r["planned"], r.get("today")
        assert isinstance(p, dict)
        today = f"{t['saved']}/{t['off']}/{t['running']}, {t['took_s']}" if isinstance(t, dict) else "-"
        lines.append(f"| {r['mix']} | {r['predicted_s']} | {r['measured_s']} | {r['error_pct']}% | {r['rate_mib_s']} "
                     f"| {r['deadline_s']} | {p['saved']}/{p['off']}/{p['running']}, {p['took_s']} | {today} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--today", type=Path, help="a checkout of the code without planning (e.g. /work/main)")
    parser.add_argument("--mixes", nargs="+", default=list(MIXES))
    parser.add_argument("--warmups", type=int, default=2, help="recorded stops before the plan")
    args = parser.parse_args()
    ensure_libvirtd()
    conn = libvirt.open(URI)
    sweep_leftovers(conn)
    factory = GuestFactory(conn, ensure_images())
    print(json.dumps({"ours_code": code_of(Tool(Path("/nonexistent")), None)}), flush=True)
    rows = []
    try:
        for name in args.mixes:
            rows.append(bench_mix(factory, conn, name, MIXES[name], args.today, args.warmups))
    finally:
        factory.cleanup()
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
