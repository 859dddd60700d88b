"""Packaging: the systemd unit, the SysV init script, the bash completion, the
.deb (which diverts libvirt's own libvirt-guests.sh) and the rpm.

Runs as root on Debian 12 with libvirt-daemon-system installed.  apt packages
these tests need (CI installs them first; the tests install nothing but the
.deb under test, and purge it again):

    systemd man-db bash build-essential dpkg-dev debhelper dh-python
    pybuild-plugin-pyproject python3-setuptools python3-libvirt python3-dotenv
    libvirt-clients libvirt-daemon-system rpm rpm2cpio

The .deb test diverts /usr/lib/libvirt/libvirt-guests.sh for a few seconds:
do not run it in parallel with tests that use the original script.  The
helpers that build, install and purge the .deb are in tests/packaging_support.py.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from libvirt_guests.cli import commandline
from libvirt_guests.cli import main as cli
from libvirt_guests.config import policy
from tests.packaging_support import (
    DEB_PACKAGE,
    DIVERTED,
    ORIGINAL,
    PACKAGING,
    SERVICE_ENV,
    SYSTEM_PATH,
    VERSION,
    build_deb,
    copy_source,
    need,
    our_diversions,
    purge_and_restore,
    run,
    sha256,
)

pytestmark = pytest.mark.packaging

UNIT = PACKAGING / "systemd" / "libvirt-guests.service"
SYSV = PACKAGING / "sysvinit" / "libvirt-guests"
COMPLETION = PACKAGING / "bash-completion" / "libvirt-guests"
SPEC = PACKAGING / "rpm" / "libvirt-guests.spec"

# Values shared with Debian's libvirt-daemon-system unit.
DEBIAN_UNIT = {
    "Description": ["Suspend/Resume Running libvirt Guests"],
    "Requires": ["virt-guest-shutdown.target"],
    "After": ["network.target", "time-sync.target", "libvirtd.socket", "virtqemud.socket", "virtlxcd.socket",
              "virtvboxd.socket", "virtvzd.socket", "virtxend.socket", "virt-guest-shutdown.target"],
    "EnvironmentFile": ["-/etc/default/libvirt-guests"],
    "Type": ["oneshot"],
    "RemainAfterExit": ["yes"],
    "StandardOutput": ["journal+console"],
    "TimeoutStopSec": ["0"],
    "WantedBy": ["multi-user.target"],
}


def tool() -> str:
    """The libvirt-guests under test (the project's console script)."""
    found = shutil.which("libvirt-guests") or shutil.which("libvirt-guests", path=str(Path(sys.executable).parent))
    assert found, "libvirt-guests is not installed: pip install -e ."
    return found


def unit_entries(text: str) -> dict[str, list[str]]:
    """Key -> values of a unit file, in order (sections flattened)."""
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def state_env(tmp_path: Path) -> dict[str, str]:
    """The tool's files in tmp_path: nothing of the host's state is read (the original script ignores these)."""
    config = tmp_path / "config"
    config.touch()
    return {
        "LIBVIRT_GUESTS_CONFIG": str(config),
        "LIBVIRT_GUESTS_LIST_FILE": str(tmp_path / "list"),
        "LIBVIRT_GUESTS_LOCK_FILE": str(tmp_path / "lock"),
        "LIBVIRT_GUESTS_STATE_FILE": str(tmp_path / "state"),
        **SERVICE_ENV,
    }


# --- systemd unit -----------------------------------------------------------------------------------------------


def test_unit_matches_the_distribution_unit() -> None:
    ours = unit_entries(UNIT.read_text())
    for key, values in DEBIAN_UNIT.items():
        if key == "After":  # Debian's ordering, then ours after the daemons (tests/systemd: no race at poweroff)
            assert ours[key][:len(values)] == values
            assert "libvirtd.service" in " ".join(ours[key]) and "virtqemud.service" in " ".join(ours[key])
            continue
        assert ours.get(key) == values, key
    assert ours["ExecStart"] == ["-/usr/bin/libvirt-guests start"]  # a failed start must not cancel the stop
    assert ours["ExecReload"] == ["/usr/bin/libvirt-guests reload"]
    assert ours["ExecStop"] == ["/usr/bin/libvirt-guests stop"]
    assert ours["Documentation"] == ["man:libvirt-guests(8)"]
    assert ours["NotifyAccess"] == ["all"]
    assert ours["Environment"] == ["LIBVIRT_GUESTS_DEFAULTS=debian"]
    distribution = Path("/lib/systemd/system/libvirt-guests.service")
    if distribution.exists():  # libvirt-daemon-system's: the same as ours but for the commands
        theirs = unit_entries(distribution.read_text())
        assert {k: theirs.get(k) for k in DEBIAN_UNIT} == DEBIAN_UNIT


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    need("systemd-analyze", "man")
    units, man8 = tmp_path / "units", tmp_path / "man" / "man8"
    units.mkdir()
    man8.mkdir(parents=True)
    # /usr/bin/libvirt-guests exists only once packaged: verify runs the installed tool instead
    (units / UNIT.name).write_text(UNIT.read_text().replace("/usr/bin/libvirt-guests", tool()))
    (units / "virt-guest-shutdown.target").write_text("[Unit]\nDescription=Libvirt guests shutdown\n")
    # Documentation=man:libvirt-guests(8) must resolve to our page
    (man8 / "libvirt-guests.8").write_text(run(tool(), "man").stdout)
    result = run("systemd-analyze", "verify", units / UNIT.name, check=False,
                 env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "MANPATH": str(tmp_path / "man")})
    assert (result.returncode, result.stderr) == (0, "")
    # and it is a real check: an unknown key is reported
    (units / UNIT.name).write_text((units / UNIT.name).read_text() + "Bogus=1\n")
    result = run("systemd-analyze", "verify", units / UNIT.name, check=False,
                 env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "MANPATH": str(tmp_path / "man")})
    assert "Bogus" in result.stderr


