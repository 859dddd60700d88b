"""Generated configuration files, read by dash, by bash run as sh and by our
reader, compared (issue 19). Shared by the suite (tests/unit/test_shellgen.py,
a few hundred files) and the long run (python -m tests.unit.fuzz_long).

The generators draw from a seeded random.Random, so that a failure is
reproduced from its seed. Many files are read by one shell process: each in a
subshell of its own, after the original's defaults, its values printed
NUL-separated, its standard error in a file of its own.

What counts as agreement (``disagreement`` below):
- a file either shell complains about (standard error) must be reported by
  us (a skipped line);
- the ones set only inside compound commands (IN1, IN2) must never be set
  by us, whatever sh does with them; once a line that sets one of the
  others (A, B, C, U, E, HOME) is skipped (reported), the values are not
  compared any more (any could be read from it);
- every other variable has dash's value;
- where dash and bash disagree on a value, we must have reported a
  difference (Reading.differences: for that variable, or for one it was
  read from) and kept dash's value; when we report nothing, bash's value
  is dash's.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from libvirt_guests.config import shellfile
from libvirt_guests.config.load import original_scope
from libvirt_guests.config.shellfile import Reading, read_shell

MAX_NESTING = getattr(shellfile, "MAX_NESTING", 100)  # (getattr: so that the comparison runs on older readers too)

OUTER = ["A", "B", "C", "U", "E", "HOME"]  # U starts unset, E empty
INNER = ["IN1", "IN2"]  # set only inside compound commands and here-documents
COMPARED = OUTER + INNER
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/someone"}
PRELUDE = """\
sysconfdir="/etc"
localstatedir="/var"
libvirtd="/usr/sbin"/libvirtd
export TEXTDOMAIN="libvirt" TEXTDOMAINDIR="/usr/share/locale"
URIS=default
ON_BOOT=start
ON_SHUTDOWN=suspend
SHUTDOWN_TIMEOUT=300
PARALLEL_SHUTDOWN=0
START_DELAY=0
BYPASS_CACHE=0
SYNC_TIME=0
PERSISTENT_ONLY="default"
"""
FILE_HEAD = "E=\nA=a1\n"  # every generated file starts so: E set and empty, A set
SHELLS = {"dash": ["/usr/bin/dash", "dash"], "bash": ["/usr/bin/bash", "sh"]}  # bash as argv[0] sh: POSIX mode


# --- the generators ---------------------------------------------------------------------------------

class Gen:
    """One generator of file texts of every shape, from a seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def choice(self, items: list[str]) -> str:
        return self.rng.choice(items)

    # words
    def escape(self, quoted: bool) -> str:
        return "\\" + self.choice(list("n'\"\\$}~ a:/`x") + (["{"] if quoted else []))

    def plain(self, quoted: bool) -> str:
        return self.choice(["a", "b", "1", ":", "/", "~", "~/", ":~", "x:~/y", ".", "-", "%", "=", "}"[:int(quoted)]]
                           + ([" ", "'", "*", "#"] if quoted else ["*"]))

    def expansion(self, depth: int, quoted: bool) -> str:
        name = self.choice(["A", "B", "U", "E", "U", "E"])
        if depth <= 0 or self.rng.random() < 0.15:
            return self.choice([f"${name}", f"${{{name}}}", f"${{#{name}}}"])
        op = self.choice(["-", ":-", "+", ":+", "=", ":=", "-", ":-"])
        return "${" + name + op + self.word(depth - 1, quoted, in_brace=True) + "}"

    def word(self, depth: int, quoted: bool, in_brace: bool = False) -> str:
        parts = []
        for _ in range(self.rng.randint(0, 3)):
            r = self.rng.random()
            if r < 0.3:
                parts.append(self.expansion(depth, quoted))
            elif r < 0.5:
                parts.append(self.escape(quoted))
            elif r < 0.6 and not quoted:
                parts.append("'" + self.choice(["", "a", "~", "a\\b", "$A", "\"", " x"]) + "'")
            elif r < 0.7 and (in_brace or not quoted):
                parts.append('"' + self.double(depth - 1, in_brace=in_brace) + '"')
            else:
                parts.append(self.plain(quoted))
        return "".join(parts)

    def double(self, depth: int, in_brace: bool = False) -> str:
        parts = []
        for _ in range(self.rng.randint(0, 3)):
            r = self.rng.random()
            if r < 0.3 and depth > 0:
                parts.append(self.expansion(depth, quoted=True))
            elif r < 0.55:
                parts.append(self.escape(quoted=True))
            else:
                parts.append(self.choice(["a", " ", "~", ":", "/", "'"] + ([] if in_brace else ["}"])))
        return "".join(parts)

    def value(self, depth: int = 3) -> str:
        return '"' + self.double(depth) + '"' if self.rng.random() < 0.4 else self.word(depth, quoted=False)

    def assignment(self, depth: int = 3) -> str:
        name = self.choice(["A", "B", "C", "U"])
        return self.choice(["", "", "export "]) + f"{name}={self.value(depth)}"

    # shapes
    def nested(self) -> str:
        if self.rng.random() < 0.1:  # deep: a chain some levels around the bound
            n = self.rng.choice([MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1, 2 * MAX_NESTING, 400])
            inner = self.choice(["x", "~", "\\n", '"\\n"'])
            quote = self.choice(["", '"'])
            return f"B={quote}" + "${U-" * n + inner + "}" * n + quote + "\n"
        return "\n".join(self.assignment(depth=6) for _ in range(self.rng.randint(1, 4))) + "\n"

    def escapes(self) -> str:
        lines = []
        for _ in range(self.rng.randint(1, 4)):
            name = self.choice(["A", "B", "C"])
            default = "".join(self.escape(True) if self.rng.random() < 0.6 else self.plain(True)
                              for _ in range(self.rng.randint(1, 4)))
            unquoted = "".join(self.escape(False) if self.rng.random() < 0.6 else self.plain(False)
                               for _ in range(self.rng.randint(1, 4)))
            op = self.choice(["-", ":-", "+", ":+"])
            var = self.choice(["U", "E", "A"])
            lines.append(self.choice([
                f'{name}="${{{var}{op}{default}}}"',
                f"{name}=${{{var}{op}{unquoted}}}",
                f'{name}="${{{var}{op}"{default}"}}"',
                f'{name}=${{{var}{op}"{default}"}}',
                f'{name}="x${{{var}{op}${{U-{default}}}}}"',
            ]))
        return "\n".join(lines) + "\n"

    TILDES = ["~", "~/x", "~root", "~root/x", "~nosuchuser9", "x:~", "x:~/y:~root", "~:~", "${U-~}", "x:${U-~}",
              "${U-~/a}", "${U-a:~}", "${U-:~}", "${U-~:}", "~''", '~""/x', "\\~", "${U-~}x", "a${U-~}", '"${U-~}"',
              '${U-"~"}', "~${U-}", "${U=~}", "~:${U-a:~}", "${U-~root}", "${A+~}", "${E:-~/z}", "${U-x:~/y}",
              "${U-${U-~}}", "${U-${U-a:~}}", "${U-~'x'}", "${U-'~'}", "~/${U-~}"]

    def tildes(self) -> str:
        lines = []
        if self.rng.random() < 0.2:
            lines.append("HOME=/alt")
        for _ in range(self.rng.randint(1, 4)):
            pieces = [self.choice(self.TILDES) for _ in range(self.rng.randint(1, 3))]
            joined = pieces[0]
            for piece in pieces[1:]:
                joined += self.choice(["", ":", "/"]) + piece
            lines.append(self.choice(["", "", "export "]) + self.choice(["A", "B", "C"]) + "=" + joined)
        return "\n".join(lines) + "\n"

    def body(self, depth: int, one_line: bool) -> str:
        items = []
        for _ in range(self.rng.randint(1, 3)):
            if depth > 0 and self.rng.random() < 0.3:
                items.append(self.compound(depth - 1, one_line=one_line))
            else:
                items.append(f"{self.choice(INNER)}={self.choice(['1', 'x', '${A-y}', '~'])}")
        return ("; " if one_line else "\n  ").join(items)

    def compound(self, depth: int = 2, one_line: bool | None = None) -> str:
        if one_line is None:
            one_line = self.rng.random() < 0.4
        cond = self.choice(["false", "true", ":", "! true"])
        b = self.body(depth, one_line)
        if one_line:
            return self.choice([
                f"if {cond}; then {b}; fi", f"if {cond}; then {b}; else {b}; fi",
                f"if {cond}; then {b}; elif {cond}; then {b}; fi",
                f"while false; do {b}; done", f"until true; do {b}; done", f"for IN2 in a b; do {b}; done",
                f"case x in a) {b};; (x|y) {b};; esac", f"case x in *) {b}; esac",
                f"{{ {b}; }}", f"( {b} )", f"f() {{ {b}; }}", f"g () ( {b} )",
            ])
        return self.choice([
            f"if {cond}; then\n  {b}\nfi", f"if {cond}\nthen\n  {b}\nelse\n  {b}\nfi",
            f"while false\ndo\n  {b}\ndone", f"for IN2 in a b\ndo\n  {b}\ndone",
            f"case x in\n  a) {b} ;;\n  (x|y)\n  {b}\n  ;;\nesac",
            f"{{\n  {b}\n}}", f"(\n  {b}\n)", f"f() {{\n  {b}\n}}", f"f ()\n{{\n  {b}\n}}",
        ] + ([] if depth < 2 else [  # here-documents at the top only (a body holding another is not one)
            f": <<EOF\n{b}\nEOF", f": <<-'EOF'\n\t{b}\n\tEOF", f': <<"E O"\n{b}\nE O',
            f": <<EOF; : <<E2\n{b}\nEOF\n{b}\nE2", f": <<\\EOF\n{b}\\\nEOF",
        ]))

    def compounds(self) -> str:
        lines = []
        for _ in range(self.rng.randint(1, 4)):
            r = self.rng.random()
            if r < 0.5:
                lines.append(self.compound())
            elif r < 0.7:
                lines.append(self.compound(one_line=True) + "; " + self.assignment(depth=1))
            else:
                lines.append(self.assignment(depth=1))
        return "\n".join(lines) + "\n"

    def continued(self, text: str) -> str:
        """text with backslash-newlines put in where the shell joins them (not
        in single quotes, not right after a backslash, not in a comment)."""
        out, quote, escaped = [], False, False
        for c in text:
            if not quote and not escaped and c not in "\n" and self.rng.random() < 0.3:
                out.append("\\\n")
            out.append(c)
            if escaped:
                escaped = False
            elif c == "\\" and not quote:
                escaped = True
            elif c == "'":
                quote = not quote  # (a ' inside double quotes: no breaks until the next; still safe)
        return "".join(out)

    def continuations(self) -> str:
        lines = [self.choice([self.assignment(depth=2), f"A={self.choice(['abc', '$B', '${U-xy}', 'x:~'])}"])
                 for _ in range(self.rng.randint(1, 3))]
        return "\n".join(self.continued(line) for line in lines) + "\n"

    SHAPES = ("nested", "escapes", "tildes", "compounds", "continuations")

    def file(self) -> tuple[str, str]:
        shape = self.choice(list(self.SHAPES))
        return shape, FILE_HEAD + getattr(self, shape)()


