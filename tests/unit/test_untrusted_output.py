"""Issue 19: what comes from a guest or a file is escaped wherever it is
printed, credentials in a URI are never printed, a guest's unknown policy
attributes cost one warning line, and no failure to write (a closed or
failing stream, a locale that cannot encode a name) stops or fails a run."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_guests.output import Output, escape, redact, shown_error, shown_uri

from .support import Driver, Files, Result

# --- escape() ---------------------------------------------------------------


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain-name_1.2", "plain-name_1.2"),
    ("café-€ 名前 😀", "café-€ 名前 😀"),
    ("a\nlibvirt-guests: error: fake", "a\\nlibvirt-guests: error: fake"),
    ("a\rb", "a\\rb"),
    ("tab\there", "tab\\there"),
    ("nul\0", "nul\\x00"),
    ("esc\x1b[2J", "esc\\x1b[2J"),
    ("del\x7f", "del\\x7f"),
    ("csi\x9b31m", "csi\\x9b31m"),
    ("\u202eevil", "\\u202eevil"),
    ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
    ("\u200b\u200c\u200d\u200e\u200f", "\\u200b\\u200c\\u200d\\u200e\\u200f"),
    ("line\u2028para\u2029", "line\\u2028para\\u2029"),
    ("bom\ufeff", "bom\\ufeff"),
    ("tag\U000e0041", "tag\\U000e0041"),
    ("back\\slash", "back\\\\slash"),
    ("a\\x9b", "a\\\\x9b"),  # the text of an escape is not the escape of a character
])
def test_escape_writes_each_control_or_invisible_character_as_python_does(raw: str, shown: str) -> None:
    assert escape(raw) == shown


def test_every_control_format_and_line_separator_character_is_escaped() -> None:
    categories = {"Cc", "Cf", "Zl", "Zp"}
    missed = [hex(code) for code in range(sys.maxunicode + 1)
              if unicodedata.category(chr(code)) in categories
              and not (escape(chr(code)).startswith("\\") and escape(chr(code)).isascii()
                       and escape(chr(code)).isprintable())]
    assert missed == []


def test_escaped_text_tells_apart_what_looks_the_same() -> None:
    assert escape("a\\x9bb") != escape("a\x9bb")
    assert escape("a\\nb") != escape("a\nb")


# --- redact() ---------------------------------------------------------------


@pytest.mark.parametrize(("raw", "shown"), [
    ("qemu:///system", "qemu:///system"),
    ("qemu+ssh://root@host/system", "qemu+ssh://root@host/system"),
    ("qemu+ssh://root:s3cret@host/system", "qemu+ssh://root:***@host/system"),
    ("qemu+tls://bob:pa:ss@host:16514/system?no_verify=1", "qemu+tls://bob:***@host:16514/system?no_verify=1"),
    ("qemu+ssh://h/system?keyfile=/root/.ssh/id&password=s3cret&no_tty=1",
     "qemu+ssh://h/system?keyfile=/root/.ssh/id&password=***&no_tty=1"),
    ("x://h/?passwd=a&pass=b&pwd=c&secret=d&token=e&key=f&api_key=g&auth_token=h",
     "x://h/?passwd=***&pass=***&pwd=***&secret=***&token=***&key=***&api_key=***&auth_token=***"),
    ("esx://u@h/?proxy=http://p:s3cret@proxy:3128", "esx://u@h/?proxy=http://p:***@proxy:3128"),
    ("esx://u@h/?proxy=http%3A%2F%2Fp%3As3cret%40proxy%3A3128", "esx://u@h/?proxy=http://p:***@proxy:3128"),
    ("Can't connect to q+unix://u:s3cret@/system?socket=/x&password=s3cret. Skipping.",
     "Can't connect to q+unix://u:***@/system?socket=/x&password=***. Skipping."),
    ("unable to connect to 'q+tcp://u:s3cret@h/system': refused",
     "unable to connect to 'q+tcp://u:***@h/system': refused"),
])
def test_redact_takes_every_credential_out_of_a_uri_or_a_text(raw: str, shown: str) -> None:
    assert redact(raw) == shown
    assert redact(shown) == shown


def test_a_shown_uri_or_error_is_redacted_then_escaped() -> None:
    assert shown_uri("q://u:s3cret@h/\u202e?token=t") == "q://u:***@h/\\u202e?token=***"
    assert shown_error(RuntimeError("q://u:pw@h/ said\nno")) == "q://u:***@h/ said\\nno"


# --- Output: the last line of defence ----------------------------------------


def test_output_writes_one_line_per_message_whatever_it_contains() -> None:
    out, err = io.StringIO(), io.StringIO()
    output = Output(out, err)
    output.say("a\nlibvirt-guests: error: fake\r\x9b\u202e")
    output.warn("q://u:s3cret@h/ x\ny")
    output.block("line 1\nline 2")
    assert out.getvalue() == "a\\nlibvirt-guests: error: fake\\r\\x9b\\u202e\nline 1\nline 2\n"
    assert err.getvalue() == "libvirt-guests: warning: q://u:***@h/ x\\ny\n"


class _Failing(io.StringIO):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        raise self.error


@pytest.mark.parametrize("error", [BrokenPipeError(32, "EPIPE"), OSError(5, "EIO"), OSError(28, "ENOSPC"),
                                   ValueError("I/O operation on closed file"), AttributeError("gone"),
                                   UnicodeEncodeError("latin-1", "€", 0, 1, "no")])
def test_output_never_fails_a_run_whatever_writing_does(error: BaseException) -> None:
    output = Output(_Failing(error), _Failing(error))
    output.say("one")
    output.warn("two")
    output.error("three")
    output.block("four\nfive")


def test_output_to_no_stream_at_all_writes_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    output = Output()
    output.say("nowhere")
    output.error("nowhere either")


# --- every print path, on the test driver -----------------------------------

HOSTILE = "a\\b\rc\x9bd\u202ee"  # a backslash, CR, CSI, RLO: libvirt accepts each in a name
HOSTILE_SHOWN = "a\\\\b\\rc\\x9bd\\u202ee"
INJECTED = "evil\nlibvirt-guests: error: fake"  # a node file's name with a newline
INJECTED_SHOWN = "evil\\nlibvirt-guests: error: fake"
UUID_HOSTILE = "7f1e2d3c-0000-4000-8000-000000000001"
UUID_INJECTED = "7f1e2d3c-0000-4000-8000-000000000002"
SECRET = "s3cret"
BAD_PEER = f"qemu+unix://bob:{SECRET}@/system?socket=/nonexistent/peer&token={SECRET}"
BAD_URI = f"qemu+unix://bob:{SECRET}@/system?socket=/nonexistent/sock&password={SECRET}"


def _xml_text(text: str) -> str:
    return "".join(f"&#{ord(ch)};" if not ch.isalnum() else ch for ch in text)


def _node(tmp_path: Path, policy: str = "") -> str:
    domains = []
    for name, uuid in ((HOSTILE, UUID_HOSTILE), (INJECTED, UUID_INJECTED)):
        metadata = f"<metadata>{policy}</metadata>" if policy and uuid == UUID_HOSTILE else ""
        domains.append(f"<domain type='test'><name>{_xml_text(name)}</name><uuid>{uuid}</uuid>"
                       f"<memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os>{metadata}</domain>")
    node = tmp_path / "node.xml"
    node.write_text("<node>\n" + "\n".join(domains) + "\n</node>\n")
    return f"test://{node}"


def _safe(result: Result) -> str:
    """Both streams, checked line by line: nothing unprintable, no injected line."""
    for stream in (result.out, result.err):
        for line in stream.split("\n"):
            assert line.isprintable(), repr(line)
            assert not line.startswith("libvirt-guests: error: fake"), stream
    return result.out + result.err


@pytest.fixture
def hostile(files: Files, tmp_path: Path) -> str:
    uri = _node(tmp_path, policy='<guests xmlns="urn:libvirt-guests:policy:1" order="1&#10;2" bogus="x&#13;y"/>')
    files.write_config(URIS=uri, ON_SHUTDOWN="suspend")
    return uri


def test_a_guests_name_is_escaped_on_every_line_of_stop_and_start(hostile: str, run: Callable[..., Result],
                                                                   driver: Driver) -> None:
    text = _safe(run("stop"))
    assert f"Running guests on {hostile} URI: {HOSTILE_SHOWN}, {INJECTED_SHOWN}" in text
    assert f"Suspending {HOSTILE_SHOWN}: done" in text and f"Suspending {INJECTED_SHOWN}: done" in text
    # one warning line per guest and run: the unknown attribute first, then the bad value
    assert (f"guest {HOSTILE_SHOWN}: unknown policy attribute 'bogus'='x\\ry'; ignored"
            " | policy order='1\\n2' is not valid") in text
    status = _safe(run("status"))
    assert f"  {HOSTILE_SHOWN} on {hostile}: saved" in status
    _safe(run("start"))  # a node file's guests are running again in a new connection


def test_a_guests_name_is_escaped_in_the_reports(hostile: str, run: Callable[..., Result],
                                                 driver: Driver) -> None:
    assert f"group 1: {HOSTILE_SHOWN}: suspend" in _safe(run("plan", "stop"))
    table = _safe(run("gueststatus"))
    assert f" {HOSTILE_SHOWN} " in table and f" {INJECTED_SHOWN} " in table
    assert f"policy of {HOSTILE_SHOWN} ({UUID_HOSTILE})" in _safe(run("policy", UUID_HOSTILE))
    run("stop")
    assert HOSTILE_SHOWN in _safe(run("plan", "start"))


def test_json_output_stays_valid_and_is_escaped_once(hostile: str, run: Callable[..., Result],
                                                     driver: Driver) -> None:
    result = run("plan", "stop", "--json")
    _safe(result)
    plan = json.loads(result.out)
    assert {entry["name"] for group in plan["uris"][0]["groups"] for entry in group} == {HOSTILE, INJECTED}
    report = json.loads(run("gueststatus", "--json").out)
    assert {guest["name"] for guest in report["uris"][0]["guests"]} == {HOSTILE, INJECTED}
    policy = json.loads(run("policy", UUID_HOSTILE, "--json").out)
    assert policy["guest"] == HOSTILE


def test_the_unknown_attributes_of_a_guests_policy_cost_one_warning_line(files: Files, tmp_path: Path,
                                                                         run: Callable[..., Result],
                                                                         driver: Driver) -> None:
    attributes = " ".join(f'x{i}="{"v" * 100}{i}"' for i in range(3000))
    uri = _node(tmp_path, policy=f'<guests xmlns="urn:libvirt-guests:policy:1" {attributes}/>')
    files.write_config(URIS=uri, ON_SHUTDOWN="suspend")
    for args in (("stop",), ("plan", "stop")):
        result = run(*args)
        lines = [line for line in result.err.splitlines() if "policy" in line]
        assert len(lines) == 1, result.err[:2000]
        cut = "v" * 80
        assert lines[0] == (f"libvirt-guests: warning: guest {HOSTILE_SHOWN}: unknown policy 3000 attributes "
                            f"'x0'='{cut}'... (101 characters), 'x1'='{cut}'... (101 characters), "
                            f"'x2'='{cut}'... (101 characters) and 2997 more; ignored")
        files.list_file.unlink(missing_ok=True)
        files.state_file.unlink(missing_ok=True)


# --- credentials --------------------------------------------------------------


@pytest.fixture
def with_secrets(files: Files, tmp_path: Path) -> str:
    uri = _node(tmp_path)
    files.write_config(URIS=f"{uri} {BAD_URI}", ON_SHUTDOWN="migrate suspend", MIGRATE_URI=BAD_PEER,
                       CONNECT_TIMEOUT="0")
    return uri


@pytest.mark.parametrize("args", [("stop",), ("plan", "stop"), ("plan", "stop", "--json"), ("check-config",),
                                  ("check-config", "--json"), ("gueststatus",), ("gueststatus", "--json"),
                                  ("policy", UUID_HOSTILE), ("policy", UUID_HOSTILE, "--json")])
def test_credentials_in_a_uri_are_never_printed(with_secrets: str, run: Callable[..., Result], driver: Driver,
                                                args: tuple[str, ...]) -> None:
    result = run(*args)
    text = _safe(result)
    assert SECRET not in text
    assert "***" in text  # the URI is there, without its credentials
    if "--json" in args:
        json.loads(result.out)


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("plan", "start"), ("start",)])
def test_credentials_are_not_printed_after_a_stop_either(with_secrets: str, run: Callable[..., Result],
                                                         driver: Driver, args: tuple[str, ...]) -> None:
    run("stop")
    assert SECRET not in _safe(run(*args))


def test_the_peer_that_cannot_be_reached_is_named_without_its_password(with_secrets: str,
                                                                       run: Callable[..., Result],
                                                                       driver: Driver) -> None:
    text = _safe(run("stop"))
    assert f"cannot reach the peer {BAD_PEER.replace(SECRET, '***')} (" in text
    assert f"Can't connect to {BAD_URI.replace(SECRET, '***')}. Skipping." in text


def test_the_state_file_keeps_the_raw_uri_that_start_needs(with_secrets: str, files: Files,
                                                           run: Callable[..., Result], driver: Driver) -> None:
    files.write_config(URIS=f"test:///default?token={SECRET}", ON_SHUTDOWN="suspend")
    driver.guest()
    assert SECRET not in _safe(run("stop"))
    assert f"test:///default?token={SECRET}" in files.list_file.read_text()
    assert os.stat(files.state_file).st_mode & 0o077 == 0
    result = run("start")
    assert result.code == 0 and SECRET not in _safe(result)


# --- the streams, in a process of its own ------------------------------------


def _stop_in_a_process(files: Files, tmp_path: Path, redirections: str, **config: str) -> tuple[int, str, str]:
    """`libvirt-guests stop` run by sh with `redirections`; what reached a
    stream not redirected away is in the files out and err."""
    files.write_config(URIS=_node(tmp_path), ON_SHUTDOWN="suspend", **config)
    out, err = tmp_path / "out", tmp_path / "err"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "JOURNAL_STREAM", "NOTIFY_SOCKET")}
    with open(out, "w") as stdout, open(err, "w") as stderr:
        done = subprocess.run(["sh", "-c", f'exec "$@" {redirections}', "sh", sys.executable, "-m",
                               "libvirt_guests", "stop"], env=env, stdout=stdout, stderr=stderr,
                              stdin=subprocess.DEVNULL, timeout=120, check=False)
    return done.returncode, out.read_text(errors="replace"), err.read_text(errors="replace")


@pytest.mark.parametrize("redirections", [">&-", "2>&-", ">&- 2>&-", "<&-", ">&- 2>&- <&-", ">/dev/full",
                                          "2>/dev/full", ">/dev/full 2>&1"])
@pytest.mark.parametrize("warning", [False, True])
def test_stop_with_its_streams_closed_or_full_records_every_guest(files: Files, tmp_path: Path, redirections: str,
                                                                  warning: bool) -> None:
    config = {"BOGUS_VARIABLE": "1"} if warning else {}  # an unknown variable: one warning to print
    code, out, err = _stop_in_a_process(files, tmp_path, redirections, **config)
    assert code == 0, err
    assert UUID_HOSTILE in files.list_file.read_text() and UUID_INJECTED in files.list_file.read_text()
    assert "Traceback" not in err
    if ">" not in redirections.replace("2>", ""):  # standard output still reaches the file
        assert "libvirt-guests stop: 2 guests" in out


def test_stop_into_a_pipe_whose_reader_exited_records_every_guest(files: Files, tmp_path: Path) -> None:
    uri = _node(tmp_path)
    files.write_config(URIS=uri, ON_SHUTDOWN="suspend")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "libvirt_guests", "stop"], stdout=write_end,
                                stderr=write_end, stdin=subprocess.DEVNULL, env=os.environ.copy())
    finally:
        os.close(write_end)
    assert proc.wait(timeout=120) == 0
    assert UUID_HOSTILE in files.list_file.read_text()


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "latin-1"}, {"PYTHONIOENCODING": "ascii"},
                                 {"LANG": "C", "LC_ALL": "C"}])
def test_a_name_the_stream_cannot_encode_does_not_silence_the_run(files: Files, tmp_path: Path,
                                                                  env: dict[str, str]) -> None:
    node = tmp_path / "node.xml"
    node.write_text("<node><domain type='test'><name>café-€</name><memory>65536</memory><vcpu>1</vcpu>"
                    "<os><type>hvm</type></os></domain></node>\n", encoding="utf-8")
    files.write_config(URIS=f"test://{node}", ON_SHUTDOWN="suspend")
    out, err = tmp_path / "out", tmp_path / "err"
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LANG", "LC_ALL")}
    with open(out, "w") as stdout, open(err, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "libvirt_guests", "stop"], env={**full_env, **env},
                              stdout=stdout, stderr=stderr, timeout=120, check=False)
    assert done.returncode == 0, err.read_text()
    text = out.read_bytes().decode(env.get("PYTHONIOENCODING", "utf-8"))
    assert "libvirt-guests stop: 1 guests" in text
    shown = "café-€" if env.get("PYTHONIOENCODING") is None else (
        "café-\\u20ac" if env["PYTHONIOENCODING"] == "latin-1" else "caf\\xe9-\\u20ac")
    assert f"Suspending {shown}: done" in text