# --- SysV init script --------------------------------------------------------------------------------------------


def test_sysv_script_headers_and_syntax() -> None:
    run("sh", "-n", SYSV)
    assert os.access(SYSV, os.X_OK)
    text = SYSV.read_text()
    block = re.search(r"^### BEGIN INIT INFO\n(.*?)^### END INIT INFO$", text, re.M | re.S)
    assert block, "no LSB header"
    headers = dict(re.findall(r"^# ([A-Z][\w-]+):\s*(.*)$", block.group(1), re.M))
    assert headers["Provides"] == "libvirt-guests"
    assert headers["Required-Start"].split() == ["$remote_fs", "libvirtd"]
    assert headers["Required-Stop"].split() == ["$remote_fs", "libvirtd"]
    assert headers["Default-Start"].split() == ["2", "3", "4", "5"]
    assert headers["Default-Stop"].split() == ["0", "1", "6"]
    assert headers["Short-Description"]
    assert re.search(r'^exec /usr/bin/libvirt-guests "\$@"$', text, re.M)


def test_sysv_script_runs_the_tool(tmp_path: Path) -> None:
    script = tmp_path / "libvirt-guests"
    script.write_text(SYSV.read_text().replace("/usr/bin/libvirt-guests", tool()))
    env = state_env(tmp_path)
    result = run("sh", script, "status", check=False, env=env)
    assert (result.returncode, result.stdout) == (3, "stopped, with no saved guests\n")
    direct = run(tool(), "status", check=False, env=env)
    assert (direct.returncode, direct.stdout) == (result.returncode, result.stdout)
    (tmp_path / "lock").touch()
    assert run("sh", script, "status", env=env).stdout == "started\n"
    # Debian's defaults unless the environment says otherwise
    assert json.loads(run("sh", script, "check-config", "--json", env=env).stdout)["defaults"] == "debian"
    upstream = run("sh", script, "check-config", "--json", env={**env, "LIBVIRT_GUESTS_DEFAULTS": "upstream"})
    assert json.loads(upstream.stdout)["defaults"] == "upstream"
    assert run("sh", script, check=False, env=env).returncode == 2  # usage, like the original


