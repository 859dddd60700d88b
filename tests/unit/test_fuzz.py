"""Fuzzed configuration: every input loads (nothing raises, every problem is
one line naming the value used), and a stop with a bad value still handles
the guest: one error line per problem it uses, exit 6 (0 when it uses none),
no traceback."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libvirt_guests.config.load import Paths, load
from libvirt_guests.config.settings import SETTINGS
from libvirt_guests.config.shellfile import environment_file_values

from .support import Driver, Files

NAMES = [s.name for s in SETTINGS]
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "0", "1", "-1", "suspend", "shutdown poweroff", "1e3", "0x10", "٣", " 5 ", "start",
                     "true", "default", "suspend suspend", "poweroff\tshutdown", "9" * 30, "$(id)", "`id`",
                     "${X%y}", "$1", "inf", "nan", "1m 30s", "+300", "'", "\\"]),
)
CASES = {"count": 0, "with_problems": 0}


def _dotenv_line(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{escaped}"\n'


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), value=VALUES)
def test_fuzzed_value_never_keeps_stop_from_handling_the_guest(
    files: Files, driver: Driver, run, name: str, value: str
) -> None:
    files.config.write_text("URIS=test:///default\n" + _dotenv_line(name, value))
    CASES["count"] += 1
    config = load(Paths.resolve(), environ={})
    for problem in config.problems:
        assert "\n" not in problem.text()
    if not config.problems:
        return  # valid: nothing more to prove for this case
    CASES["with_problems"] += 1
    used = [p for p in config.problems if p.concerns("stop")]
    guest = driver.guest()
    result = run("stop")
    assert "Traceback" not in result.err
    assert result.code == (6 if used else 0)
    errors = [line for line in result.err.splitlines() if line.startswith("libvirt-guests: error: ")]
    assert len(errors) == len(used)
    assert driver.state(guest) == "saved"  # handled, whatever the value
    assert guest.UUIDString() in files.list_file.read_text()  # and recorded to be started at boot
    files.list_file.unlink()
    files.state_file.unlink(missing_ok=True)
    driver.conn.lookupByUUIDString(guest.UUIDString()).managedSaveRemove()
    guest.undefine()


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_fuzzed_whole_file_never_crashes(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c"
    path.write_text(text)
    config = load(Paths.resolve(config=str(path), environ={}), environ={})
    for problem in config.problems:
        assert "\n" not in problem.text()
    # Under systemd the same file also arrives as environment variables
    # (EnvironmentFile=): that copy must not change what the file says.
    copy = {k: v for k, v in environment_file_values(text).items() if not k.startswith("LIBVIRT")}
    under_systemd = load(Paths.resolve(config=str(path), environ={}), environ=copy)
    assert (under_systemd, under_systemd.sources) == (config, config.sources)


def test_fuzzing_reached_the_stop() -> None:
    """The property above proves something only if some cases had problems."""
    if CASES["count"]:
        assert CASES["with_problems"] > 10, CASES