# --- reading ----------------------------------------------------------------------------------------

def shell_readings(shell: str, texts: list[str], env: dict[str, str] | None = None,
                   ) -> list[tuple[dict[str, str | None], str]]:
    """Each text read by the shell (dash, or bash as sh) after the original's
    defaults: (NAME -> value or None, what it printed while sourcing: its
    complaints), one process for all. The files are in /dev/shm where there
    is one (an open on this machine's /tmp costs milliseconds)."""
    executable, argv0 = SHELLS[shell]
    printer = "".join(f'printf "%s\\0%s\\0%s\\0" {n} "${{{n}+set}}" "${n}"\n' for n in COMPARED)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="shellgen-", dir=shm) as folder:
        script = []
        for index, text in enumerate(texts):
            Path(folder, str(index)).write_text(text)
            # what the sourcing prints (stderr too), a \035, the values; a \036 ends each file's record
            script.append(f'(\n{PRELUDE}. "$1/{index}"\nprintf "\\035"\n{printer}) 2>&1 </dev/null\n'
                          'printf "\\036"\n')
        Path(folder, "script").write_text("".join(script))
        result = subprocess.run([argv0, f"{folder}/script", folder], executable=executable, env=env or ENV,
                                capture_output=True, check=False, timeout=600)
    records = result.stdout.decode(errors="replace").split("\x1e")[:len(texts)]
    assert len(records) == len(texts), (shell, result.stderr[-500:])
    out = []
    for record in records:
        printed, _, rest = record.partition("\x1d")
        fields = rest.split("\0")[:-1]
        values = {fields[i]: (fields[i + 2] if fields[i + 1] else None) for i in range(0, len(fields) - 2, 3)}
        out.append((values, printed or ("" if _ else "(the shell gave up on the file)")))
    return out