# --- bash completion ---------------------------------------------------------------------------------------------


def complete(*words: str, env: dict[str, str] | None = None) -> list[str]:
    """COMPREPLY for the command line `words` (the cursor at the end of the last word)."""
    script = (f"source {shlex.quote(str(COMPLETION))}\n"
              f"COMP_WORDS=({shlex.join(['libvirt-guests', *words])}); COMP_CWORD={len(words)}\n"
              '_libvirt_guests; printf "%s\\n" "${COMPREPLY[@]}"')
    result = run("bash", "--norc", "--noprofile", "-c", script, env=env)
    assert result.stderr == ""
    return result.stdout.split()


def test_completion_registers_the_function() -> None:
    script = f"source {shlex.quote(str(COMPLETION))}; complete -p libvirt-guests"
    assert run("bash", "--norc", "-c", script).stdout.strip() == "complete -F _libvirt_guests libvirt-guests"


def test_completion_of_commands_and_options(tmp_path: Path) -> None:
    commands = set(cli.LSB_COMMANDS) | set(cli.COMMANDS)
    global_options = {option.flag for option in commandline.OPTIONS}
    assert set(complete("")) == commands
    assert complete("st") == ["start", "stop", "status"]
    assert set(complete("--")) == global_options
    assert complete("--defaults", "") == ["upstream", "debian"]
    assert complete("--defaults", "debian", "--lock-wait", "5", "try") == ["try-restart"]
    (tmp_path / "config.env").touch()
    assert complete("--config", str(tmp_path / "con")) == [str(tmp_path / "config.env")]
    assert complete("check-config", str(tmp_path / "con")) == [str(tmp_path / "config.env")]
    # options are accepted anywhere, so they are offered anywhere
    assert set(complete("check-config", "--")) == global_options
    assert set(complete("status", "--")) == global_options
    assert complete("status", "--defaults", "") == ["upstream", "debian"]
    assert complete("plan", "--json", "") == ["stop", "start"]
    assert complete("plan", "") == ["stop", "start"]
    assert complete("status", "") == []
    assert complete("start", "") == []
    policy_options = {"--" + a.name.replace("_", "-") for a in policy.ATTRIBUTES} | {"--uri", "--clear"}
    assert set(complete("policy", "vm1", "--")) == policy_options | global_options
    assert complete("policy", "vm1", "--on-boot", "") == ["start", "ignore"]
    assert complete("policy", "vm1", "--skip", "") == ["yes", "no"]
    assert complete("policy", "vm1", "--on-shutdown", "s") == ["suspend", "shutdown"]
    assert complete("policy", "vm1", "") == []  # one guest only


def test_completion_offers_guest_names_after_policy(tmp_path: Path) -> None:
    """Names come from libvirt-guests itself, from the URI policy would use: the test driver's one guest, 'test'."""
    config = tmp_path / "config"
    config.write_text("URIS=test:///default\n")
    env = {**os.environ, "PATH": f"{Path(tool()).parent}:{SYSTEM_PATH}", "LIBVIRT_GUESTS_CONFIG": str(config)}
    assert complete("policy", "", env=env) == ["test"]
    assert complete("policy", "t", env=env) == ["test"]
    assert complete("policy", "--order", "3", "", env=env) == ["test"]
    assert complete("policy", "x", env=env) == []
    config.write_text("URIS=qemu+unix:///system?socket=/nonexistent\n")
    assert complete("policy", "", env=env) == []  # unreachable: nothing, and nothing on stderr
    assert complete("policy", "--uri", "test:///default", "", env=env) == ["test"]
    assert complete("--config", str(tmp_path / "none"), "policy", "--uri", "test:///default", "", env=env) == ["test"]


# --- Debian package ----------------------------------------------------------------------------------------------


def test_debian_changelog_has_the_project_version() -> None:
    first = (PACKAGING / "debian" / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"{DEB_PACKAGE} ({VERSION}) ")


