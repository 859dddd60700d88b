"""Whose defaults apply (issue 14 item 1): the choice a package builds in
(Debian's: debian) holds whoever runs the command, --help, check-config,
plan and the man page say which set is in force and where it comes from, and
the environment and --defaults still choose the other set.

The installed .deb is tested in tests/test_packaging.py; here a package's
build is stood in for by the module its build writes."""

from __future__ import annotations

import json
import sys
import types

import pytest

from libvirt_guests.cli import manpage
from libvirt_guests.cli.main import COMMANDS, EXIT_CODES

from .support import Driver, Files

VENDOR = "libvirt_guests.config._vendor"


@pytest.fixture
def debian_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """This copy as debian/rules builds it."""
    monkeypatch.setitem(sys.modules, VENDOR, types.SimpleNamespace(DEFAULTS="debian", PACKAGE="Debian"))


@pytest.fixture
def source_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, VENDOR, None)  # import fails: as built from source


def _summary(run, *argv: str) -> tuple[str, str, str]:  # noqa: ANN001
    data = json.loads(run(*argv, "check-config", "--json").out)
    return data["defaults"], data["settings"]["ON_BOOT"]["value"], data["settings"]["ON_SHUTDOWN"]["value"]


def test_a_debian_build_reads_debian_defaults_by_hand(files: Files, debian_build: None, run) -> None:
    assert _summary(run) == ("debian", "ignore", "shutdown")


def test_a_source_build_reads_upstream_defaults(files: Files, source_build: None, run) -> None:
    assert _summary(run) == ("upstream", "start", "suspend")


def test_environment_and_option_still_choose(files: Files, debian_build: None, run,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBVIRT_GUESTS_DEFAULTS", "upstream")
    assert _summary(run) == ("upstream", "start", "suspend")
    assert _summary(run, "--defaults", "debian") == ("debian", "ignore", "shutdown")


def test_plan_follows_the_built_in_defaults_and_says_so(files: Files, driver: Driver, debian_build: None,
                                                        run) -> None:
    dom = driver.guest()
    assert f"{dom.name()}: shutdown (shutdown timeout 300 per guest)" in run("plan", "stop").out
    data = json.loads(run("plan", "stop", "--json").out)
    assert (data["defaults"], data["defaults_from"], data["config_file"]) == ("debian", "package", str(files.config))
    status = json.loads(run("status", "--json").out)
    assert (status["defaults"], status["defaults_from"], status["config_file"]) == (
        "debian", "package", str(files.config))


def test_help_says_which_defaults_apply_and_why(files: Files, debian_build: None, run,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    text = run("--help").out
    assert "Defaults in force: debian (chosen by the Debian package when it was built)." in text
    assert "  ON_SHUTDOWN        default 'shutdown' (upstream: 'suspend')" in text
    assert "  ON_BOOT            default 'ignore' (upstream: 'start')" in text
    monkeypatch.setenv("LIBVIRT_GUESTS_DEFAULTS", "upstream")
    text = run("--help").out
    assert ("Defaults in force: upstream (set by LIBVIRT_GUESTS_DEFAULTS in the environment)."
            in text)
    assert "  ON_SHUTDOWN        default 'suspend' (debian: 'shutdown')" in text


def test_man_page_states_the_copy_s_defaults(debian_build: None) -> None:
    page = manpage.render(COMMANDS, EXIT_CODES).replace("\\-", "-")
    assert "Defaults of this copy: debian (chosen by the Debian package when it was built)" in page
    assert "Default: 'shutdown' (upstream: 'suspend')" in page


def test_an_unknown_built_in_choice_falls_back_to_upstream(files: Files, run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, VENDOR, types.SimpleNamespace(DEFAULTS="debain", PACKAGE="Broken"))
    assert _summary(run) == ("upstream", "start", "suspend")
