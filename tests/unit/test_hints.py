"""The `Hint:` line of each error, written by the command line from the error's data; the
engine layer names no command."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click
import pytest

from opencode_cloud.cli.app import app
from opencode_cloud.cli.hints import START_ENGINE, details_for, hint_for
from opencode_cloud.docker import errors as engine
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import DEFAULT, Instance, command_prefix
from opencode_cloud.service.errors import NeverCreated, NotRunning

WORK = Instance("work")
SANDBOX = "opencode-cloud-sandbox:1.18.33"
DOCKER_PACKAGE = Path(engine.__file__).parent


def _exited(log_tail: list[str]) -> engine.ContainerExited:
    return engine.ContainerExited("opencode-cloud", 1, restarting=False, log_tail=log_tail)


def _timeout(*, refused: bool) -> engine.HealthTimeout:
    return engine.HealthTimeout("opencode-cloud", 5, "HTTP 401", refused=refused, log_tail=["x"])


# (error, a text its hint for the default instance holds)
CASES: list[tuple[OpencodeCloudError, str]] = [
    (NeverCreated(DEFAULT), "Start it with `occ start`."),
    (NotRunning(DEFAULT), "Start it with `occ start`."),
    (engine.DockerNotInstalled("unix:///var/run/docker.sock"), "docs.docker.com/engine/install"),
    (engine.DaemonNotRunning("unix:///var/run/docker.sock"), START_ENGINE),
    (engine.DaemonNotRunning("tcp://10.0.0.5:2375"), "an engine runs at tcp://10.0.0.5:2375"),
    (engine.DockerPermissionDenied("unix:///var/run/docker.sock"), "usermod -aG docker"),
    (engine.EngineTooOld("unix:///var/run/docker.sock", "1.26", "1.40"), "Upgrade Docker"),
    (engine.ContainerAlreadyExists("opencode-cloud"), "`docker rm -f opencode-cloud`"),
    (engine.ContainerNotFound("opencode-cloud"), "Create and start it with `occ start`."),
    (engine.ContainerRunning("opencode-cloud"), "Stop it first with `occ stop`."),
    (engine.ImageNotFound(SANDBOX), "Build it with `occ build`, or pull it with `occ pull`."),
    (engine.ImageNotFound("registry.example.com/team/sb:1"), "`occ config unset image`"),
    (engine.PortInUse(3000), "`occ start --port 3001`"),
    (
        engine.VolumeInUse("opencode-cloud-home", ["opencode-cloud", "b"]),
        "docker rm -f opencode-cloud`",
    ),
    (engine.MissingPath("opencode-cloud", "/run/x/password", "/run/x"), "(`occ build`)"),
    (engine.PullFailed(SANDBOX), "`occ config set registries ghcr.io/OWNER`"),
    (engine.PullFailed(SANDBOX, ["ghcr.io/acme: denied"]), "Check the registry addresses"),
    (_exited(["boom"]), "See the full logs with `occ logs`, fix the cause, then start again."),
    (_timeout(refused=True), "`occ auth rotate`"),
    (_timeout(refused=False), "See the full logs with `occ logs`"),
    (
        engine.BuildFailed("b", cause="base-image", instruction="FROM debian:bookworm-slim"),
        "The base image of `FROM debian:bookworm-slim`",
    ),
    (engine.BuildFailed("b", cause="certificate"), "--ca-file"),
    (engine.BuildFailed("b", output_tail=["E: x", "E: y"]), "run `occ build` again"),
    (engine.InvalidCertificate("/tmp/a", "p", unreadable=True), "Name an existing PEM file"),
    (engine.InvalidCertificate("/tmp/c.der", "p", unreadable=False), "-out c.crt"),
]


@pytest.mark.parametrize(("error", "expected"), CASES, ids=lambda v: type(v).__name__)
def test_each_error_gets_its_hint(error: OpencodeCloudError, expected: str) -> None:
    assert expected in hint_for(error, "occ")


def test_a_port_of_unknown_number_suggests_no_other() -> None:
    hint = hint_for(engine.PortInUse(None), "occ")
    assert hint == "Stop what listens there, or choose another port."


def test_no_logs_no_log_lines() -> None:
    assert hint_for(_exited([]), "occ") == (
        "See the full logs with `occ logs`, fix the cause, then start again."
    )
    assert details_for(_exited([])) == []


def test_log_and_build_lines_are_details_shown_above_the_error() -> None:
    assert details_for(_exited(["boom", "bang"])) == ["Last log lines:", "  boom", "  bang"]
    assert details_for(_timeout(refused=False)) == ["Last log lines:", "  x"]
    build = engine.BuildFailed("b", output_tail=["E: x", "E: y"])
    assert details_for(build) == ["Last build output:", "  E: x", "  E: y"]
    assert details_for(engine.PortInUse(3000)) == []


def test_an_error_that_brings_its_hint_keeps_it() -> None:
    error = engine.PortInUse(3000)
    error.hint = "Use the other one."
    assert hint_for(error, "occ") == "Use the other one."


def test_an_error_without_advice_gets_no_hint() -> None:
    assert hint_for(engine.DockerError("Docker engine error: disk full"), "occ") == ""


def _commands(hint: str) -> list[str]:
    return re.findall(r"`(occ(?: [^`]*)?)`", hint)


def _certificate_cause(error: OpencodeCloudError) -> bool:
    return isinstance(error, engine.BuildFailed) and error.cause == "certificate"


@pytest.mark.parametrize(
    "error",
    [e for e, _ in CASES if _commands(hint_for(e, "occ")) and not _certificate_cause(e)],
    ids=lambda v: type(v).__name__,
)
def test_a_named_instance_is_named_in_every_command(error: OpencodeCloudError) -> None:
    commands = _commands(hint_for(error, command_prefix(WORK)))
    assert commands
    assert all(c.startswith("occ --instance work ") for c in commands), commands


def test_the_certificate_hint_names_a_named_instance() -> None:
    hint = hint_for(engine.BuildFailed("b", cause="certificate"), command_prefix(WORK))
    assert _commands(hint)
    assert all(c.startswith("occ --instance work ") for c in _commands(hint))


def _resolve(command: str) -> None:
    """Fail unless `command` (as a hint writes it) names commands and options that exist."""
    words = shlex.split(command)[1:]
    current: click.Command = app
    params = {o for p in app.params for o in p.opts}
    while words:
        word = words.pop(0)
        if word.startswith("-"):
            assert word.split("=", 1)[0] in params, f"{command}: no option {word}"
            if word in ("--instance", "--host"):
                words.pop(0)
        elif isinstance(current, click.Group):
            sub = current.get_command(click.Context(current), word)
            assert sub is not None, f"{command}: no command {word}"
            current = sub
            params = {o for p in sub.params for o in p.opts}


@pytest.mark.parametrize(
    "occ",
    [command_prefix(DEFAULT), command_prefix(WORK), command_prefix(WORK, "cloud")],
    ids=["default", "work", "remote"],
)
def test_every_command_in_a_hint_exists(occ: str) -> None:
    commands = [c for error, _ in CASES for c in _commands(hint_for(error, occ))]
    assert len(commands) > 10
    for command in commands:
        _resolve(command)


def _literals(tree: ast.AST) -> list[str]:
    """String literals, without docstrings (they document, they are never shown)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def _cli_flags(command: click.Command) -> set[str]:
    flags = {o for p in command.params for o in p.opts if o.startswith("--")}
    if isinstance(command, click.Group):
        for name in command.list_commands(click.Context(command)):
            sub = command.get_command(click.Context(command), name)
            flags |= _cli_flags(sub) if sub else set()
    return flags - {"--help"}


