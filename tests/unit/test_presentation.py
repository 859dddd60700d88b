"""What the admin reads (issue 14 items 6 and 8): every --json output is one
object laid out the same way; policy and plan speak plainly; the shipped
docs cite nothing that is not shipped; README, man page and --help agree;
the packages name a maintainer the README gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from libvirt_guests.cli import commandline
from libvirt_guests.cli.main import COMMANDS

from .support import TEST_URI, Driver, Files

ROOT = Path(__file__).parents[2]


def _is_one_object(text: str) -> dict:
    data = json.loads(text)
    assert isinstance(data, dict)
    assert text == json.dumps(data, indent=2) + "\n", "laid out differently"
    return data


def test_every_json_output_is_one_object_laid_out_the_same(files: Files, driver: Driver, run) -> None:
    dom = driver.guest()
    outputs = {
        "status": run("status", "--json"),
        "gueststatus": run("gueststatus", "--json"),
        "plan stop": run("plan", "stop", "--json"),
        "plan start": run("plan", "start", "--json"),
        "policy": run("policy", dom.name(), "--json"),
        "check-config": run("check-config", "--json"),
    }
    files.write_config(ON_BOOT="Start")
    outputs["check-config (invalid)"] = run("check-config", "--json")
    for what, result in outputs.items():
        data = _is_one_object(result.out)
        assert data, what
    assert _is_one_object(outputs["gueststatus"].out)["uris"][0]["guests"][0]["name"] == dom.name()


@pytest.mark.parametrize("command", [["status"], ["gueststatus"], ["plan", "stop"], ["plan", "start"]])
def test_reports_name_the_configuration_and_the_defaults(files: Files, run, command: list[str]) -> None:
    data = json.loads(run(*command, "--json").out)
    assert data["config_file"] == str(files.config)
    assert data["defaults"] in ("upstream", "debian")
    assert data["defaults_from"] in ("--defaults", "LIBVIRT_GUESTS_DEFAULTS", "package", "built-in")
    data = json.loads(run(*command, "--json", "--defaults", "debian").out)
    assert (data["defaults"], data["defaults_from"]) == ("debian", "--defaults")


def _policy_lines(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split("(")[0].split(None, 1)[1].strip() for line in out.splitlines()[1:]}


def test_policy_prints_yes_no_and_plain_numbers(files: Files, driver: Driver, run) -> None:
    dom = driver.guest()
    shown = _policy_lines(run("policy", dom.name()).out)
    assert shown == {"on_shutdown": "suspend", "on_boot": "start", "order": "-", "shutdown_timeout": "300",
                     "save_timeout": "0", "start_delay": "0", "skip": "no", "migrate_to": "-",
                     "migrate_data_uri": "-"}
    files.write_config(POLICY_MAX_START_DELAY="2")  # a guest's start_delay above START_DELAY needs the host's ceiling
    assert run("policy", dom.name(), "--skip", "yes", "--start-delay", "1.5", "--order", "2").code == 0
    shown = _policy_lines(run("policy", dom.name()).out)
    assert (shown["skip"], shown["start_delay"], shown["order"]) == ("yes", "1.5", "2")
    for text in ("False", "True", "0.0", "1.0"):
        assert text not in run("policy", dom.name()).out


def test_an_empty_plan_says_so(files: Files, driver: Driver, run) -> None:
    result = run("plan", "stop")
    assert (result.code, result.out) == (0, f"stop on {TEST_URI}:\n  no running guests\n")
    result = run("plan", "start")
    assert result.code == 0
    assert result.out == f"note: no list file {files.list_file}: the next start has no guest to start\n"
    assert json.loads(run("plan", "start", "--json").out)["note"].startswith("no list file")


def test_plan_stop_says_when_the_next_stop_does_nothing(files: Files, driver: Driver, run) -> None:
    """The original's rule: a list file left by a completed stop makes the next stop a no-op; plan must not
    show a stop that will not happen without saying so."""
    dom = driver.guest()
    files.list_file.write_text(f"{TEST_URI} {dom.UUIDString()}\n")
    result = run("plan", "stop")
    assert result.out.startswith(f"note: the list file {files.list_file} is still there")
    assert "the next stop does nothing" in result.out
    assert run("stop").out == ""  # and indeed it does nothing
    assert driver.state(dom) == "running"


def test_man_page_cites_nothing_unshipped(files: Files, run) -> None:
    page = run("man").out
    assert "BENCHMARKS" not in page
    assert not re.search(r"\b\d+\.\d+ s\b", page), "benchmark figures"
    assert "reference machine" not in page


def test_maintainer_is_the_project_with_the_readme_contact() -> None:
    readme = (ROOT / "README.md").read_text()
    contact = re.search(r"^## Contact\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert contact, "README has no Contact section"
    maintainer = re.search(r"`([^`]+ <[^>]+>)`", contact.group(1))
    assert maintainer, "README's Contact names no maintainer address"
    name = maintainer.group(1)
    assert "localhost" not in name and name.startswith("libvirt-guests")
    control = (ROOT / "packaging" / "debian" / "control").read_text()
    assert re.search(rf"^Maintainer: {re.escape(name)}$", control, re.M)
    changelog = (ROOT / "packaging" / "debian" / "changelog").read_text()
    assert all(line == f" -- {name}" or line.startswith(f" -- {name}  ")
               for line in changelog.splitlines() if line.startswith(" -- "))
    spec = (ROOT / "packaging" / "rpm" / "libvirt-guests.spec").read_text()
    assert all(name in line for line in spec.splitlines() if line.startswith("* "))


def _readme_table(readme: str, header: str) -> list[str]:
    """First-column cells of the markdown table whose header row starts with `header`."""
    block = readme.split(f"\n| {header} |", 1)[1].split("\n\n", 1)[0]
    return [row.split(" | ")[0].lstrip("| ") for row in block.splitlines()[2:]]


def test_readme_man_page_and_help_agree(files: Files, run) -> None:
    readme = (ROOT / "README.md").read_text()
    help_text = run("--help").out
    man = run("man").out.replace("\\-", "-")
    commands_in_readme = set()
    for cell in _readme_table(readme, "Command"):
        if cell != "anything else":
            commands_in_readme |= {word.strip("`").split()[0] for word in cell.split(", ")}
    assert commands_in_readme == set(COMMANDS)
    section = help_text.split("\nCommands:\n", 1)[1].split("\n\n")[0]
    help_commands = {line.split()[0] for line in section.splitlines() if not line.startswith("   ")}
    assert help_commands == set(COMMANDS)
    for name in COMMANDS:
        assert f".B {name}\n" in man
    readme_options = {cell.strip("`").split()[0] for c in _readme_table(readme, "Option") for cell in c.split(", ")}
    assert readme_options == {o.flag for o in commandline.OPTIONS} | {"-h"}
    for option in commandline.OPTIONS:
        assert f"  {option.synopsis} " in help_text, option.flag
        assert f".B {option.synopsis}\n" in man, option.flag
