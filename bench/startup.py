"""Start-up benchmark: the wall time of a `stop` with no guests, as packaged.

    .venv/bin/python -m bench.startup [--repeat 15] [--before OLD_PACKAGE_DIR]

Each run is a fresh process running what the console script runs
(`from libvirt_guests.cli import run; run()`, or `libvirt_guests.cli:run` as
the package's pyproject names it), with this interpreter (the venv's:
libvirt-python and python-dotenv installed), on a copy of the package
byte-compiled as an install would, against a test:///…/node.xml with no
domain, every path in a scratch folder. --before adds another checkout's
libvirt_guests folder (e.g. `git archive main libvirt_guests | tar -x -C
/tmp/main`), run alternately with ours so that both see the same machine.

A benchmark, not a test: nothing asserts on a time (issue 20's budget for a
zero-guest stop: 0.25 s on the project's machine). Needs no libvirtd."""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "libvirt_guests"
ENTRY = "from libvirt_guests.cli import run; run()"


def installed(package: Path, root: Path) -> Path:
    """A byte-compiled copy of package under root/site: what an install leaves."""
    site = root / "site"
    shutil.copytree(package, site / "libvirt_guests", ignore=shutil.ignore_patterns("__pycache__", "_vendor.py"))
    compileall.compile_dir(site, quiet=1)
    return site


def one_run(site: Path, work: Path) -> float:
    node = work / "node.xml"
    node.write_text("<node>\n</node>\n")
    conf = work / "libvirt-guests.conf"
    conf.write_text(f'URIS="test://{node}"\nON_SHUTDOWN=suspend\n')
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LIBVIRT_GUESTS_") and k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "PYTHONPATH")}
    env.update({"PYTHONPATH": str(site), "LIBVIRT_GUESTS_CONFIG": str(conf), "LC_ALL": "C",
                "LIBVIRT_GUESTS_LIST_FILE": str(work / "list"), "LIBVIRT_GUESTS_LOCK_FILE": str(work / "lock")})
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", ENTRY, "stop"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    took = time.perf_counter() - began
    if done.returncode != 0 or "0 guests" not in done.stdout:
        raise SystemExit(f"stop failed ({done.returncode}): {done.stdout[-300:]}{done.stderr[-300:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs of each package (the median is reported)")
    parser.add_argument("--before", type=Path, metavar="PACKAGE_DIR", help="another libvirt_guests folder to compare")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lg-startup-") as scratch:
        root = Path(scratch)
        packages = {"this checkout": installed(PACKAGE, root / "after")}
        if opts.before:
            packages = {"before": installed(opts.before, root / "before"), **packages}
        times: dict[str, list[float]] = {name: [] for name in packages}
        for site in packages.values():  # one warm-up each: the page cache, not the code, is measured otherwise
            one_run(site, Path(tempfile.mkdtemp(dir=root)))
        for _ in range(opts.repeat):
            for name, site in packages.items():
                times[name].append(one_run(site, Path(tempfile.mkdtemp(dir=root))))
    print(f"stop with no guests, {opts.repeat} runs each, {sys.executable}:")
    for name, runs in times.items():
        print(f"  {name:14} median {statistics.median(runs):.3f} s  min {min(runs):.3f} s  max {max(runs):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
