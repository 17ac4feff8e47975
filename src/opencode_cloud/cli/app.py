"""The click application: global options, command registration, and the one error boundary.

Every failure a user can cause or meet ends here as `Error: ...` / `Hint: ...` on stderr
and a named exit code; tracebacks only with --debug.
"""

from __future__ import annotations

import sys

import click

from opencode_cloud import __version__
from opencode_cloud.cli import completion_values as complete
from opencode_cloud.cli.context import HOST_ENVVAR, INSTANCE_ENVVAR, AppContext
from opencode_cloud.cli.failures import interrupted, report_failure
from opencode_cloud.cli.group import LazyGroup
from opencode_cloud.cli.output import ExitCode, Output
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import DEFAULT

_STATE: dict[str, AppContext] = {}


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        print(f"opencode-cloud {__version__}")
        ctx.exit()


# Each command, in the order help lists them: the module that defines it, and the
# attribute holding its group (None: the module's `register` adds it). Imported when used.
COMMANDS: dict[str, tuple[str, str | None]] = {
    "setup": ("setup", None),
    **dict.fromkeys(("start", "stop", "restart"), ("lifecycle", None)),
    "status": ("status", None),
    "list": ("inventory", None),
    "doctor": ("doctor", None),
    "logs": ("logs", None),
    "shell": ("shell", None),
    **dict.fromkeys(("update", "rollback"), ("update", None)),
    **dict.fromkeys(("build", "pull"), ("image", None)),
    **dict.fromkeys(("backup", "restore", "uninstall"), ("backup", None)),
    **dict.fromkeys(("host", "tunnel", "open"), ("host", None)),
    **dict.fromkeys(("team", "user"), ("team", None)),
    **dict.fromkeys(("cluster", "node"), ("cluster", None)),
    "kubernetes": ("kubernetes", "kubernetes_group"),
    "config": ("config", "config_group"),
    "mount": ("mount", "mount_group"),
    "provider": ("provider", "provider_group"),
    "auth": ("auth", "auth_group"),
    "completion": ("completion", "completion"),
}


@click.group(
    name="occ",
    cls=LazyGroup,
    lazy=COMMANDS,
    help="Run opencode as a persistent, secure service in a Docker container.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--instance",
    envvar=INSTANCE_ENVVAR,
    default=DEFAULT.name,
    show_default=True,
    show_envvar=True,
    shell_complete=complete.instance_names,
    help="Which instance to act on (lower case, digits, dashes).",
)
@click.option(
    "--host",
    "host_name",
    envvar=HOST_ENVVAR,
    show_envvar=True,
    shell_complete=complete.host_names,
    help="Act on a remote host added with `occ host add` (`local`: this machine).",
)
@click.option("--json", "json_output", is_flag=True, help="Print results as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and results.")
@click.option("-v", "--verbose", is_flag=True, help="More detail.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the version.",
)
@click.pass_context
def app(
    ctx: click.Context,
    instance: str,
    host_name: str | None,
    json_output: bool,
    quiet: bool,
    verbose: bool,
    debug: bool,
) -> None:
    """The global options: they build the AppContext every command receives."""
    ctx.obj = _STATE["app"] = AppContext.from_options(
        instance, host_name, json_output=json_output, quiet=quiet, verbose=verbose, debug=debug
    )


# Global flags may also follow the command (`occ status --json`, `occ stop -q`).
_GLOBAL_FLAGS = frozenset({"--json", "-q", "--quiet", "-v", "--verbose", "--debug"})
_GLOBAL_WITH_VALUE = frozenset({"--instance", "--host"})


def _passes_arguments_through(command: click.Command) -> bool:
    """A command that hands the rest of its line to another program (`occ shell grep -v
    x`): nothing after its name is an option of `occ`."""
    return any(
        isinstance(param, click.Argument) and param.type is click.UNPROCESSED
        for param in command.params
    )


def hoist_global_options(args: list[str], group: click.Group | None = None) -> list[str]:
    """Move global options found after the command to the front, where click expects them.

    Nothing after `--` moves, nor anything after the name of a command that passes its
    arguments through (`shell`); option values (`occ config set KEY --json`) are not
    options of their own, so only a flag in an option position is hoisted.
    """
    command: click.Command | None = app if group is None else group
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        if arg in _GLOBAL_FLAGS:
            front.append(arg)
        elif arg in _GLOBAL_WITH_VALUE and index + 1 < len(args):
            front.extend(args[index : index + 2])
            index += 1
        elif arg.split("=", 1)[0] in _GLOBAL_WITH_VALUE:
            front.append(arg)
        else:
            rest.append(arg)
            if isinstance(command, click.Group) and not arg.startswith("-"):
                # get_command, not the commands dict: the top group loads them when asked.
                command = command.get_command(click.Context(command), arg)
                if command is not None and _passes_arguments_through(command):
                    rest.extend(args[index + 1 :])
                    break
        index += 1
    return front + rest


def _json_requested(args: list[str]) -> bool:
    """Whether `--json` is among the global options at the front of hoisted `args`."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--json":
            return True
        if arg in _GLOBAL_WITH_VALUE:
            index += 2
        elif arg in _GLOBAL_FLAGS or arg.split("=", 1)[0] in _GLOBAL_WITH_VALUE:
            index += 1
        else:
            return False
    return False


def _usage_error(error: click.ClickException, json_output: bool) -> int:
    """A bad command line: click's usage line and error on stderr, and with --json the
    same error as an object on stdout, as every other error gives."""
    error.show()
    if json_output:
        from opencode_cloud.cli.hints import usage_hint

        ctx = getattr(error, "ctx", None)
        if isinstance(error, click.exceptions.NoArgsIsHelpError):
            message = "Missing command."
        else:
            message = error.format_message()
        Output(json=True).emit_json(
            {
                "error": message,
                "hint": usage_hint(ctx.command_path if ctx else "occ"),
                "details": [],
            }
        )
    return int(error.exit_code)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the error boundary)."""
    args = hoist_global_options(sys.argv[1:] if argv is None else argv)
    _STATE.clear()
    try:
        # standalone_mode=False: click returns the code of `ctx.exit()` / `Exit` and
        # raises everything else, so the handling below is the only one.
        result = app.main(args=args, prog_name="occ", standalone_mode=False)
        return int(result) if isinstance(result, int) else ExitCode.OK
    except OpencodeCloudError as error:
        return report_failure(error, _STATE.get("app"), _json_requested(args))
    except (click.exceptions.Abort, KeyboardInterrupt):
        return interrupted()
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as error:  # usage errors: printed with the usage line
        return _usage_error(error, _json_requested(args))
    finally:
        if "app" in _STATE:
            _STATE["app"].close()
