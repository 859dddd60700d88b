"""Fuzzed configuration values: every input parses, or ends in a one-line
error and exit 6 with no traceback and no action on a guest."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libvirt_guests.config import ConfigError, Paths, load
from libvirt_guests.settings import SETTINGS

from .support import Driver, Files

NAMES = [s.name for s in SETTINGS]
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "0", "1", "-1", "suspend", "shutdown poweroff", "1e3", "0x10", "٣", " 5 ", "start",
                     "true", "default", "suspend suspend", "poweroff\tshutdown", "9" * 30]),
)
CASES = {"count": 0, "refused": 0}


def _dotenv_line(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{escaped}"\n'


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), value=VALUES)
def test_fuzzed_value_parses_or_exits_6_untouched(files: Files, driver: Driver, run, name: str, value: str) -> None:
    files.config.write_text("URIS=test:///default\n" + _dotenv_line(name, value))
    CASES["count"] += 1
    try:
        load(Paths.resolve(), environ={})
        return  # valid: nothing more to prove for this case
    except ConfigError as err:
        assert "\n" not in str(err)
    CASES["refused"] += 1
    guest = driver.guest()
    result = run("stop")
    assert result.code == 6
    assert "Traceback" not in result.err
    assert len(result.err.splitlines()) + len(result.out.splitlines()) == 1
    assert driver.state(guest) == "running"
    assert not files.list_file.exists()
    guest.destroy()
    guest.undefine()


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_fuzzed_whole_file_never_crashes(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c"
    path.write_text(text)
    try:
        load(Paths.resolve(config=str(path), environ={}), environ={})
    except ConfigError as err:
        assert "\n" not in str(err)