def our_reading(text: str, env: dict[str, str] | None = None) -> tuple[dict[str, str | None], Reading]:
    scope = original_scope("upstream", dict(env or ENV))
    reading = read_shell(text, scope)
    return {name: scope.get(name) for name in COMPARED}, reading


def disagreement(text: str, dash: tuple[dict[str, str | None], str],
                 bash: tuple[dict[str, str | None], str], env: dict[str, str] | None = None) -> str | None:
    """What is wrong with our reading of text, given the shells' (None: nothing)."""
    ours, reading = our_reading(text, env)
    skipped_names = {name for s in reading.skipped for name in s.names}
    different = {name for _, name, _ in getattr(reading, "differences", [])}
    if dash[1] or bash[1]:  # a shell complained: the file is wrong, we must say so (values: whatever each read)
        return None if reading.skipped else f"a shell complained ({(dash[1] or bash[1]).strip()[:200]!r}) and we " \
                                             "reported nothing"
    for name in INNER:
        if name in reading.values:
            return f"{name} is set inside a compound command or a here-document, and we set it"
    if skipped_names & set(OUTER):
        return None  # a variable read from one we skipped (and said so) may differ too: nothing more to compare
    for name in OUTER:
        if ours[name] != dash[0].get(name):
            return f"{name}: ours {ours[name]!r}, dash {dash[0].get(name)!r}"
        if reading.skipped or different:
            continue  # a value read after a reported difference may differ between the shells too
        if dash[0].get(name) != bash[0].get(name):
            return f"{name}: dash {dash[0].get(name)!r} and bash {bash[0].get(name)!r} differ, and we said nothing"
    return None


def compare(texts: list[str], env: dict[str, str] | None = None) -> Iterable[tuple[str, str]]:
    """(text, what is wrong) for each text we read otherwise than the shells."""
    dash = shell_readings("dash", texts, env)
    bash = shell_readings("bash", texts, env)
    for text, d, b in zip(texts, dash, bash, strict=True):
        wrong = disagreement(text, d, b, env)
        if wrong is not None:
            yield text, wrong


def available() -> bool:
    return all(os.access(executable, os.X_OK) for executable, _ in SHELLS.values())
