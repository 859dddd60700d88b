"""The layering ARCHITECTURE.md states (its "Layering" section; issue 20): no import circle between
the modules of libvirt_guests nor between its packages, and no package that
imports from a layer above its own.

Every import counts, wherever it is written: at the top of a module, inside
a function, or under `if TYPE_CHECKING:` (a type-only import is still a
dependency a reader must follow). The implicit import of a package's
`__init__` when one of its modules is imported is not counted: a package
that gathers its modules (stop/actions/__init__.py) would otherwise be in a
circle with each of them."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "libvirt_guests"

# From the bottom; a part imports only from the layers before its own (the
# parts of one layer do not import each other). A part is a subpackage
# (config, state, ...) or a module at the top of the package (output, ...);
# "libvirt_guests" is the package's own __init__ (its __version__).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("libvirt_guests", "output", "outcomes"),
    ("state",),
    ("virt",),
    ("config",),
    ("engine",),
    ("stop", "start"),
    ("reports",),
    ("cli",),
    ("__main__",),
)

# (importing part, imported part) pairs allowed against LAYERS, each with its
# one-line reason. Empty: keep it so.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module of the package, line) for every import the module
    makes, type-checking and function-level ones included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known_prefix(alias.name, known)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                target = f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else _known_prefix(source, known)
                if target:
                    yield target, node.lineno


def _known_prefix(dotted: str, known: dict[str, Path]) -> str | None:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def module_graph() -> dict[str, dict[str, str]]:
    """module -> {imported module: where ("path:line")}."""
    known = modules()
    graph: dict[str, dict[str, str]] = {name: {} for name in known}
    for name, path in known.items():
        for target, line in imports(name, path, known):
            if target != name:
                graph[name].setdefault(target, f"{path.relative_to(PACKAGE.parent)}:{line}")
    return graph


def part(module: str) -> str:
    """The package part a module belongs to: its subpackage, or itself at the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def part_graph(graph: dict[str, dict[str, str]]) -> dict[str, dict[str, list[str]]]:
    """part -> {imported part: the imports ("module -> module (path:line)") that make the edge}."""
    parts: dict[str, dict[str, list[str]]] = {part(name): {} for name in graph}
    for name, targets in graph.items():
        for target, where in targets.items():
            if part(target) != part(name):
                parts[part(name)].setdefault(part(target), []).append(f"{name} -> {target} ({where})")
    return parts


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer_of() -> dict[str, int]:
    return {name: rank for rank, layer in enumerate(LAYERS) for name in layer}


def test_the_reader_counts_every_kind_of_import(tmp_path: Path) -> None:
    """Top-level, relative, function-level and type-checking imports are all edges."""
    source = tmp_path / "example.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import libvirt_guests.output\n"
        "from libvirt_guests.state import journal\n"
        "from .. import engine\n"
        "from . import chains\n"
        "if TYPE_CHECKING:\n"
        "    from libvirt_guests.virt.hypervisor import Hypervisor\n"
        "def later():\n"
        "    from libvirt_guests.config.load import Config\n")
    found = {target for target, _line in imports("libvirt_guests.stop.example", source, modules())}
    assert found == {"libvirt_guests.output", "libvirt_guests.state.journal", "libvirt_guests.engine",
                     "libvirt_guests.stop.chains", "libvirt_guests.virt.hypervisor", "libvirt_guests.config.load"}


def test_the_graph_and_the_circles() -> None:
    graph = module_graph()
    assert "libvirt_guests.cli.main" in graph["libvirt_guests.cli"]  # a package's __init__ is a module
    assert "libvirt_guests" in graph["libvirt_guests.cli.main"]  # from libvirt_guests import __version__
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert part("libvirt_guests.stop.actions.base") == "stop" and part("libvirt_guests.output") == "output"


def test_no_import_circle_between_modules() -> None:
    graph = module_graph()
    found = cycles({name: set(targets) for name, targets in graph.items()})
    detail = [
        f"{' <-> '.join(component)}: "
        + "; ".join(f"{a} -> {b} ({graph[a][b]})" for a in component for b in component if b in graph[a])
        for component in found
    ]
    assert found == [], "import circles between modules:\n" + "\n".join(detail)


def test_no_import_circle_between_packages() -> None:
    parts = part_graph(module_graph())
    found = cycles({name: set(targets) for name, targets in parts.items()})
    detail = [
        f"{' <-> '.join(component)}: "
        + "; ".join(edge for a in component for b in component if b in parts[a] for edge in parts[a][b])
        for component in found
    ]
    assert found == [], "import circles between packages:\n" + "\n".join(detail)


def test_every_part_has_its_layer() -> None:
    known = {part(name) for name in modules()}
    assert known - set(layer_of()) == set(), "a new package or top-level module: give it its layer in LAYERS"
    assert set(layer_of()) - known == set(), "LAYERS names a part that is gone"


def test_no_import_against_the_layering() -> None:
    """A part imports only from the layers below its own, type-checking imports included."""
    rank = layer_of()
    parts = part_graph(module_graph())
    wrong = [
        edge
        for name, targets in sorted(parts.items())
        for target, edges in sorted(targets.items())
        if (name, target) not in EXCEPTIONS and rank.get(target, len(LAYERS)) >= rank.get(name, -1)
        for edge in edges
    ]
    assert wrong == [], "imports against the layering of ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_exceptions_are_still_needed() -> None:
    parts = part_graph(module_graph())
    stale = [pair for pair in EXCEPTIONS if pair[1] not in parts.get(pair[0], {})]
    assert stale == [], "an exception no import needs any more: remove it"
