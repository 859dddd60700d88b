"""Wall time of the configuration reader on the shapes that were quadratic
(issue 19): an unterminated ${ followed by many lines, many backslash-continued
lines, an unterminated double quote, a long here-document, deep nesting.

    .venv/bin/python -m bench.shellread

The test that bounds the cost counts the reader's steps instead
(tests/unit/test_shellgen.py::test_reading_cost_is_linear).

Results (seconds, best of 3; 2 shared cores):
  before (main 755b1d9): unterminated ${ + 8000 lines 11.7 s (the issue's figure); 4000 continued lines 7.5 s,
                         unterminated " + 4000 lines 6.0 s (measured here, one run)
  after (branch shellread, 2026-12-06, with the long fuzz running beside it at nice 19):
         unterminated ${ + 8000 lines 0.113 s; 4000 continued lines 0.088 s; unterminated " + 4000 lines 0.084 s;
         here-document of 8000 lines 0.148 s; ${A-...} nested 100,000 deep 0.144 s
"""

from __future__ import annotations

import time

from libvirt_guests.config.shellfile import read_shell

SHAPES = {
    "unterminated ${ + 8000 lines": "A=${\n" + "B=1\n" * 8000,
    "4000 continued lines": "A=1\\\n" * 4000 + "\n",
    'unterminated " + 4000 lines': 'A="\n' + "B=1\n" * 4000,
    "here-document of 8000 lines": ": <<EOF\n" + "B=1\n" * 8000 + "EOF\n",
    "${A-...} nested 100,000 deep": "A=" + "${A-" * 100_000 + "x" + "}" * 100_000 + "\n",
}


def main() -> None:
    for name, text in SHAPES.items():
        best = min(_once(text) for _ in range(3))
        print(f"{name}: {best:.3f} s")


def _once(text: str) -> float:
    started = time.perf_counter()
    read_shell(text, {})
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
