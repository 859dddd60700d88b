"""The configuration file is read as the original's /bin/sh reads it (its
defaults set first, then the file sourced), without running anything; and
what systemd's EnvironmentFile= passes on from the same file does not
change that reading."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libvirt_guests.config.load import Config, Paths, load
from libvirt_guests.config.settings import SETTINGS

# Upstream's tools/libvirt-guests.sh.in up to the line that sources the file
# (PERSISTENT_ONLY since 10.3), with its @...@ substituted as Debian does.
from .shellgen import PRELUDE as UPSTREAM_PRELUDE

DEBIAN_SCRIPT = Path("/usr/lib/libvirt/libvirt-guests.sh")


def _debian_prelude() -> str:
    """The assignments Debian's own script makes before it sources the file."""
    lines = []
    for line in DEBIAN_SCRIPT.read_text().splitlines():
        if line.startswith("test -f"):
            break
        if re.match(r"(export )?[A-Za-z_]+=", line):
            lines.append(line)
    assert any(line.startswith("ON_SHUTDOWN=") for line in lines)
    return "\n".join(lines) + "\n"


def _prelude(flavour: str) -> str:
    if flavour == "debian":
        if not DEBIAN_SCRIPT.exists():
            pytest.fail(f"{DEBIAN_SCRIPT} is missing: install libvirt-daemon-system (tests/testbed/setup.sh)")
        return _debian_prelude()
    return UPSTREAM_PRELUDE


NAMES = [s.name for s in SETTINGS]


# /bin/sh as Debian has it (dash), and as rpm distributions have it (bash, in POSIX mode when run as sh)
SHELLS = {"dash": "/bin/sh", "bash": "/usr/bin/bash"}


def sh_reading(path: Path, flavour: str, env: dict[str, str], shell: str = "dash") -> dict[str, str | None]:
    """What /bin/sh makes of the file after the original's defaults: NAME -> value (None: unset)."""
    script = _prelude(flavour) + '. "$1"\n' + "".join(
        f'printf "%s\\0%s\\0%s\\0" {name} "${{{name}+set}}" "${name}"\n' for name in NAMES)
    result = subprocess.run(["sh", "-c", script, "sh", str(path)], executable=SHELLS[shell], env=env,
                            capture_output=True, check=True)
    fields = result.stdout.decode().split("\0")[:-1]
    return {fields[i]: (fields[i + 2] if fields[i + 1] else None) for i in range(0, len(fields), 3)}


