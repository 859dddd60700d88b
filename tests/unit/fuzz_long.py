"""The long comparison of our shell reader with dash and with bash run as sh,
outside the suite (issue 19): many generated files (tests/unit/shellgen.py),
in batches of a thousand per shell process.

    nice -n 19 .venv/bin/python -m tests.unit.fuzz_long --seed 19 --files 200000

Each file is drawn from its own seed (seed * 10**7 + its number), so a
finding is reproduced alone: ``--one SEED`` prints that file and what is
wrong with it. Findings are printed as they come (with their seeds); every
one found so far is in the seed corpus of tests/unit/test_shellgen.py.

Runs recorded (2 shared cores, other helpers' tests beside; each: seed, files, wall time, findings):
- seed 19, on the code before 81efe76, nice 19: stopped after 20,000 files (too slow at nice 19 with
  the harness of then), 1 finding: 190025485, a ~ in the word of := after ':' (dash runs the
  tilde-prefix on to the '/'); fixed in 81efe76, in the seed corpus.
- seed 19, 81efe76, nice 19: stopped after 20,000 files, 301 s, 0 findings (restarted with the
  cheaper harness: files in /dev/shm, one output stream).
- seed 19, 2d16293, nice 10: 200,000 files, 473 s, 14 findings: 190042901 (bash reads
  "${B:-"$A"a}" as $Aa: now a reported difference, ba473a9); 190105670, 190111717, 190130746,
  190162115 (dash's brace miscount on an unused word starting with ~ and holding a ${...}: such
  lines are now skipped and reported, c6c147c); 9 others (190056366, 190059905, 190093073, 190107209,
  190141179, 190160854, 190170227, 190180713, 190198150) were values read after a line we had
  skipped and reported: the comparison no longer compares values after such a line (shellgen).
- seed 19, c6c147c, nice 10: 200,000 files (escapes 40,282, compounds 39,837, nested 40,120, tildes
  39,952, continuations 39,809), 383 s, 0 findings.
- seed 20, c6c147c (10cfe02: the same reader), nice 10: 200,000 files, 371 s, 0 findings.
"""

from __future__ import annotations

import argparse
import sys
import time

from .shellgen import Gen, compare, disagreement, our_reading, shell_readings

BATCH = 1000


def file_of(seed: int) -> tuple[str, str]:
    return Gen(seed).file()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.unit.fuzz_long")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--one", type=int, help="show the file of this per-file seed and our reading of it")
    args = parser.parse_args(argv)
    if args.one is not None:
        shape, text = file_of(args.one)
        print(f"shape {shape}:\n{text}")
        dash, bash = shell_readings("dash", [text])[0], shell_readings("bash", [text])[0]
        print("dash:", dash, "\nbash:", bash, "\nours:", our_reading(text)[0])
        print("wrong:", disagreement(text, dash, bash))
        return 0
    started, findings, done = time.monotonic(), 0, 0
    shapes: dict[str, int] = {}
    for first in range(0, args.files, BATCH):
        seeds = [args.seed * 10**7 + n for n in range(first, min(first + BATCH, args.files))]
        files = [file_of(seed) for seed in seeds]
        for _, (shape, _text) in zip(seeds, files, strict=True):
            shapes[shape] = shapes.get(shape, 0) + 1
        by_text = {text: seed for seed, (_, text) in zip(seeds, files, strict=True)}
        for text, wrong in compare([text for _, text in files]):
            findings += 1
            print(f"FINDING seed={by_text[text]}: {wrong}\n{text}", flush=True)
        done += len(seeds)
        if done % 20_000 == 0 or done == args.files:
            print(f"{done} files, {findings} findings, {time.monotonic() - started:.0f} s", flush=True)
    print(f"seed {args.seed}: {done} files ({shapes}), {findings} findings, "
          f"{time.monotonic() - started:.0f} s", flush=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
