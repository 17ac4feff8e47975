"""The layers, held against the code's own imports (docs/architecture.md draws them).

Every import points down: a module imports from its own part (`docker/`, `service/`,
...) or from a part of a lower layer, never from its own layer's other parts or from
above; and no modules import each other in a circle, lazily or for types either. The
programs that run elsewhere (in the image, in a helper container) import nothing of the
package.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from import_graph import PACKAGE, cycles, graph, imports_in, modules, part_of

# Lowest first. The parts of one layer know nothing of each other.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("__init__", "errors", "defaults", "interrupts", "http1")),
    ("what opencode is", ("opencode",)),
    ("names and rules", ("instance", "mounts", "locking")),
    ("the files and the engine", ("config", "docker")),
    ("reaching an instance", ("access", "hosts", "runtime")),
    ("operations", ("service",)),
    ("operations on a service", ("backup", "doctor", "providers")),
    ("a team of services", ("team",)),
    ("every instance, a team on a cluster", ("inventory", "kubernetes")),
    ("the command line", ("cli",)),
    ("the entry point", ("__main__",)),
)
# Run elsewhere, from their source alone: the image's programs, and what a backup helper
# container runs.
STANDALONE = ("sandbox", "backup.program")

RANK = {part: rank for rank, (_name, parts) in enumerate(LAYERS) for part in parts}


def _standalone(module: str) -> bool:
    relative = module.removeprefix("opencode_cloud.")
    return any(relative == s or relative.startswith(s + ".") for s in STANDALONE)


def upward_edges(edges: dict[str, set[str]]) -> list[str]:
    """Each import from a part to another part of its own layer or of a higher one."""
    found = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            mine, theirs = part_of(source), part_of(target)
            if mine != theirs and RANK[theirs] >= RANK[mine]:
                found.append(f"{source} -> {target}")
    return found


def test_every_part_has_a_layer() -> None:
    parts = {part_of(name) for name in modules() if not _standalone(name)}
    assert parts - set(RANK) == set(), "give each new part a layer in LAYERS"
    assert set(RANK) - parts == set(), "a part named in LAYERS is gone"


def test_every_import_points_down() -> None:
    edges = {name: targets for name, targets in graph().items() if not _standalone(name)}
    assert upward_edges(edges) == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize("name", STANDALONE)
def test_programs_that_run_elsewhere_import_nothing_of_the_package(name: str) -> None:
    paths = [path for module, path in modules().items() if _standalone(module)]
    paths = [p for p in paths if name.replace(".", "/") in p.relative_to(PACKAGE).as_posix()]
    assert paths
    assert [item for path in paths for item in imports_in(path)] == []


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import opencode_cloud.docker.client\n"
        "from opencode_cloud import defaults\n"
        "from opencode_cloud.service.service import Service\n"
        "if TYPE_CHECKING:\n"
        "    from opencode_cloud.cli.context import AppContext\n"
        "def later():\n"
        "    from opencode_cloud.backup import errors\n"
    )
    found = {(item.target, item.names) for item in imports_in(sample)}
    assert found == {
        ("opencode_cloud.docker.client", ()),
        ("opencode_cloud.defaults", ("defaults",)),
        ("opencode_cloud.service.service", ("Service",)),
        ("opencode_cloud.cli.context", ("AppContext",)),
        ("opencode_cloud.backup.errors", ("errors",)),
    }
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    edges = {
        "opencode_cloud.docker.client": {"opencode_cloud.service.service"},
        "opencode_cloud.docker.volume": {"opencode_cloud.config.paths"},
        "opencode_cloud.cli.app": {"opencode_cloud.docker.errors", "opencode_cloud.cli.output"},
    }
    assert upward_edges(edges) == [
        "opencode_cloud.docker.client -> opencode_cloud.service.service",
        "opencode_cloud.docker.volume -> opencode_cloud.config.paths",
    ]