CORPUS = {
    "tilde_runs_into_quotes": "A=:~''\nB=~''/x\nC=x:~/y:~\n",
    "continued_name": "T=9\nSHUTDOWN_TIMEOUT=$T\\\n0\nA=$A\\\n0\n",  # $T\<newline>0 is $T0, unset
    "plain": "URIS=default\nON_BOOT=start\nON_SHUTDOWN=shutdown\nSHUTDOWN_TIMEOUT=120\nPARALLEL_SHUTDOWN=2\n",
    "quoted": "URIS='default lxc:///system'\nON_SHUTDOWN=\"suspend shutdown\"\nSTART_DELAY=\"0.5\"\nSYNC_TIME='1'\n"
              'PERSISTENT_ONLY="true"\n',
    "export": 'URIS="default lxc:///"\nexport URIS\nexport ON_BOOT=ignore SHUTDOWN_TIMEOUT=60\nexport PARALLEL_SAVE\n'
              "export BYPASS_CACHE\n",
    "helpers": 'T=90\nSHUTDOWN_TIMEOUT=$T\nSTART_DELAY=${T}0\nmode=shutdown\nON_SHUTDOWN="suspend $mode"\n',
    "self_reference": 'URIS="$URIS lxc:///system"\nON_SHUTDOWN="$ON_SHUTDOWN poweroff"\nSTART_DELAY=$START_DELAY\n',
    "brace_forms": (
        "ON_BOOT=${ON_BOOT}\nURIS=${UNSET_X:-qemu:///system}\nSYNC_TIME=${ON_BOOT:+1}\nBYPASS_CACHE=${EMPTY_Y-0}\n"
        "PARALLEL_SAVE=${#URIS}\nSAVE_TIMEOUT=${Z:=5}\nSTOP_DEADLINE=$Z\nEMPTY_Y=\n"
        'CONNECT_TIMEOUT=${EMPTY_Y:-7}${EMPTY_Y-8}\nPAUSE_BEFORE_SAVE=${NOPE:-"0"}\nPARALLEL_START="${NOPE:-3 4}"\n'
        "PERSISTENT_ONLY=${NOPE:-$ON_BOOT}\n"
    ),
    "empty": "ON_BOOT=\nURIS=\"\"\nSYNC_TIME=''\nPERSISTENT_ONLY=\n",
    "comments": "# comment\n   # indented comment\n\nURIS=default # inline\nON_SHUTDOWN=shutdown#not-a-comment\n"
                "ON_BOOT=ignore\t# tab then comment\n#SHUTDOWN_TIMEOUT=5\n",
    "escapes": r'URIS="a\$b \"q\" \\ c\d \`"' "\n" r"ON_SHUTDOWN=sus\ pend" "\n" r"PERSISTENT_ONLY='a\b'" "\n"
               r'START_DELAY="1\n"' "\n" r"ON_BOOT=\$HOME\'" "\n",
    "multiline": 'URIS="default\nlxc:///system"\nON_SHUTDOWN="suspend \\\nshutdown"\nON_BOOT=st\\\nart\n',
    "several_per_line": "A=1 B=$A SHUTDOWN_TIMEOUT=$B$A\nON_BOOT=ignore; START_DELAY=2;\nSYNC_TIME=1 ;BYPASS_CACHE=1\n",
    "environment": 'URIS="$FROM_ENV"\nSTART_DELAY=$NOT_SET_ANYWHERE\nON_SHUTDOWN="$SHUTDOWN_TIMEOUT"\n',
    "tilde": "URIS=~/a:~/b\nON_SHUTDOWN=\"~\"\nPERSISTENT_ONLY='~'\nON_BOOT=~\n",
    "concatenation": "URIS=de'fa'\"ult\"' lxc:///'\nON_BOOT=\"st\"art\n",
    "globs": "URIS=*\nON_SHUTDOWN='*'\nPERSISTENT_ONLY=[ab]\n",
    "whitespace": "  URIS=default  \n\tON_BOOT=start\t\n \n",
    "dollar_literals": "URIS=\"cost $ 5\"\nON_SHUTDOWN=a$\nPERSISTENT_ONLY=\"$\"\nSTART_DELAY='$T'\n",
    "original_vars": 'URIS="$sysconfdir $localstatedir $libvirtd $TEXTDOMAIN"\n',
    "last_wins": "ON_SHUTDOWN=shutdown\nON_SHUTDOWN=suspend\n",
    "no_final_newline": "URIS=default\nON_BOOT=ignore",
    "debian_stock": "#URIS=default\n#ON_BOOT=ignore\n#START_DELAY=0\n#ON_SHUTDOWN=shutdown\n#SHUTDOWN_TIMEOUT=300\n",
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home"),
            "FROM_ENV": "qemu:///session"}


def _load(path: Path, environ: dict[str, str], flavour: str) -> Config:
    return load(Paths.resolve(config=str(path), environ={}), environ=environ, flavour=flavour)


@pytest.mark.parametrize("shell", sorted(SHELLS))
@pytest.mark.parametrize("flavour", ["upstream", "debian"])
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_values_are_those_of_bin_sh(tmp_path: Path, env: dict[str, str], case: str, flavour: str, shell: str) -> None:
    path = tmp_path / "libvirt-guests"
    path.write_text(CORPUS[case])
    expected = sh_reading(path, flavour, env, shell)
    cfg = _load(path, env, flavour)
    for name in NAMES:
        if expected[name] is None:  # the original leaves it unset: our default applies
            assert cfg.sources[name] == "default", name
        else:
            assert cfg.texts[name] == expected[name], (name, cfg.texts[name], expected[name])
    assert not [p for p in cfg.problems if p.variable is None], cfg.problems  # no line was skipped