def _names_the_cli(text: str, flags: set[str]) -> bool:
    words = set(re.findall(r"--[a-z][a-z-]*", text))
    return bool(re.search(r"`occ\b|\bocc [a-z]", text) or words & flags)


def test_the_engine_layer_names_no_command_line() -> None:
    flags = _cli_flags(app)
    assert {"--instance", "--port", "--ca-file"} <= flags
    modules = sorted(DOCKER_PACKAGE.glob("*.py"))
    assert len(modules) > 5
    offenders = [
        (module.name, text)
        for module in modules
        for text in _literals(ast.parse(module.read_text()))
        if _names_the_cli(text, flags)
    ]
    assert offenders == []


def test_the_scan_finds_a_command_in_a_message() -> None:
    tree = ast.parse(
        'def f():\n    """Run `occ start`."""\n    raise E(f"Run `occ start` on {x}")\n'
    )
    assert _literals(tree) == ["Run `occ start` on "]
    flags = _cli_flags(app)
    assert _names_the_cli("Run `occ start` on ", flags)
    assert _names_the_cli("retry with --port 3001", flags)
    assert not _names_the_cli("tools installed with npm install --global", flags)


@pytest.mark.parametrize(
    ("occ", "expected"),
    [
        (command_prefix(DEFAULT), "`occ --instance NAME backup`"),
        (command_prefix(WORK, "cloud"), "`occ --host cloud --instance NAME backup`"),
    ],
)
def test_nothing_to_back_up_points_at_another_instance_of_the_same_host(
    occ: str, expected: str
) -> None:
    from opencode_cloud.backup.errors import NothingToBackUp

    assert expected in hint_for(NothingToBackUp(WORK), occ)
