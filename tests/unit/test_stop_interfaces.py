"""Issue 20 stage 2, the stop side: an action sees only its ActionScope (no
module of stop/actions imports the chains, the OffWatch or the run, not
even for type checking), stop/ has no import circle and imports nothing of
start/, and the code asks an action's traits: the words are
config.settings.ACTIONS, each cap is a typed function of the Config."""

from __future__ import annotations

import ast
from pathlib import Path

from libvirt_guests.config import settings
from libvirt_guests.config.load import Paths, load
from libvirt_guests.stop.actions import ACTIONS

PACKAGE = Path(__file__).resolve().parents[2] / "libvirt_guests"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module path imports, wherever the import is (TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("libvirt_guests.")}


def _stop_graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in (PACKAGE / "stop").rglob("*.py")}
    return {name: {i for i in _imports(path) if i in modules and i != name} for name, path in modules.items()}


def test_no_action_module_imports_the_chains_the_offwatch_or_the_run() -> None:
    for path in (PACKAGE / "stop" / "actions").rglob("*.py"):
        bad = {i for i in _imports(path)
               if i.split(".")[:3] in (["libvirt_guests", "stop", m] for m in ("chains", "offwatch", "run"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_stop_imports_nothing_of_start() -> None:
    for path in (PACKAGE / "stop").rglob("*.py"):
        assert not {i for i in _imports(path) if i.startswith("libvirt_guests.start")}, path


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of graph, as the path around it; None if none."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name):], name]
        if name in done:
            return None
        for other in sorted(graph.get(name, ())):
            if (circle := visit(other, [*path, name])) is not None:
                return circle
        done.add(name)
        return None

    for name in sorted(graph):
        if (circle := visit(name, [])) is not None:
            return circle
    return None


def test_no_import_circle_inside_stop() -> None:
    assert _circle(_stop_graph()) is None


def test_the_circle_check_sees_a_circle() -> None:
    """The check itself, on the old reach-through: actions -> chains -> offwatch -> run -> chains."""
    graph = {"actions": {"chains"}, "chains": {"offwatch"}, "offwatch": {"run"}, "run": {"chains"}, "plan": set()}
    assert _circle(graph) == ["chains", "offwatch", "run", "chains"]
    assert _circle({"a": {"b"}, "b": set()}) is None


def test_the_actions_words_are_the_settings_words() -> None:
    assert tuple(ACTIONS) == settings.ACTIONS


def test_each_cap_is_a_setting_of_the_config(tmp_path: Path) -> None:
    config = load(Paths.resolve(config=str(tmp_path / "none"), environ={}), environ={})
    caps = {word: unit.cap(config) for word, unit in ACTIONS.items()}
    assert caps == {"migrate": config.parallel_migrate, "suspend": config.parallel_save,
                    "shutdown": config.parallel_shutdown, "poweroff": None}
    assert [word for word, unit in ACTIONS.items() if unit.saves] == ["suspend"]
    assert [word for word, unit in ACTIONS.items() if unit.moves] == ["migrate"]
    assert [word for word, unit in ACTIONS.items() if unit.waits_off] == ["shutdown"]