def test_deb_takes_over_the_original_script_and_gives_it_back(tmp_path: Path) -> None:
    need("dpkg-buildpackage", "dh", "dpkg-divert", "man")
    assert os.geteuid() == 0, "installing the .deb needs root"
    assert ORIGINAL.exists(), "libvirt-daemon-system is not installed"
    before = {path: sha256(path) for path in DIVERTED if path.exists()}
    assert not our_diversions()
    assert not Path("/usr/bin/libvirt-guests").exists(), "/usr/bin/libvirt-guests would be overwritten"

    deb = build_deb(tmp_path)
    contents = run("dpkg-deb", "--contents", deb).stdout
    for path in ("./usr/bin/libvirt-guests", f".{ORIGINAL}", "./usr/share/man/man8/libvirt-guests.8.gz",
                 "./usr/share/bash-completion/completions/libvirt-guests"):
        assert re.search(rf" {re.escape(path)}$", contents, re.M), path

    # state in which ours must answer differently from the original, which
    # ignores LIBVIRT_GUESTS_* and reads the host's /var/lib/libvirt, /var/lock
    state = tmp_path / "state"
    state.mkdir()
    env = state_env(state)
    original = run(ORIGINAL, "status", check=False, env=env)
    if original.stdout != "started\n":
        (state / "lock").touch()
    expected = ("stopped, with no saved guests\n", 3) if original.stdout == "started\n" else ("started\n", 0)

    try:
        run("dpkg", "-i", deb)
        assert len(our_diversions()) == len(DIVERTED)
        for path, sha in before.items():
            assert sha256(DIVERTED[path]) == sha, f"{path} was not moved aside intact"
        shim = run(ORIGINAL, "status", check=False, env=env)
        assert (shim.stdout, shim.returncode) == expected
        assert (shim.stdout, shim.returncode) != (original.stdout, original.returncode)
        installed = run("/usr/bin/libvirt-guests", "status", check=False, env=env)
        assert (installed.stdout, installed.returncode) == expected
        # libvirt-daemon-system's unit runs the shim: Debian's defaults
        shim_config = json.loads(run(ORIGINAL, "check-config", "--json", env=env).stdout)
        assert shim_config["defaults"] == "debian"
        assert shim_config["settings"]["ON_BOOT"]["value"] == "ignore"
        assert shim_config["settings"]["ON_SHUTDOWN"]["value"] == "shutdown"
        # ... and so does the command run by hand (issue 14 item 1): the package built Debian's defaults in
        by_hand = {k: v for k, v in env.items() if k != "LIBVIRT_GUESTS_DEFAULTS"}
        for command in (["/usr/bin/libvirt-guests"], [ORIGINAL], ["sh", "/etc/init.d/libvirt-guests"]):
            if not Path(command[-1]).exists():
                continue
            config = json.loads(run(*command, "check-config", "--json", env=by_hand).stdout)
            assert (config["defaults"], config["settings"]["ON_SHUTDOWN"]["value"]) == ("debian", "shutdown"), command
            assert config["settings"]["ON_BOOT"]["value"] == "ignore", command
        stock = json.loads(run("/usr/bin/libvirt-guests", "--config", "/etc/default/libvirt-guests", "check-config",
                               "--json", env=by_hand).stdout)
        assert (stock["defaults"], stock["settings"]["ON_SHUTDOWN"]["value"]) == ("debian", "shutdown")
        Path(env["LIBVIRT_GUESTS_CONFIG"]).write_text("URIS=test:///default\n")
        plan = json.loads(run("/usr/bin/libvirt-guests", "plan", "stop", "--json", env=by_hand).stdout)
        assert (plan["defaults"], plan["defaults_from"]) == ("debian", "package")
        assert [e["actions"] for g in plan["uris"][0]["groups"] for e in g] == [["shutdown"]]  # the driver's 'test'
        assert "test: shutdown" in run("/usr/bin/libvirt-guests", "plan", "stop", env=by_hand).stdout
        helptext = run("/usr/bin/libvirt-guests", "--help", env=by_hand).stdout
        assert "Defaults in force: debian (chosen by the Debian package" in helptext
        assert "ON_SHUTDOWN        default 'shutdown' (upstream: 'suspend')" in helptext
        # the other set stays one option away
        upstream = json.loads(run("/usr/bin/libvirt-guests", "--defaults", "upstream", "check-config", "--json",
                                  env=by_hand).stdout)
        assert (upstream["defaults"], upstream["settings"]["ON_SHUTDOWN"]["value"]) == ("upstream", "suspend")
        page = Path(run("man", "-w", "libvirt-guests", env=SERVICE_ENV).stdout.strip())
        page_text = gzip.decompress(page.read_bytes()).decode()
        assert page_text == run("/usr/bin/libvirt-guests", "man", env=by_hand).stdout
        assert "Defaults of this copy: debian (chosen by the Debian package when it was built)" in page_text
        assert "BENCHMARKS" not in page_text
        completion = Path("/usr/share/bash-completion/completions/libvirt-guests")
        assert completion.read_text() == COMPLETION.read_text()
        run("dpkg", "--purge", DEB_PACKAGE)  # its own postrm must undo the diversions
    finally:
        purge_and_restore()

    assert run("dpkg-query", "-W", DEB_PACKAGE, check=False).returncode == 1, "not purged"
    assert not our_diversions()
    assert not Path("/usr/bin/libvirt-guests").exists()
    assert {path: sha256(path) for path in DIVERTED if path.exists()} == before
    assert not any(diverted.exists() for diverted in DIVERTED.values())


