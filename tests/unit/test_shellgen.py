"""The shell reader against dash and against bash run as sh (issue 19):
generated files of the shapes that went wrong (nested expansions, escapes
in quoted and unquoted defaults, tilde forms, compound commands and
here-documents, long continuations), a seed corpus of every divergence
found and fixed, the reader's cost, and files that must never make it raise.

Where dash and bash disagree, we read as dash does (Debian's /bin/sh, the
original's on Debian) and report the difference; shellgen.py says what
counts as agreement."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_guests.config.load import Paths, load
from libvirt_guests.config.shellfile import read_shell

from .shellgen import FILE_HEAD, MAX_NESTING, Gen, available, compare, our_reading
from .support import Driver, Files, Result

pytestmark = pytest.mark.skipif(not available(), reason="needs dash and bash")

# Every divergence from dash or bash found (by hand or by tests/unit/fuzz_long.py) and fixed: read by
# both shells and by us, compared as the generated files are.
SEED_CORPUS = {
    # issue 19's silent differences
    "backslash_n_in_quoted_default": 'E=\nA="${E:-\\n}"\nB="${U-\\x}"\nC="${U-\\\'}"\n',
    "backslash_in_quoted_default_specials": 'A="${U-\\}}${U-\\$}${U-\\\\}${U-\\"}${U-\\`}"\n',
    "tilde_word": "A=${U-~}\nB=x:${U-~}\nC=${U-~/a}x\n",
    "tilde_word_forms": "A=a${U-~}\nB=${U-~root}\nC=${U:=~}\n",
    "tilde_in_equals_word_after_colon": "A=${U:=:~}\nB=${C=a:~}\n",  # dash: not after a colon in = and :=
    "tilde_nested_in_equals_word": "B=${U=/${E:-x:~/y}}\n",
    "tilde_colon_in_equals_word": "B=${B:=\\:${E:-\\a${U:-~:~}}}\nC=${C=~:x}\n",  # dash: no ~ user ':~'; bash: ~
    "tilde_slash_in_equals_word": "B=${B:=${E:-a${U:-~/x:~}}}\nC=${C=~/:x}\n",
    "heredoc": ": <<EOF\nIN1=1\nEOF\nA=2\n",
    "heredoc_dash_quoted": ": <<-'E O'\n\tIN1=1\n\tE O\nA=2\n",
    "heredoc_then_command": ": <<EOF; B=3\nIN1=1\nEOF\nA=2\n",
    "two_heredocs": ": <<A1; : <<A2\nIN1=1\nA1\nIN2=2\nA2\nB=1\n",
    "if_false": "if false; then\n  IN1=1\nfi\nA=2\n",
    "if_one_line_then_assignment": "if true; then IN1=1; else IN2=2; fi; A=3\n",
    "while_false": "while false; do\n  IN1=1\ndone\nA=2\n",
    "until_for": "until true; do IN1=1; done\nfor IN2 in a b; do IN1=$IN2; done\nA=2\n",
    "case": "case x in\n  a) IN1=1 ;;\n  (x|y)\n  IN2=2\n  ;;\nesac\nA=2\n",
    "braces_and_subshell": "{ IN1=1; }\n(\n  IN2=2\n)\nA=2\n",
    "function": "f() {\n  IN1=1\n}\ng ()\n{\n  IN2=2\n}\nA=2\n",
    "function_inside_subshell": "(\n  f() {\n  IN1=1\n}\n)\nA=2\n",  # its () closed the subshell once
    "nested_compounds": "if :; then\n  while false; do\n    case x in *) IN1=1;; esac\n  done\nfi\nA=2\n",
    # long continuations: the shell joins a backslash-newline everywhere but in quotes and comments
    "continued_dollar_brace": "A=$\\\n{U-x\\\ny}\nB=${U\\\n-z}\n",
    "continued_name": "T=9\nB=$T\\\n0\nA=$A\\\n0\n",
    "continued_comment_ends": "A=1 # a comment\\\nB=2\n",
    "continued_in_single_quotes": "A='a\\\nb'\nB=\"a\\\nb\"\n",
    "continued_export": "exp\\\nort \\\nB=\\\n\"${U:-\\:\"x\"}/\"\nA=\\\n$B\n",
    "continued_at_the_end": "A=1\\\n",
    # dash and bash differ: we read as dash, and report it
    "inner_double_quotes_in_quoted_word": 'A="${U-"a\\n"}"\nB="${U-"a\\\'"}"\n',
    "inner_double_quotes_brace": 'A=${U-"a\\}"}\n',
    "tilde_after_colon_in_word": "A=${U-a:~}\nB=${U-:~}\n",
    # found by the long run (seed 190042901): bash reads "${B:-"$A"a}" as ${B:-$Aa}
    "name_next_to_inner_quotes": 'C="${B:-"$A"a}\\""\nB="${U-$A"x"}${U-"a$A""b"}"\nA="${U-"${A}"a}${U-"$A" a}"\n',
    "assigned_in_word_differs": 'A="x${B:="\\/"}"\n',
    # dash ends ${A-~${U:-}}x} at the second brace, bash at the first: the line is reported and skipped
    "tilde_before_expansion_in_word": "C=${A-~${U:-}}x}\nB=${A-:~${E:-}}x}\nA=2\n",
    # ... and its siblings from the long run (seeds 190105670, 190111717, 190130746, 190162115): a word
    # starting with ~ and holding a ${...} further on, passed over unused
    "tilde_then_expansion_unused_1": "A=${E:+~-${U=${#E}~}}\n",
    "tilde_then_expansion_unused_2": "A=${E=~1${U=}}:x\n",
    "tilde_then_expansion_unused_3": "C=n${E=~%${E:-${#A}}}' x'\n",
    "tilde_then_expansion_unused_4": "A=/${A:-~${A}${#A}}' x'\n",
}


@pytest.mark.parametrize("case", sorted(SEED_CORPUS))
def test_seed_corpus_reads_as_dash_and_bash(case: str) -> None:
    text = FILE_HEAD + SEED_CORPUS[case]
    assert list(compare([text])) == []


def test_generated_files_read_as_dash_and_bash() -> None:
    """400 generated files (80 of each shape), in one process per shell: a second or two."""
    gen = Gen(20261206)
    texts = [FILE_HEAD + getattr(gen, shape)() for shape in Gen.SHAPES for _ in range(80)]
    wrong = list(compare(texts))
    assert wrong == [], wrong[:3]


def test_tilde_without_home_reads_as_dash_and_the_difference_is_reported() -> None:
    """Under systemd a system service may have no HOME: dash keeps `~`, bash
    (as sh) reads the user's home from the user database. dash's reading,
    reported where a value depends on it."""
    env = {"PATH": "/usr/bin:/bin"}
    texts = [FILE_HEAD + f"A={value}\n" for value in Gen.TILDES] + [FILE_HEAD + "HOME=/alt\nA=~\n"]
    assert list(compare(texts, env)) == []
    values, reading = our_reading(FILE_HEAD + "B=~\n", env)
    assert values["B"] == "~" and [n for _, n, _ in reading.differences] == ["B"]


def _reading(text: str) -> tuple[dict[str, str | None], object]:
    return our_reading(FILE_HEAD + text)


def test_quoted_default_keeps_its_backslash() -> None:
    values, _ = _reading('E=\nA="${E:-\\n}"\nB="${U-\\x}"\nC="${U-\\\'}"\n')
    assert (values["A"], values["B"], values["C"]) == ("\\n", "\\x", "\\'")


def test_tilde_in_an_expansion_word_is_the_home_folder() -> None:
    values, reading = _reading("A=${U-~}\nB=x:${U-~}\n")
    assert (values["A"], values["B"]) == ("/home/someone", "x:/home/someone")
    assert reading.differences == []  # dash and bash agree there


@pytest.mark.parametrize(("text", "name", "dash"), [
    ('A="${U-"a\\n"}"\n', "A", "a\\n"),
    ("A=${U-a:~}\n", "A", "a:/home/someone"),
    ('A=${U-"a\\}"}\n', "A", "a}"),
    ('A="x${B:="\\/"}"\n', "B", "\\/"),
    ('A="${U-"$B"x}"\n', "A", "x"),
])
def test_a_value_dash_and_bash_read_differently_is_reported(text: str, name: str, dash: str) -> None:
    values, reading = _reading(text)
    assert values[name] == dash
    assert name in [n for _, n, _ in reading.differences], reading.differences


def test_the_difference_is_one_error_naming_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_text('URIS="${NOPE-"test:///default\\n"}"\nON_BOOT=ignore\n')
    config = load(Paths.resolve(config=str(path), environ={}), environ={})
    (problem,) = [p for p in config.problems if p.kind == "line"]
    assert problem.variable == "URIS" and "dash and bash" in problem.text() and f"{path}:1" in problem.text()
    assert config.texts["URIS"] == "test:///default\\n" and config.on_boot == "ignore"


def test_a_helper_read_differently_is_a_warning_and_what_uses_it_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_text('T="${X-"shutdown\\n"}"\nV="${X-"a\\n"}"\nON_SHUTDOWN=$T\n')
    config = load(Paths.resolve(config=str(path), environ={}), environ={})
    lines = [p for p in config.problems if p.kind == "line"]
    assert [(p.where, p.variable) for p in lines] == [(f"{path}:3", "ON_SHUTDOWN")], lines
    assert "$T" in lines[0].text()
    assert sum("read T differently" in w or "read V differently" in w for w in config.warnings) == 2


@pytest.mark.parametrize("text", [
    "if false; then\n  ON_SHUTDOWN=shutdown\nfi\n",
    "while false; do\n  ON_SHUTDOWN=shutdown\ndone\n",
    "f() {\n  ON_SHUTDOWN=shutdown\n}\n",
    "cat <<EOF\nON_SHUTDOWN=shutdown\nEOF\n",
    "case x in\n  y) ON_SHUTDOWN=shutdown ;;\nesac\n",
    "{\n  ON_SHUTDOWN=shutdown\n}\n",
    "(\n  ON_SHUTDOWN=shutdown\n)\n",
])
def test_nothing_inside_a_compound_command_or_heredoc_is_assigned(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c"
    path.write_text("ON_BOOT=ignore\n" + text + "START_DELAY=3\n")
    config = load(Paths.resolve(config=str(path), environ={}), environ={}, flavour="upstream")
    assert config.sources["ON_SHUTDOWN"] == "default" and config.on_shutdown == ("suspend",)
    assert config.on_boot == "ignore" and config.texts["START_DELAY"] == "3"  # before and after: read
    (problem,) = config.problems  # once, on its first line
    assert problem.where == f"{path}:2", problem.text()


# --- the reader's cost: linear in the file's size ------------------------------------------------------

def _steps(text: str) -> int:
    return read_shell(text, {}).steps


@pytest.mark.parametrize("shape", [
    lambda n: "A=${\n" + "B=1\n" * n,  # an unterminated ${ and the lines after it
    lambda n: "A=1\\\n" * n + "\n",  # backslash-continued lines
    lambda n: 'A="\n' + "B=1\n" * n,  # an unterminated double quote
    lambda n: "A='\n" + "B=1\n" * n,
    lambda n: ": <<EOF\n" + "B=1\n" * n + "EOF\n",
    lambda n: "if false; then\n" + "B=1\n" * n + "fi\n",
    lambda n: "A=" + "${A-" * n + "x" + "}" * n + "\n",  # nested (deeper than MAX_NESTING)
    lambda n: "A=" + "${A-" * 50 + "x" + "}" * 50 + "\n" + "B=${C-${D-1}}\n" * n,
    lambda n: "A=\"" + "\\\\\\\n" * n + '"\n',
    lambda n: "A=${U-" + "a" * 20 * n + "}\n",  # one long word of an expansion
])
def test_reading_cost_is_linear(shape: Callable[[int], str]) -> None:
    """Counted, not timed: 2N lines cost at most about twice N's (the
    wall times are in bench/shellread.py)."""
    small, large = _steps(shape(2000)), _steps(shape(4000))
    assert small > 0
    assert large <= 2.2 * small, (small, large)


# --- whatever the file holds, the reader returns ---------------------------------------------------------

@pytest.mark.parametrize("text", [
    "ON_BOOT=" + "${A-" * 331 + "x" + "}" * 331 + "\n",
    "ON_BOOT=" + "${A-" * 100_000 + "x" + "}" * 100_000 + "\n",
    'ON_BOOT="' + "${A-\"" * 5000 + "x" + "\"}" * 5000 + '"\n',
    "ON_BOOT=" + "${A-" * 5000 + "\n",
    "ON_BOOT=" + "$(" * 5000 + ")" * 5000 + "\n",
    "if :; then\n" * 5000 + "ON_BOOT=start\n" + "fi\n" * 5000,
    "ON_BOOT=~ro\0ot/x\n",
    "ON_BOOT=~\0\n",
    "ON_BOOT=x:~a\0b:~\n",
])
def test_the_reader_never_raises(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c"
    path.write_text(text + "START_DELAY=3\n")
    config = load(Paths.resolve(config=str(path), environ={}), environ={}, flavour="debian")
    assert config.texts["START_DELAY"] == "3" or any("rest of the file" in p.text() for p in config.problems)
    for problem in config.problems:
        assert "\n" not in problem.text()


def test_nesting_up_to_the_bound_is_read_and_deeper_is_reported() -> None:
    for depth, read in ((MAX_NESTING, True), (MAX_NESTING + 1, False), (331, False)):
        scope: dict[str, str] = {}
        reading = read_shell("A=" + "${A-" * depth + "x" + "}" * depth + "\nB=2\n", scope)
        assert scope.get("B") == "2"
        assert (scope.get("A") == "x") == read
        assert bool(reading.skipped) != read
        if not read:
            assert "deep" in reading.skipped[0].reason


@pytest.mark.parametrize("text", [
    "ON_SHUTDOWN=~ro\0ot/x\n",
    "ON_SHUTDOWN=" + "${A-" * 331 + "shutdown" + "}" * 331 + "\n",
])
def test_stop_handles_the_guest_whatever_the_file_holds(files: Files, driver: Driver,
                                                        run: Callable[..., Result], text: str) -> None:
    files.config.write_text("URIS=test:///default\n" + text)
    guest = driver.guest()
    result = run("stop")
    assert "Traceback" not in result.err
    assert result.code == 6, result.err  # the file's problem is named, and the exit says so
    assert driver.state(guest) in ("saved", "off")  # handled
    assert guest.UUIDString() in files.list_file.read_text()
