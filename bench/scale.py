"""Scaling benchmark on libvirt's test driver: wall time and peak RSS of our
`stop` and `start` for N guests, each run as a separate `libvirt-guests`
process with every path redirected into a scratch folder on the real disk.

    .venv/bin/python -m bench.scale [--sizes 10 100 1000 5000] [--timeout 600]
        [--json bench/scale-results.json] [--plot BENCHMARKS-scale.png] [--baseline OLD.json]
    .venv/bin/python -m bench.scale --profile 1000 --profile-dir /var/tmp/lg-profile   # py-spy, -X importtime

For each N, a `test:///…/node.xml` file holds N running domains; `stop` runs
with ON_SHUTDOWN=suspend. Then the same node file is rewritten so that every
domain is shut off with a managed-save image (the test driver's
<test:runstate>/<test:hasmanagedsave>), and `start` runs on the list file and
journal that our stop left: the test driver keeps no state between processes,
so this is what a host sees after a reboot. (If the stop failed or timed out,
start gets a list file written here in the original's format, and no journal.)

Beside ours: a bare process that only imports libvirt and opens a connection
on the same node file (the driver's own share of RSS: the test driver lives in
our process), and `stop` with zero guests against Debian's libvirt-guests.sh
with the same test URI, alternated in the same run.

A benchmark, not a test: nothing asserts on a time, and pytest never collects
it (bench/ is outside testpaths). Needs no libvirtd and no root; leaves nothing
behind.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.realguest.support import Original, Tool, clean_env

DEFAULT_SIZES = (10, 100, 1000, 5000)
SCRATCH_PARENT = Path("/var/tmp")
NOT_A_DISK = {"tmpfs", "ramfs", "devtmpfs", "overlay", "squashfs"}
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
VIR_DOMAIN_SHUTOFF = 5
MiB = 1024  # ru_maxrss is in KiB


# --- the scratch folder --------------------------------------------------------


def fs_type(path: Path) -> str:
    """File system type of the mount holding path (longest mount-point prefix)."""
    real = os.path.realpath(path)
    best, kind = "", "?"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[1].encode().decode("unicode_escape")
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, kind = point, fields[2]
    return kind


@contextlib.contextmanager
def scratch(parent: Path) -> Iterator[Path]:
    """A temporary folder on the real disk, removed whatever happens."""
    kind = fs_type(parent)
    if kind in NOT_A_DISK:
        raise SystemExit(f"{parent} is on {kind}, not a disk: choose another --scratch")
    work = Path(tempfile.mkdtemp(prefix="lg-scale-", dir=parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- node files ------------------------------------------------------------------


def guest_uuid(i: int) -> str:
    return f"5ca1ab1e-0000-4000-8000-{i:012x}"


def node_xml(n: int, saved: bool) -> str:
    """N domains: running, or shut off with a managed-save image."""
    extra = (f"<test:runstate>{VIR_DOMAIN_SHUTOFF}</test:runstate><test:hasmanagedsave>yes</test:hasmanagedsave>"
             if saved else "")
    domains = "".join(
        f"<domain type='test' xmlns:test='{TEST_NS}'><name>bench-{i:05d}</name><uuid>{guest_uuid(i)}</uuid>"
        f"<memory unit='KiB'>131072</memory><vcpu>1</vcpu><os><type>hvm</type></os>{extra}</domain>\n"
        for i in range(1, n + 1)
    )
    return f"<node>\n{domains}</node>\n"


def write_node(path: Path, n: int, saved: bool) -> str:
    path.write_text(node_xml(n, saved))
    return f"test://{path}"


# --- running one process ------------------------------------------------------------


# Peak RSS needs a small parent: Linux carries the RSS high-water mark of the
# memory a child had before exec (with vfork, its parent's) into the child's
# ru_maxrss, so a child spawned straight from this process (libvirt imported)
# would never read below this process's own RSS. This spawner, a bare
# interpreter, forks the command, times it, kills it at the timeout and
# writes its rusage as JSON.
SPAWNER = """
import json, os, signal, sys, time
result, timeout, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
killed = []
def on_alarm(*_):
    killed.append(1)
    os.kill(pid, signal.SIGKILL)
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, timeout)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - started
signal.setitimer(signal.ITIMER_REAL, 0)
with open(result, "w") as out:
    json.dump({"wall": wall, "rc": None if killed else os.waitstatus_to_exitcode(status),
               "rss_kib": ru.ru_maxrss, "utime": ru.ru_utime, "stime": ru.ru_stime,
               "oublock": ru.ru_oublock, "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw}, out)
"""


@dataclass
class Run:
    wall: float  # seconds
    rss_kib: int  # peak RSS of the process (and of its waited-for children)
    rc: int | None  # None: killed at the timeout
    cpu: float = 0.0  # user + system seconds, less sensitive than wall time to a busy machine
    oublock: int = 0  # 512-byte blocks written (the journal's fsync'ed rewrites show here)
    switches: int = 0  # voluntary context switches (waits: fsync, locks, condition variables)
    output: str = ""

    @property
    def timed_out(self) -> bool:
        return self.rc is None

    def figures(self) -> dict[str, Any]:
        return {"wall": round(self.wall, 4), "rss_kib": self.rss_kib, "rc": self.rc, "cpu": round(self.cpu, 3),
                "oublock": self.oublock, "nvcsw": self.switches}


# Not passed to what is measured: a service's environment has neither, and
# without bytecode our package would be compiled from source on every run
# (about 75 ms here), where an installed package has its .pyc files.
UNSERVICE_LIKE = ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")


def compile_package() -> None:
    """Byte-compile libvirt_guests where it is imported from, as an install would."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("libvirt_guests")
    for location in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(location, quiet=1)


def measure(argv: list[str], env: dict[str, str], timeout: float, log: Path) -> Run:
    """Wall time, CPU time and peak RSS of one process, through the spawner."""
    env = {k: v for k, v in env.items() if k not in UNSERVICE_LIKE}
    result = log.with_suffix(".rusage.json")
    spawner = [sys.executable, "-I", "-S", "-c", SPAWNER, str(result), str(timeout), *argv]
    with open(log, "wb") as out:
        subprocess.run(spawner, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                       check=True)
    usage = json.loads(result.read_text())
    result.unlink()
    text = log.read_text(errors="replace")
    log.unlink()
    return Run(usage["wall"], usage["rss_kib"], usage["rc"], usage["utime"] + usage["stime"], usage["oublock"],
               usage["nvcsw"], text)


def tool_argv() -> list[str]:
    """The installed `libvirt-guests` entry point of this venv, else -m."""
    script = Path(sys.executable).with_name("libvirt-guests")
    return [str(script)] if script.exists() else [sys.executable, "-m", "libvirt_guests"]


def bare_argv(uri: str | None) -> list[str]:
    code = "import libvirt, sys\n"
    if uri:
        code += "c = libvirt.open(sys.argv[1]); c.close()\n"
    return [sys.executable, "-c", code, *([uri] if uri else [])]


# --- one size --------------------------------------------------------------------


def reset(tool: Tool) -> None:
    for path in (tool.list_file, tool.state_file, tool.lock_file, Path(f"{tool.state_file}.lock")):
        path.unlink(missing_ok=True)
    for leftover in tool.list_file.parent.glob(".*"):  # temporaries of a killed atomic write
        leftover.unlink(missing_ok=True)


def listed(tool: Tool) -> int:
    return sum(len(line) - 1 for line in tool.list_lines())


def summary(output: str, command: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(f"libvirt-guests {command}:")]
    return lines[-1] if lines else ""


def outcome(kind: str, n: int, run: Run, tool: Tool) -> dict[str, Any]:
    """A run's figures and whether it did its work."""
    line = summary(run.output, kind)
    if kind == "stop":
        done = run.output.count(": done\n")  # "Suspending NAME: done"
        ok = run.rc == 0 and done == n and listed(tool) == n and f"{n} saved" in line
    else:
        done = run.output.count(": done\n")  # "Resuming guest NAME: done"
        # "N started" before main's 680c482, "N restored, 0 booted" since: ask only for N done and none failed
        ok = run.rc == 0 and done == n and " 0 failed" in line and not tool.list_file.exists()
    result: dict[str, Any] = {
        **run.figures(), "timed_out": run.timed_out, "done": done, "ok": ok, "summary": line,
    }
    if not ok:
        result["tail"] = run.output[-2000:]
    return result


def bench_size(n: int, work: Path, repeat: int, repeat_below: float, timeout: float) -> dict[str, Any]:
    root = work / f"n{n}"
    tool = Tool(root)
    node = root / "node.xml"
    uri = f"test://{node}"
    tool.configure(URIS=uri, ON_SHUTDOWN="suspend", ON_BOOT="start")
    env = tool.env()
    stops: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    load = [round(x, 2) for x in os.getloadavg()]
    while True:
        reset(tool)
        write_node(node, n, saved=False)
        b = measure(bare_argv(uri), clean_env(), timeout, root / "bare.log")
        bare.append(b.figures())
        run = measure([*tool_argv(), "stop"], env, timeout, root / "stop.log")
        stops.append(outcome("stop", n, run, tool))
        start_input = "left by our stop"
        if not stops[-1]["ok"]:
            reset(tool)
            tool.list_file.write_text(f"{uri} {' '.join(guest_uuid(i) for i in range(1, n + 1))}\n")
            start_input = "list file written by the benchmark (stop did not complete)"
        write_node(node, n, saved=True)
        run = measure([*tool_argv(), "start"], env, timeout, root / "start.log")
        starts.append({**outcome("start", n, run, tool), "input": start_input})
        print(f"  N={n}: stop {stops[-1]['wall']:.2f} s {int(stops[-1]['rss_kib']) / MiB:.1f} MiB "
              f"{'ok' if stops[-1]['ok'] else 'FAILED'}, start {starts[-1]['wall']:.2f} s "
              f"{int(starts[-1]['rss_kib']) / MiB:.1f} MiB {'ok' if starts[-1]['ok'] else 'FAILED'}, "
              f"bare connection {b.rss_kib / MiB:.1f} MiB", flush=True)
        slow = max(float(stops[0]["wall"]), float(starts[0]["wall"])) > repeat_below
        if len(stops) >= (1 if slow else repeat):
            break
    shutil.rmtree(root)
    return {"n": n, "stop": digest(stops, n), "start": digest(starts, n), "bare_connection": digest(bare, n),
            "loadavg_before": load}


def digest(samples: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Median wall time and RSS over samples, time per guest, and the samples."""
    wall = statistics.median(float(s["wall"]) for s in samples)
    rss = statistics.median(int(s["rss_kib"]) for s in samples)
    cpu = statistics.median(float(s["cpu"]) for s in samples)
    result: dict[str, Any] = {
        "wall": round(wall, 4), "cpu": round(cpu, 3), "rss_mib": round(rss / MiB, 1),
        "per_guest_ms": round(1000 * wall / n, 3) if n else None,
        "ok": all(s.get("ok", s.get("rc") == 0) for s in samples),
        "timed_out": any(s.get("timed_out") for s in samples),
        "samples": samples,
    }
    return result


# --- zero guests, ours against Debian's script ------------------------------------------


# The console script an install writes (pip's and Debian's pybuild: the same text).
CONSOLE_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from libvirt_guests.cli.main import {entry}
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({entry}())
"""


def entry_point(package: Path) -> str:
    """The function the console script calls, from the checkout's pyproject.toml (main if none says)."""
    import re

    pyproject = package.parent / "pyproject.toml"
    text = pyproject.read_text() if pyproject.exists() else ""
    found = re.search(r'^libvirt-guests\s*=\s*"libvirt_guests\.cli:(\w+)"', text, re.M)
    return found.group(1) if found else "main"


def packaged_like(root: Path, python: str, package: Path | None = None) -> tuple[list[str], dict[str, str]] | None:
    """Our package as the .deb installs it: a copy of libvirt_guests (this
    one, or the package folder given) byte-compiled by the system's python
    (Debian's python3-libvirt and python3-dotenv beside it), run through a
    console script, with no editable-install finder in the way. None if that
    python lacks either."""
    probe = subprocess.run([python, "-c", "import libvirt, dotenv"], capture_output=True, check=False,
                           env=clean_env())
    if probe.returncode != 0:
        return None
    if package is None:
        import importlib.util

        spec = importlib.util.find_spec("libvirt_guests")
        assert spec is not None and spec.submodule_search_locations
        package = Path(next(iter(spec.submodule_search_locations)))
    root.mkdir(parents=True, exist_ok=True)
    site = root / "site"
    shutil.copytree(package, site / "libvirt_guests", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([python, "-m", "compileall", "-q", str(site)], check=True, stdout=subprocess.DEVNULL,
                   env=clean_env())
    script = root / "libvirt-guests"
    script.write_text(CONSOLE_SCRIPT.format(python=python, entry=entry_point(package)))
    script.chmod(0o755)
    return [str(script)], {"PYTHONPATH": str(site)}


def bench_zero(work: Path, repeat: int, timeout: float, wait_load: float | None,
               system_python: str | None = "/usr/bin/python3", before: Path | None = None) -> dict[str, Any]:
    """`stop` with no guest: ours and Debian's, alternated, same test URI, with
    ON_SHUTDOWN=suspend (the original then lists three times) and shutdown (once).
    Ours from this venv (as tool_argv() finds it) and, with system_python, as
    the .deb installs it (packaged_like); with before (another checkout's
    package folder), that one too, packaged the same way."""
    root = work / "zero"
    root.mkdir()
    uri = write_node(root / "node.xml", 0, saved=False)
    packaged = (packaged_like(root / "packaged", system_python)
                if system_python and Path(system_python).exists() else None)
    if system_python and packaged is None:
        print(f"  zero guests: {system_python} cannot import libvirt and dotenv: packaged runs left out",
              file=sys.stderr)
    earlier = packaged_like(root / "before", system_python, before) if packaged and system_python and before else None
    sandboxes: dict[str, tuple[Tool, Original]] = {}
    for chain in ("suspend", "shutdown"):
        tool, original = Tool(root / f"ours-{chain}"), Original(root / f"debian-{chain}")
        tool.configure(URIS=uri, ON_SHUTDOWN=chain)
        original.configure(URIS=uri, ON_SHUTDOWN=chain)
        sandboxes[chain] = (tool, original)
    floors = {
        "python -c pass": [sys.executable, "-c", "pass"],
        **({f"{system_python} -c pass": [system_python, "-c", "pass"],
            f"{system_python}: import libvirt, open the URI": [system_python, *bare_argv(uri)[1:]]}
           if packaged and system_python else {}),
        "python -c 'import libvirt'": bare_argv(None),
        "python: import libvirt, open the URI": bare_argv(uri),
        "virsh connect": ["virsh", "-c", uri, "connect"],
    }
    runs: dict[str, list[Run]] = {}
    for _ in range(repeat):
        wait_quiet(wait_load)
        for chain, (tool, original) in sandboxes.items():
            reset(tool)
            runs.setdefault(f"ours, ON_SHUTDOWN={chain}", []).append(
                measure([*tool_argv(), "stop"], tool.env(), timeout, root / "ours.log"))
            if packaged:
                reset(tool)
                runs.setdefault(f"ours packaged, ON_SHUTDOWN={chain}", []).append(
                    measure([*packaged[0], "stop"], tool.env(packaged[1]), timeout, root / "ours.log"))
            if earlier:
                reset(tool)
                runs.setdefault(f"before packaged, ON_SHUTDOWN={chain}", []).append(
                    measure([*earlier[0], "stop"], tool.env(earlier[1]), timeout, root / "ours.log"))
            for path in (original.list_file, original.lock_file):
                path.unlink(missing_ok=True)
            runs.setdefault(f"Debian, ON_SHUTDOWN={chain}", []).append(
                measure(["sh", str(original.script), "stop"], clean_env(), timeout, root / "deb.log"))
        for name, argv in floors.items():
            runs.setdefault(name, []).append(measure(argv, clean_env(), timeout, root / "floor.log"))
    shutil.rmtree(root)
    result: dict[str, Any] = {}
    for name, samples in runs.items():
        bad = [r for r in samples if r.rc != 0]
        if bad:
            print(f"  zero guests: {name} failed: {bad[0].output[-500:]}", file=sys.stderr)
        result[name] = {
            "wall": round(statistics.median(r.wall for r in samples), 4),
            "min": round(min(r.wall for r in samples), 4),
            "cpu": round(statistics.median(r.cpu for r in samples), 4),
            "rss_mib": round(statistics.median(r.rss_kib for r in samples) / MiB, 1),
            "ok": not bad,
            "samples": [round(r.wall, 4) for r in samples],
        }
    for chain in sandboxes:
        debian = result[f"Debian, ON_SHUTDOWN={chain}"]
        for who in ("ours", "ours packaged", "before packaged"):
            ours = result.get(f"{who}, ON_SHUTDOWN={chain}")
            if ours is None:
                continue
            result[f"ratio {who}, ON_SHUTDOWN={chain}"] = {
                "median": round(ours["wall"] / debian["wall"], 2), "min": round(ours["min"] / debian["min"], 2),
            }
    return result


_waited = [0.0]  # seconds spent in wait_quiet by this run


def wait_quiet(limit: float | None, budget: float = 900.0) -> None:
    """Wait until the 1-minute load average is below limit, spending at most
    budget seconds in all such waits of this run (a shared machine may never be quiet)."""
    if limit is None:
        return
    told = False
    while os.getloadavg()[0] >= limit and _waited[0] < budget:
        if not told:
            print(f"  waiting for the load average ({os.getloadavg()[0]:.2f}) to fall below {limit}", flush=True)
            told = True
        time.sleep(5)
        _waited[0] += 5


# --- derived figures, machine, report ------------------------------------------------------


def marginals(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Marginal cost per guest (ms) between consecutive sizes, per command, and
    the same less the bare connection's (the test driver's own parsing)."""
    result: dict[str, Any] = {}
    for kind in ("stop", "start"):
        rows = sorted((int(s["n"]), float(s[kind]["wall"]), bool(s[kind]["ok"]),
                       float(s["bare_connection"]["wall"])) for s in sizes)
        pairs = {}
        for (n1, t1, ok1, b1), (n2, t2, ok2, b2) in zip(rows, rows[1:], strict=False):
            pairs[f"{n1}->{n2}"] = {"ms_per_guest": round(1000 * (t2 - t1) / (n2 - n1), 3),
                                    "less_driver": round(1000 * ((t2 - b2) - (t1 - b1)) / (n2 - n1), 3),
                                    "complete": ok1 and ok2}
        result[kind] = pairs
        a, b = pairs.get("10->100"), pairs.get("100->1000")
        if a and b and a["ms_per_guest"] > 0:
            result[f"{kind}_ratio_100_1000_vs_10_100"] = round(b["ms_per_guest"] / a["ms_per_guest"], 2)
    return result


def machine() -> dict[str, Any]:
    from importlib import metadata

    import libvirt

    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    major, rest = divmod(libvirt.getVersion(), 1_000_000)
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "free_h": run("free", "-h"),
        "kernel": platform.release(), "python": platform.python_version(),
        "libvirt": f"{major}.{rest // 1000}.{rest % 1000}", "libvirt_python": metadata.version("libvirt-python"),
        "loadavg": list(os.getloadavg()),
    }


def git_revision() -> str:
    """The last commit that changed libvirt_guests/ (+dirty if it has uncommitted changes)."""
    here = Path(__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(here), "log", "-1", "--format=%h", "--", "../libvirt_guests"],
                          capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "../libvirt_guests"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return head + ("+dirty" if dirty else "")


def sizes_markdown(sizes: list[dict[str, Any]]) -> list[str]:
    lines = ["| N | stop (s) | stop CPU (s) | stop ms/guest | stop RSS (MiB) | start (s) | start CPU (s) "
             "| start ms/guest | start RSS (MiB) | bare connection (s) | bare connection RSS (MiB) |",
             "|---" * 11 + "|"]
    for s in sizes:
        def cell(kind: str, key: str, s: dict[str, Any] = s) -> str:
            part = s[kind]
            value = part[key]
            mark = "" if part["ok"] else (" (killed)" if part["timed_out"] else " (failed)")
            return f"{value:.2f}{mark}" if key == "wall" else f"{value}"
        lines.append(f"| {s['n']} | {cell('stop', 'wall')} | {cell('stop', 'cpu')} | {cell('stop', 'per_guest_ms')} | "
                     f"{cell('stop', 'rss_mib')} | {cell('start', 'wall')} | {cell('start', 'cpu')} | "
                     f"{cell('start', 'per_guest_ms')} | "
                     f"{cell('start', 'rss_mib')} | {s['bare_connection']['wall']:.2f} | "
                     f"{s['bare_connection']['rss_mib']} |")
    lines += ["", "| marginal ms per guest | stop | stop less driver | start | start less driver |", "|---" * 5 + "|"]
    marg = marginals(sizes)
    for pair, stop in marg["stop"].items():
        start = marg["start"][pair]
        note = "" if stop["complete"] else " (stop: lower bound, a run was killed)"
        lines.append(f"| {pair}{note} | {stop['ms_per_guest']} | {stop['less_driver']} | {start['ms_per_guest']} | "
                     f"{start['less_driver']} |")
    for kind in ("stop", "start"):
        if f"{kind}_ratio_100_1000_vs_10_100" in marg:
            ratio = marg[f"{kind}_ratio_100_1000_vs_10_100"]
            lines.append(f"\n{kind}: marginal 100->1000 / marginal 10->100 = {ratio}")
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = [] if not results["sizes"] else sizes_markdown(results["sizes"])
    zero = results.get("zero")
    if zero:
        lines += ["", "| zero guests, stop | median (s) | min (s) | CPU (s) | peak RSS (MiB) |", "|---" * 5 + "|"]
        for name, z in zero.items():
            if "wall" in z:
                lines.append(f"| {name} | {z['wall']:.3f} | {z['min']:.3f} | {z['cpu']:.3f} | {z['rss_mib']} |")
        for name, z in zero.items():
            if name.startswith("ratio"):
                who = name.split(", ")[0].removeprefix("ratio ")
                lines.append(f"\n{who} / Debian, {name.split(', ')[1]}: {z['median']} (medians), {z['min']} (minima)")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path, baseline: dict[str, Any] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = [("", results, "-")] + ([(f"{baseline['revision']} ", baseline, "--")] if baseline else [])
    for label, res, style in series:
        sizes = res["sizes"]
        ns = [s["n"] for s in sizes]
        for kind, colour in (("stop", "tab:red"), ("start", "tab:blue")):
            per = [s[kind]["per_guest_ms"] for s in sizes]
            rss = [s[kind]["rss_mib"] for s in sizes]
            done = [i for i, s in enumerate(sizes) if s[kind]["ok"]]
            left.plot([ns[i] for i in done], [per[i] for i in done], style, marker="o", color=colour,
                      label=f"{label or res['revision'] + ' '}{kind}")
            right.plot([ns[i] for i in done], [rss[i] for i in done], style, marker="o", color=colour,
                       label=f"{label or res['revision'] + ' '}{kind}")
            for i, s in enumerate(sizes):
                if not s[kind]["ok"]:  # a lower bound: killed at the timeout (or failed)
                    word = "killed" if s[kind]["timed_out"] else "failed"
                    left.plot([ns[i]], [per[i]], "^", color=colour, markerfacecolor="none")
                    done_then = max(int(x.get("done", 0)) for x in s[kind]["samples"])
                    if not label:  # the dashed series keeps its markers only
                        left.annotate(f"{kind} {word} at {s[kind]['wall']:.0f} s, {done_then} done",
                                      (ns[i], per[i]), fontsize=7, color=colour, textcoords="offset points",
                                      xytext=(-150, 8 if kind == "stop" else -14))
                    right.plot([ns[i]], [rss[i]], "^", color=colour, markerfacecolor="none")
        if not label:
            right.plot(ns, [s["bare_connection"]["rss_mib"] for s in sizes], ":", marker=".", color="grey",
                       label="bare connection (driver)")
    left.axhline(3.0, color="black", linewidth=0.8, linestyle=":", label="target: stop of 1000 guests in 3 s")
    right.axhline(100, color="black", linewidth=0.8, linestyle=":", label="target: 100 MiB at N=5000")
    left.set(xscale="log", yscale="log", xlabel="guests (N)", ylabel="wall time per guest (ms)",
             title="time per guest, test driver")
    right.set(xscale="log", xlabel="guests (N)", ylabel="peak RSS (MiB)", title="peak RSS")
    for ax in (left, right):
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"libvirt-guests on test:///node.xml, {results['date']}, {results['machine']['nproc']} cores",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- profiles ----------------------------------------------------------------------------


def profile(n: int, work: Path, out_dir: Path, rate: int, timeout: float) -> None:
    """py-spy (all threads, samples of running threads only: where the CPU goes) of stop and start at N;
    -X importtime of stop at N=0."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    root = work / f"profile-{n}"
    tool = Tool(root)
    node = root / "node.xml"
    uri = f"test://{node}"
    tool.configure(URIS=uri, ON_SHUTDOWN="suspend", ON_BOOT="start")
    write_node(node, n, saved=False)
    for kind in ("stop", "start"):
        raw = out_dir / f"{kind}-{n}.txt"
        argv = [spy, "record", "--threads", "--rate", str(rate), "--format", "raw", "-o", str(raw),
                "--", *tool_argv(), kind]
        run = measure(argv, tool.env(), timeout, root / f"{kind}.log")
        print(f"{kind} N={n} under py-spy: {run.wall:.1f} s, rc {run.rc}; collapsed stacks in {raw}")
        if raw.exists():
            print(top_functions(raw))
        if kind == "stop":
            write_node(node, n, saved=True)
    reset(tool)
    write_node(node, 0, saved=False)
    log = out_dir / "importtime-stop-0.txt"
    subprocess.run([sys.executable, "-X", "importtime", "-m", "libvirt_guests", "stop"], env=tool.env(),
                   stderr=open(log, "w"), stdout=subprocess.DEVNULL, check=False)  # noqa: SIM115
    print(f"-X importtime of stop with zero guests: {log}")
    print(top_imports(log))
    shutil.rmtree(root)


def top_functions(raw: Path, count: int = 25) -> str:
    """Self and inclusive samples per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if not stack:
            continue
        samples = int(weight)
        frames = stack.split(";")[1:]  # the first frame is the thread
        total += samples
        if frames:
            own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"  {total} samples over all threads; self:"]
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(count)]
    lines += ["  inclusive:"] + [f"    {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(count)]
    return "\n".join(lines)


def top_imports(log: Path, count: int = 20) -> str:
    rows = []
    for line in log.read_text().splitlines():
        if line.startswith("import time:") and "|" in line and "self" not in line:
            _, self_us, cum_us, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
            rows.append((int(cum_us), int(self_us), name))
    rows.sort(reverse=True)
    return "\n".join(f"  cumulative {c / 1000:7.1f} ms  self {s / 1000:6.1f} ms  {n}" for c, s, n in rows[:count])


# --- in-process breakdown -------------------------------------------------------------------

# Functions timed by --breakdown, as "module:attribute.path"; a name the code
# no longer has is reported as missing, so the list can outlive a rewrite.
BREAKDOWN_TARGETS = (
    "libvirt_guests.engine:connect_all", "libvirt_guests.engine:Slots.wait", "libvirt_guests.engine:Slots.release",
    "libvirt_guests.stop.plan:plan_stop", "libvirt_guests.start.plan:plan_start",
    "libvirt_guests.config.policy:read_policy",
    "libvirt_guests.stop.run:StopRun._list", "libvirt_guests.stop.run:UriStop._pause",
    "libvirt_guests.stop.run:UriStop._run_group",
    "libvirt_guests.stop.run:UriStop._suspend", "libvirt_guests.stop.run:UriStop._finish",
    "libvirt_guests.stop.run:StopRun._forget_undefined", "libvirt_guests.start.run:StartRun._act",
    # the same steps after main's reshaping of stop (a0da4ee): chains.py and actions.py
    "libvirt_guests.stop.run:list_guests", "libvirt_guests.stop.chains:UriWork._run_group",
    "libvirt_guests.stop.chains:UriWork._pause", "libvirt_guests.stop.chains:UriWork._run_chain",
    "libvirt_guests.stop.chains:GuestLedger.finish",
    # after the worker pools (issue 13): a guest's chain is a GuestChain, served by engine.Workers
    "libvirt_guests.stop.chains:GuestChain.turn", "libvirt_guests.engine:Workers.put",
    "libvirt_guests.start.groups:UriStart._start_one",
    "libvirt_guests.stop.actions.suspend:Suspend.act", "libvirt_guests.stop.actions.suspend:Suspend._watch",
    "libvirt_guests.state.journal:Journal.load", "libvirt_guests.state.journal:Journal.update",
    "libvirt_guests.state.journal:Journal.save",
    "libvirt_guests.state.journal:Journal._save_locked", "libvirt_guests.state.files:atomic_write",
    "libvirt_guests.state.journal:asdict",
    "libvirt_guests.state.listfile:write_list", "os:fsync", "json:dumps", "threading:Thread.start",
    "libvirt:virConnect.listAllDomains", "libvirt:virConnect.lookupByUUIDString", "libvirt:virDomain.state",
    "libvirt:virDomain.isActive", "libvirt:virDomain.isPersistent", "libvirt:virDomain.metadata",
    "libvirt:virDomain.hasManagedSaveImage", "libvirt:virDomain.jobInfo", "libvirt:virDomain.managedSave",
    "libvirt:virDomain.suspend", "libvirt:virDomain.createWithFlags",
)


def _resolve(target: str) -> tuple[object, str, Any] | None:
    """(owner, attribute name, value) of "module:attribute.path", None if absent."""
    import importlib

    module_name, _, path = target.partition(":")
    try:
        owner: object = importlib.import_module(module_name)
        *parents, leaf = path.split(".")
        for part in parents:
            owner = getattr(owner, part)
        return owner, leaf, getattr(owner, leaf)
    except (ImportError, AttributeError):
        return None


def traced_run(command: str, report: Path, stubs: list[str], slows: list[str],
               targets: tuple[str, ...] = BREAKDOWN_TARGETS) -> int:
    """Run one command in this process with every target wrapped in a timer
    (calls, seconds summed over threads), then write the table to report.
    Each stub is replaced by a function that does nothing (what if it were free?);
    each slow ("target=seconds") sleeps that long before it runs (a save that
    takes time, as on a real host, where the test driver's is instant)."""
    import functools

    totals: dict[str, list[float]] = {}
    missing: list[str] = []
    guard = threading.Lock()
    for stub in stubs:
        found = _resolve(stub)
        if found is None:
            raise SystemExit(f"no {stub} to stub")
        setattr(found[0], found[1], lambda *_args, **_kwargs: None)
    for slow in slows:
        target, _, seconds = slow.partition("=")
        found = _resolve(target)
        if found is None:
            raise SystemExit(f"no {target} to slow down")

        def delayed(*args: object, _f: Any = found[2], _s: float = float(seconds), **kwargs: object) -> object:
            time.sleep(_s)
            return _f(*args, **kwargs)

        setattr(found[0], found[1], delayed)
    for target in targets:
        found = _resolve(target)
        if found is None:
            missing.append(target)
            continue
        owner, leaf, original = found
        cell = totals.setdefault(target, [0, 0.0])

        def wrapper(*args: object, _f: Any = original, _cell: list[float] = cell, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                took = time.perf_counter() - started
                with guard:
                    _cell[0] += 1
                    _cell[1] += took

        functools.update_wrapper(wrapper, original)
        setattr(owner, leaf, wrapper)
    from libvirt_guests.cli.main import main as cli_main

    peak = {"threads": 0}

    def count_threads() -> None:  # the most threads alive at once
        while not done.wait(0.01):
            peak["threads"] = max(peak["threads"], threading.active_count())

    done = threading.Event()
    threading.Thread(target=count_threads, daemon=True).start()
    started = time.perf_counter()
    rc = cli_main([command])
    wall = time.perf_counter() - started
    done.set()
    rows = {name: {"calls": int(c), "seconds": round(t, 4)} for name, (c, t) in totals.items() if c}
    report.write_text(json.dumps({"command": command, "rc": rc, "wall_in_main": round(wall, 4), "functions": rows,
                                  "peak_threads": peak["threads"], "stubs": stubs, "slows": slows,
                                  "missing": missing}, indent=1))
    return rc


def breakdown(n: int, work: Path, timeout: float, commands: list[str], stubs: list[str],
              slows: list[str]) -> dict[str, Any]:
    """--breakdown: stop then start at N, each timed function by function.
    Without stop, start gets a list file written here (and no journal)."""
    root = work / f"breakdown-{n}"
    tool = Tool(root)
    node = root / "node.xml"
    uri = write_node(node, n, saved=False)
    tool.configure(URIS=uri, ON_SHUTDOWN="suspend", ON_BOOT="start")
    result: dict[str, Any] = {"n": n}
    if "stop" not in commands:
        tool.list_file.write_text(f"{uri} {' '.join(guest_uuid(i) for i in range(1, n + 1))}\n")
        write_node(node, n, saved=True)
    for command in commands:
        report = root / f"{command}.json"
        argv = [sys.executable, "-m", "bench.scale", "--traced-run", command, "--traced-report", str(report),
                *(f"--stub={stub}" for stub in stubs), *(f"--slow={slow}" for slow in slows)]
        env = {**tool.env(), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        run = measure(argv, env, timeout, root / f"{command}.log")
        data = json.loads(report.read_text()) if report.exists() else {}
        result[command] = {"process": run.figures(), **data}
        print(f"{command} N={n}: {run.wall:.2f} s wall, {run.cpu:.2f} s CPU, peak RSS {run.rss_kib / MiB:.1f} MiB, "
              f"rc {run.rc}, {data.get('wall_in_main', 0):.2f} s in main(), "
              f"{data.get('peak_threads')} threads at most{', stubbed: ' + ', '.join(stubs) if stubs else ''}"
              f"{', slowed: ' + ', '.join(slows) if slows else ''}")
        for name, row in sorted(data.get("functions", {}).items(), key=lambda kv: -kv[1]["seconds"]):
            print(f"  {row['seconds']:9.3f} s  {row['calls']:7d} calls  "
                  f"{1000 * row['seconds'] / row['calls']:8.3f} ms/call  {name}")
        if data.get("missing"):
            print(f"  not found: {', '.join(data['missing'])}")
        write_node(node, n, saved=True)
    shutil.rmtree(root)
    return result


# --- main --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(DEFAULT_SIZES),
                        help="guest counts (none: only the zero-guest comparison)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (median), for sizes that are quick")
    parser.add_argument("--repeat-below", type=float, default=10.0,
                        help="repeat a size only if its first stop and start took at most this many seconds")
    parser.add_argument("--zero-repeat", type=int, default=9, help="runs of the zero-guest comparison (0: skip)")
    parser.add_argument("--system-python", default="/usr/bin/python3",
                        help="zero guests: also run ours as the .deb installs it, with this python ('': skip)")
    parser.add_argument("--zero-before", type=Path, metavar="PACKAGE_DIR",
                        help="zero guests: also run this libvirt_guests folder (another checkout's), packaged alike")
    parser.add_argument("--wait-load", type=float, metavar="LOAD",
                        help="before each size and zero-guest round, wait for the 1-minute load average to fall below "
                             "LOAD (15 min of waiting in all, at most)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is killed")
    parser.add_argument("--scratch", type=Path, default=SCRATCH_PARENT, help="parent of the scratch folder (a disk)")
    parser.add_argument("--json", type=Path, default=Path("bench/scale-results.json"))
    parser.add_argument("--plot", type=Path, default=Path("BENCHMARKS-scale.png"))
    parser.add_argument("--baseline", type=Path, help="other results JSON to draw dashed in the plot")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the plot and print the tables from --json, run nothing")
    parser.add_argument("--profile", type=int, metavar="N", help="profile stop and start at N guests instead")
    parser.add_argument("--profile-dir", type=Path, default=Path("/var/tmp/lg-profile"))
    parser.add_argument("--profile-rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--breakdown", type=int, metavar="N", help="time stop and start at N function by function")
    parser.add_argument("--commands", nargs="+", choices=("stop", "start"), default=["stop", "start"],
                        help="with --breakdown: which commands")
    parser.add_argument("--stub", action="append", default=[], metavar="MODULE:ATTR",
                        help="with --breakdown: replace this function by one that does nothing")
    parser.add_argument("--slow", action="append", default=[], metavar="MODULE:ATTR=SECONDS",
                        help="with --breakdown: sleep this long before each call of this function")
    parser.add_argument("--traced-run", help=argparse.SUPPRESS)
    parser.add_argument("--traced-report", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    # SIGTERM (and SIGINT, ignored in a background job) end the run through the
    # finally clauses, so the scratch folder and node files never stay behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if opts.traced_run:
        return traced_run(opts.traced_run, opts.traced_report, opts.stub, opts.slow)
    baseline = json.loads(opts.baseline.read_text()) if opts.baseline else None
    if opts.plot_only:
        earlier = json.loads(opts.json.read_text())
        plot(earlier, opts.plot, baseline)
        print(markdown(earlier))
        return 0
    compile_package()
    with scratch(opts.scratch) as work:
        if opts.profile is not None:
            profile(opts.profile, work, opts.profile_dir, opts.profile_rate, opts.timeout)
            return 0
        if opts.breakdown is not None:
            breakdown(opts.breakdown, work, opts.timeout, opts.commands, opts.stub, opts.slow)
            return 0
        results: dict[str, Any] = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "revision": git_revision(), "machine": machine(),
            "scratch_fs": fs_type(opts.scratch), "tool": tool_argv(),
            "config": {"ON_SHUTDOWN": "suspend", "ON_BOOT": "start", "others": "defaults"},
            "environment": f"package byte-compiled; {', '.join(UNSERVICE_LIKE)} not passed on",
        }
        print(f"scratch folder {work} ({results['scratch_fs']}); revision {results['revision']}", flush=True)
        if opts.zero_repeat:
            print("zero guests: ours and Debian's stop, alternated", flush=True)
            results["zero"] = bench_zero(work, opts.zero_repeat, opts.timeout, opts.wait_load,
                                         opts.system_python or None, opts.zero_before)
        sizes = []
        for n in opts.sizes:
            print(f"N={n}", flush=True)
            wait_quiet(opts.wait_load)
            sizes.append(bench_size(n, work, opts.repeat, opts.repeat_below, opts.timeout))
        results["sizes"] = sizes
        results["marginals"] = marginals(sizes)
        results["loadavg_after"] = list(os.getloadavg())
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(results, indent=1) + "\n")
    if sizes:  # a zero-guest run alone leaves the plot as it was
        plot(results, opts.plot, baseline)
    print(markdown(results))
    print(f"\nresults: {opts.json}" + (f"; plot: {opts.plot}" if sizes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