# --- rpm ---------------------------------------------------------------------------------------------------------


def tar_text(tar: tarfile.TarFile, path: str) -> str:
    member = tar.extractfile(f".{path}")
    assert member, f"{path} is not a file"
    return member.read().decode()


def test_rpm_builds_with_the_tool_unit_and_man_page(tmp_path: Path) -> None:
    need("rpmbuild", "rpm", "rpm2archive")
    assert re.search(rf"^Version:\s+{re.escape(VERSION)}$", SPEC.read_text(), re.M)
    (tmp_path / "SOURCES").mkdir()
    source = copy_source(tmp_path / f"libvirt-guests-{VERSION}")
    with tarfile.open(tmp_path / "SOURCES" / f"libvirt-guests-{VERSION}.tar.gz", "w:gz") as tar:
        tar.add(source, arcname=source.name)
    env = {"PATH": SYSTEM_PATH, "HOME": str(tmp_path)}  # Debian's rpm keeps a database in ~/.rpmdb
    run("rpmbuild", "-bb", "--nodeps", "--define", f"_topdir {tmp_path}", SPEC, env=env)
    rpm = tmp_path / "RPMS" / "noarch" / f"libvirt-guests-{VERSION}-1.noarch.rpm"

    files = run("rpm", "-qlp", rpm, env=env).stdout.splitlines()
    assert "/usr/bin/libvirt-guests" in files
    assert "/usr/lib/systemd/system/libvirt-guests.service" in files
    assert any(re.fullmatch(r"/usr/share/man/man8/libvirt-guests\.8(\.gz)?", f) for f in files)
    assert "/usr/share/bash-completion/completions/libvirt-guests" in files
    assert any(f.endswith("/site-packages/libvirt_guests/cli/main.py") for f in files)

    run("rpm2archive", rpm, env=env)  # writes <rpm>.tgz
    with tarfile.open(f"{rpm}.tgz") as tar:
        unit, script = (tar_text(tar, name) for name in ("/usr/lib/systemd/system/libvirt-guests.service",
                                                         "/usr/bin/libvirt-guests"))
    entries = unit_entries(unit)
    assert entries["EnvironmentFile"] == ["-/etc/sysconfig/libvirt-guests"]
    assert "Environment" not in entries  # upstream defaults
    # otherwise the same unit
    debian = {**entries, "EnvironmentFile": DEBIAN_UNIT["EnvironmentFile"],
              "Environment": ["LIBVIRT_GUESTS_DEFAULTS=debian"]}
    assert debian == unit_entries(UNIT.read_text())
    assert script.startswith("#!/usr/bin/python3\n") and "libvirt_guests.cli" in script
