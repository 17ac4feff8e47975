"""What the everyday commands import: start-up time is most of what a user waits for.

Each check runs in a fresh interpreter, so modules other tests loaded do not count.
docker-py and requests cost ~140 ms, pydantic ~150 ms and rich ~50 ms of start-up; the
engine layer reaches docker-py only through `docker/transport.py`, and only for remote
engines and streams.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import opencode_cloud

PACKAGE = Path(opencode_cloud.__file__).resolve().parent
TRANSPORT = PACKAGE / "docker" / "transport.py"
# Third-party packages only the transport may import.
TRANSPORT_ONLY = ("docker", "requests")


def imported_by_command(*argv: str, env: dict[str, str] | None = None, code: int = 0) -> set[str]:
    """Every module `occ ARGV...` imports, as the console script runs it (with `env`
    added to the environment, ending with exit code `code`).

    `python -X importtime` lists each import as it happens: the command ends with
    `os._exit`, so asking `sys.modules` at exit is not an option.
    """
    script = (
        "import sys\n"
        f"sys.argv = ['occ', *{list(argv)!r}]\n"
        "from opencode_cloud.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == code, proc.stderr
    modules = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "opencode_cloud" in modules, proc.stderr[-2000:]  # the listing was read
    return modules


def imported_by(code: str) -> set[str]:
    """`sys.modules` after running `code` in a fresh interpreter."""
    script = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def tops(modules: set[str], *names: str) -> list[str]:
    """The packages among `names` that `modules` holds (or any submodule of)."""
    return sorted({m.split(".")[0] for m in modules} & set(names))


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_and_help_import_nothing_heavy(argv: list[str]) -> None:
    modules = imported_by_command(*argv)
    assert tops(modules, "docker", "requests", "pydantic", "rich") == []


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["--json", "status"]])
def test_status_imports_no_click_nor_anything_heavy(argv: list[str], tmp_path: Path) -> None:
    """`occ status` as scripts and prompts call it takes the quick path (`cli/quick.py`):
    click (a third of its time), docker-py, requests, pydantic and rich stay out. It runs
    to its end here: no engine answers at this socket, and it says so."""
    modules = imported_by_command(
        *argv,
        env={"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock", "OCC_CONFIG_DIR": str(tmp_path)},
        code=4,  # DOCKER_UNAVAILABLE
    )
    assert "opencode_cloud.cli.status_report" in modules
    assert "opencode_cloud.docker.client" in modules  # it did ask an engine
    assert tops(modules, "click", *TRANSPORT_ONLY, "pydantic", "rich") == []
    assert "opencode_cloud.docker.swarm" not in modules  # the cluster's, not a status's


def test_status_with_options_of_its_own_goes_through_click(tmp_path: Path) -> None:
    modules = imported_by_command(
        "status",
        "--sizes",
        env={"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock", "OCC_CONFIG_DIR": str(tmp_path)},
        code=4,  # DOCKER_UNAVAILABLE
    )
    assert "opencode_cloud.cli.status_report" in modules and "click" in modules


def test_status_and_stop_paths_do_not_import_docker_py() -> None:
    """`occ status` and `occ stop` load the service and the engine client; speaking to a
    local engine needs neither docker-py nor requests."""
    modules = imported_by("import opencode_cloud.service.service, opencode_cloud.docker.client")
    assert {"opencode_cloud.service.service", "opencode_cloud.docker.client"} <= modules
    assert tops(modules, *TRANSPORT_ONLY) == []


def test_list_does_not_import_docker_py() -> None:
    """`occ list` asks every engine with the same light client as `occ status`."""
    modules = imported_by(
        "import opencode_cloud.inventory, opencode_cloud.team.team, opencode_cloud.service.service,"
        " opencode_cloud.docker.client, opencode_cloud.docker.ssh"
    )
    assert "opencode_cloud.inventory" in modules
    assert tops(modules, *TRANSPORT_ONLY) == []


def test_loading_the_configuration_imports_no_engine_code() -> None:
    modules = imported_by("import opencode_cloud.config.store")
    assert "opencode_cloud.config.store" in modules
    engine = sorted(
        m for m in modules if m == "opencode_cloud.docker" or m.startswith("opencode_cloud.docker.")
    )
    assert engine == []


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in `path`, wherever they are in the file
    (module level, inside functions, under TYPE_CHECKING), and of `import_module("x")`
    and `__import__("x")` calls with a literal name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value.split(".")[0])
    return names


def test_only_the_transport_imports_docker_py_or_requests() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert TRANSPORT in sources
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(_third_party_imports(path) & set(TRANSPORT_ONLY))
        for path in sources
        if path != TRANSPORT
    }
    assert {path: found for path, found in offenders.items() if found} == {}
    # The scan does see such imports: the transport has both.
    assert _third_party_imports(TRANSPORT) >= set(TRANSPORT_ONLY)


def test_the_scan_sees_every_form_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from __future__ import annotations\n"
        "import os.path\n"
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from docker.errors import APIError\n"
        "def f():\n"
        "    import requests.adapters as adapters\n"
        "    importlib.import_module('yaml')\n"
        "    return __import__('json5')\n"
    )
    assert _third_party_imports(sample) == {
        "__future__",
        "os",
        "typing",
        "docker",
        "requests",
        "yaml",
        "json5",
    }


def test_team_mode_is_told_without_importing_it() -> None:
    """Every command asks first whether the instance serves a team: the answer is one
    small file, not team mode's modules (about 60 ms of `occ status` otherwise)."""
    modules = imported_by("from opencode_cloud.team import team_enabled")
    ours = {m for m in modules if m.startswith("opencode_cloud.")}
    assert ours == {"opencode_cloud.team"}


def test_asking_opencode_over_http_loads_no_http_client() -> None:
    """`occ status` asks opencode twice over plain HTTP; `http.client` (with `email`)
    would cost more to import than both requests take."""
    modules = imported_by(
        "from opencode_cloud import opencode\n"
        "answer = opencode.probe('http://127.0.0.1:9/global/health', 'u', 'p', 0.5)\n"
        "assert answer.status is None, answer"  # nothing listens on the discard port
    )
    assert "opencode_cloud.http1" in modules
    assert {"http.client", "email", "ssl"} & modules == set()


def test_a_command_loads_the_module_of_no_other_command() -> None:
    modules = imported_by_command("--version")  # parses the group, runs no command
    assert not {m for m in modules if m.startswith("opencode_cloud.cli.commands.")}
    loaded = imported_by_command("config", "path")
    commands = {m for m in loaded if m.startswith("opencode_cloud.cli.commands.")}
    assert commands == {"opencode_cloud.cli.commands.config"}


def test_the_table_of_commands_names_each_command_where_it_is_defined() -> None:
    import importlib

    import click

    from opencode_cloud.cli.app import COMMANDS

    defined: dict[str, str] = {}
    for module_name, group in set(COMMANDS.values()):
        module = importlib.import_module(f"opencode_cloud.cli.commands.{module_name}")
        target = click.Group()
        if group is None:
            module.register(target)
        else:
            target.add_command(getattr(module, group))
        defined.update(dict.fromkeys(target.commands, module_name))
    assert defined == {name: module for name, (module, _) in COMMANDS.items()}
    modules = {p.stem for p in (PACKAGE / "cli" / "commands").glob("*.py")} - {"__init__"}
    assert modules == {module for module, _ in COMMANDS.values()}, "a module nobody loads"