def test_bare_export_keeps_the_value(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "c"
    path.write_text('URIS="default lxc:///"\nexport URIS\n')
    assert _load(path, env, "upstream").uris == ("default", "lxc:///")


def test_self_reference_keeps_the_default_uri(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "c"
    path.write_text('URIS="$URIS lxc:///system"\n')
    assert _load(path, env, "upstream").uris == ("default", "lxc:///system")


def test_empty_on_boot_does_not_start(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "c"
    path.write_text("ON_BOOT=\n")
    cfg = _load(path, env, "upstream")
    assert cfg.on_boot == "ignore"
    assert [p.variable for p in cfg.problems] == ["ON_BOOT"]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("URIS=$(hostname)", "command substitution"),
        ("URIS=`hostname`", "command substitution"),
        ('URIS="qemu:///system $(id -u)"', "command substitution"),
        ("SHUTDOWN_TIMEOUT=$((60 * 5))", "arithmetic"),
        ("if [ -e /etc/foo ]; then :; fi", "compound command"),
        ("echo hello", "echo"),
        (". /etc/other.conf", "."),
        ("unset URIS", "unset"),
        (": ${URIS:=lxc:///}", ":"),
        ("URIS=lxc:/// virsh list", "virsh"),
        ("URIS=lxc:/// >/tmp/created-by-config", ">"),
        ("URIS=lxc:/// | cat", "|"),
        ("URIS=lxc:/// &", "&"),
        ("URIS=${URIS?not set}", "${URIS?"),
        ("URIS=${URIS%% *}", "${URIS%"),
        ("URIS=$1", "$1"),
        ("export -p", "export -p"),
        ("URIS =lxc:///", "URIS"),
    ],
)
def test_a_line_the_shell_would_run_is_skipped_and_the_rest_counts(
    tmp_path: Path, env: dict[str, str], line: str, why: str
) -> None:
    path = tmp_path / "c"
    path.write_text(f"ON_BOOT=ignore\n{line}\nON_SHUTDOWN=shutdown\n")
    cfg = _load(path, env, "upstream")
    assert cfg.uris == ("default",)
    assert cfg.on_boot == "ignore" and cfg.on_shutdown == ("shutdown",)
    assert len(cfg.problems) == 1, cfg.problems
    text = cfg.problems[0].text()
    assert text.startswith(f"{path}:2: ") and "skipped" in text and why in text, text
    assert "\n" not in text
    assert not Path("/tmp/created-by-config").exists()


def test_an_if_block_is_one_problem_and_nothing_in_it_counts(tmp_path: Path, env: dict[str, str]) -> None:
    """Issue 19 changed this deliberately: the body of an `if` used to be
    assigned (sh runs it only when the condition holds, and the condition is
    never run here); now the whole compound command is one problem."""
    path = tmp_path / "c"
    path.write_text("if true; then\n  ON_SHUTDOWN=shutdown\nfi\nON_BOOT=ignore\n")
    cfg = _load(path, env, "upstream")
    assert cfg.on_shutdown == ("suspend",) and cfg.on_boot == "ignore"
    (problem,) = cfg.problems
    assert problem.where == f"{path}:1" and "lines 1 to 3 skipped" in problem.text(), problem.text()
    assert problem.variable == "ON_SHUTDOWN"  # the variable it meant to set: stop reports it as its own


def test_an_unclosed_compound_command_skips_the_rest(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "c"
    path.write_text("ON_BOOT=ignore\nif [ -e /etc/foo ]; then\nON_SHUTDOWN=shutdown\nURIS=lxc:///\n")
    cfg = _load(path, env, "upstream")
    assert cfg.on_boot == "ignore" and cfg.on_shutdown == ("suspend",) and cfg.uris == ("default",)
    (problem,) = cfg.problems
    assert problem.where == f"{path}:2" and "not closed" in problem.text() and "rest of the file" in problem.text()


def test_unterminated_quote_skips_the_rest(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "c"
    path.write_text("ON_BOOT=ignore\nURIS=\"default\nON_SHUTDOWN=shutdown\n")
    cfg = _load(path, env, "upstream")
    assert cfg.on_boot == "ignore" and cfg.uris == ("default",) and cfg.on_shutdown == ("suspend",)
    (problem,) = cfg.problems
    assert problem.where == f"{path}:2" and "unterminated" in problem.text()


def test_dos_line_endings_are_a_problem_and_read_as_meant(tmp_path: Path, env: dict[str, str]) -> None:
    """The one deliberate difference from /bin/sh: it keeps the CR in every value
    (ON_SHUTDOWN='shutdown\\r' means suspend, URIS='default\\r' connects nowhere)."""
    path = tmp_path / "c"
    path.write_bytes(b"URIS=default\r\nON_SHUTDOWN=shutdown\r\n")
    assert sh_reading(path, "upstream", env)["ON_SHUTDOWN"] == "shutdown\r"
    cfg = _load(path, env, "upstream")
    assert cfg.uris == ("default",) and cfg.on_shutdown == ("shutdown",)
    (problem,) = cfg.problems
    assert "CR LF" in problem.text()


def test_unset_reference_is_a_warning(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "c"
    path.write_text('URIS="$MY_URIS"\n')
    cfg = _load(path, env, "upstream")
    assert cfg.uris == ()
    assert any("$MY_URIS" in w and "not set" in w for w in cfg.warnings), cfg.warnings


# --- systemd's EnvironmentFile= reading of the same file ---------------------------------------------

def test_environment_file_reading_matches_systemd(tmp_path: Path) -> None:
    """Facts of systemd's env-file parser (src/basic/env-file.c): no $ expansion,
    inline comments kept, quotes removed, 'export NAME=' is not a valid name."""
    from libvirt_guests.config.shellfile import environment_file_values

    values = environment_file_values(
        'URIS="$URIS lxc:///system"\n'
        "ON_SHUTDOWN=shutdown # saves time\n"
        "export ON_BOOT=start\n"
        "START_DELAY='1'\"0\"\n"
        "# SYNC_TIME=1\n"
        "; BYPASS_CACHE=1\n"
        'PERSISTENT_ONLY="a\\"b\\x"\n'
        "SAVE_TIMEOUT=1\\\n2\n"
        "  STOP_DEADLINE  =  7  \n"
        "no assignment here\n"
    )
    assert values == {
        "URIS": "$URIS lxc:///system",
        "ON_SHUTDOWN": "shutdown # saves time",
        "START_DELAY": "10",
        "PERSISTENT_ONLY": 'a"b\\x',
        "SAVE_TIMEOUT": "12",
        "STOP_DEADLINE": "7",
    }


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_environment_file_copy_does_not_change_the_reading(tmp_path: Path, env: dict[str, str], case: str) -> None:
    """Under systemd the file arrives twice: sourced by us, and as environment
    variables through EnvironmentFile=. The second must not override the first."""
    from libvirt_guests.config.shellfile import environment_file_values

    path = tmp_path / "libvirt-guests"
    path.write_text(CORPUS[case])
    plain = _load(path, env, "debian")
    under_systemd = _load(path, {**env, **environment_file_values(CORPUS[case])}, "debian")
    assert under_systemd == plain
    assert under_systemd.texts == plain.texts and under_systemd.sources == plain.sources


def test_a_real_environment_override_still_wins(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "c"
    path.write_text("ON_SHUTDOWN=suspend\nURIS=\"$URIS lxc:///system\"\n")
    cfg = _load(path, {**env, "ON_SHUTDOWN": "shutdown", "URIS": "qemu:///system"}, "upstream")
    assert cfg.on_shutdown == ("shutdown",) and cfg.sources["ON_SHUTDOWN"] == "environment"
    assert cfg.uris == ("qemu:///system",) and cfg.sources["URIS"] == "environment"


# --- generated files, compared with /bin/sh ---------------------------------------------------------

_VARS = ["A", "B", "URIS", "ON_BOOT", "T"]
_PLAIN = st.text(alphabet="abcXYZ019:/._-~*?[]#=%", min_size=1, max_size=6)
_IN_SINGLE = st.text(alphabet="ab $\\\"`#;~*\n()", max_size=6)
_IN_DOUBLE_CHARS = st.one_of(st.text(alphabet="ab '#;~*()\n", min_size=1, max_size=4),
                             st.sampled_from(["\\$", "\\\\", '\\"', "\\`", "\\x", "\\\n", "$ ", "$/"]))


def _param(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    name = st.sampled_from(_VARS + ["UNSET"])
    return st.one_of(
        name.map(lambda n: f"${n}"),
        name.map(lambda n: f"${{{n}}}"),
        name.map(lambda n: f"${{#{n}}}"),
        st.tuples(name, st.sampled_from(["-", ":-", "+", ":+", "=", ":="]), inner).map(
            lambda t: f"${{{t[0]}{t[1]}{t[2]}}}"),
    )


_BRACE_WORD = st.text(alphabet="ab 1:/", max_size=4)
_DOUBLE = st.lists(st.one_of(_IN_DOUBLE_CHARS, _param(_BRACE_WORD)), max_size=4).map(lambda p: '"' + "".join(p) + '"')
_PART = st.one_of(_PLAIN, _IN_SINGLE.map(lambda t: f"'{t}'"), _DOUBLE, _param(_BRACE_WORD),
                  st.sampled_from(["\\ ", "\\'", '\\"', "\\$", "\\\\", "\\#", "\\\n"]))
_ASSIGNMENT = st.tuples(st.sampled_from(_VARS), st.lists(_PART, max_size=4)).map(lambda t: t[0] + "=" + "".join(t[1]))
_LINE = st.tuples(st.sampled_from(["", "export ", "  "]), st.lists(_ASSIGNMENT, min_size=1, max_size=3),
                  st.sampled_from(["", " # comment", ";", "\t"])).map(lambda t: t[0] + " ".join(t[1]) + t[2])
_FILE = st.lists(st.one_of(_LINE, st.sampled_from(["# c", "", "export A", "export URIS"])), max_size=6).map(
    lambda lines: "\n".join(lines) + "\n")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_FILE)
def test_generated_files_read_as_bin_sh_reads_them(tmp_path: Path, text: str) -> None:
    """Random files of assignments (quotes, escapes, expansions, export,
    several on a line), none of which runs anything: sh and we agree."""
    from libvirt_guests.config.load import original_scope
    from libvirt_guests.config.shellfile import read_shell

    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/someone"}
    path = tmp_path / "generated"
    path.write_text(text)
    script = UPSTREAM_PRELUDE + '. "$1"\n' + "".join(
        f'printf "%s\\0%s\\0%s\\0" {name} "${{{name}+set}}" "${name}"\n' for name in _VARS)
    result = subprocess.run(["/bin/sh", "-c", script, "sh", str(path)], env=env, capture_output=True, check=False)
    assert result.returncode == 0 and not result.stderr, (text, result.stderr)
    fields = result.stdout.decode().split("\0")[:-1]
    expected = {fields[i]: (fields[i + 2] if fields[i + 1] else None) for i in range(0, len(fields), 3)}
    scope = original_scope("upstream", env)
    reading = read_shell(text, scope)
    assert not reading.skipped, (text, reading.skipped)
    assert {name: scope.get(name) for name in _VARS} == expected, text
