"""`occ host add|list|remove|test|default` (remote hosts) and `occ tunnel`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from opencode_cloud.cli import completion_values as complete
from opencode_cloud.cli.group import OrderedGroup

if TYPE_CHECKING:
    from opencode_cloud.cli.context import AppContext


@click.group("host", cls=OrderedGroup, no_args_is_help=True)
def host_group() -> None:
    """Remote hosts that run instances, reached over SSH (`--host NAME` picks one)."""


def _describe_test(data: dict[str, Any]) -> list[str]:
    instances = ", ".join(data["instances"]) or "none yet"
    return [
        f"{data['host']} ({data['address']}): Docker {data['engine']} on {data['os']}, "
        f"{data['cpus']} CPUs; connected in {data['connect_seconds']:.2f} s.",
        f"  Instances there: {instances}",
    ]


@host_group.command("add")
@click.argument("name")
@click.argument("address")
@click.option("--socket", "socket_path", help="The engine's socket there (/var/run/docker.sock).")
@click.option("--default", "make_default", is_flag=True, help="Use it when --host is not given.")
@click.option("--no-test", is_flag=True, help="Save it without connecting first.")
@click.pass_obj
def add(
    app_ctx: AppContext,
    name: str,
    address: str,
    socket_path: str | None,
    make_default: bool,
    no_test: bool,
) -> None:
    """Add a host: `ssh://[user@]host[:port]` or a Docker context with an ssh endpoint.

    It connects first (the system `ssh`, so ~/.ssh/config, agents and known_hosts apply)
    and is saved only when its Docker engine answers.

    Examples: occ host add cloud ssh://me@vm.example.com | occ host add box myalias --default
    """
    from opencode_cloud.hosts import Host, HostError, HostList, describe_host, validate_host_name

    validate_host_name(name)
    hosts = HostList.load()
    if name in hosts.hosts:
        raise HostError(
            f"A host named {name!r} exists already ({hosts.hosts[name].address}).",
            f"Remove it first with `occ host remove {name}`, or choose another name.",
        )
    if socket_path is not None and not socket_path.startswith("/"):
        raise click.BadParameter("must be an absolute path", param_hint="--socket")
    if not address.startswith("ssh://") and "://" in address:
        raise HostError(
            f"{address!r}: a host is reached over SSH.",
            "Give ssh://[user@]host[:port], or the name of a Docker context.",
        )
    host = Host(name, address, socket_path)
    host.target()  # a bad address or an unknown context fails here, before any saving
    tested = None if no_test else describe_host(host)
    hosts.hosts[name] = host
    if make_default:
        hosts.default = name
    hosts.save()
    data: dict[str, Any] = {"added": name, **host.to_json(), "default": hosts.default == name}
    if tested:
        data["test"] = tested

    def human() -> list[str]:
        lines = [f"Added host {name} ({address})."]
        lines += _describe_test(tested) if tested else []
        if hosts.default == name:
            lines.append("Commands use it by default now (`occ host default local` undoes it).")
        else:
            lines.append(f"Use it with `occ --host {name} start`.")
        return lines

    app_ctx.out.result(data, human)


@host_group.command("list")
@click.pass_obj
def list_hosts(app_ctx: AppContext) -> None:
    """The saved hosts; `*` marks the default."""
    from opencode_cloud.hosts import LOCAL, HostList

    hosts = HostList.load()
    entries = [
        {"name": name, **host.to_json(), "default": name == hosts.default}
        for name, host in sorted(hosts.hosts.items())
    ]
    data = {"default": hosts.default or LOCAL, "hosts": entries}

    def human() -> list[str]:
        lines = [f"{'*' if hosts.default is None else ' '} {LOCAL:<16} this machine"]
        for entry in entries:
            mark = "*" if entry["default"] else " "
            socket = f"  (socket {entry['socket']})" if entry.get("socket") else ""
            lines.append(f"{mark} {entry['name']:<16} {entry['address']}{socket}")
        return lines

    app_ctx.out.result(data, human)


@host_group.command("remove")
@click.argument("name", shell_complete=complete.host_names)
@click.pass_obj
def remove(app_ctx: AppContext, name: str) -> None:
    """Forget a host. Its services keep running there, and the files of its instances
    (configuration, password) stay on this machine, so adding it again finds them."""
    from opencode_cloud.hosts import HostList, host_root

    hosts = HostList.load()
    hosts.get(name)
    del hosts.hosts[name]
    if hosts.default == name:
        hosts.default = None
    hosts.save()
    files = host_root(name)
    kept = f" Its instances' files stay in {files}." if files.exists() else ""
    app_ctx.out.result(
        {"removed": name, "files": str(files) if kept else None},
        lambda: [f"Removed host {name}.{kept}"],
    )


@host_group.command("test")
@click.argument("name", required=False, shell_complete=complete.host_names)
@click.pass_obj
def test(app_ctx: AppContext, name: str | None) -> None:
    """Connect to a host (default: the one commands use) and describe its engine."""
    from opencode_cloud.hosts import HostList, describe_host

    host = HostList.load().get(name) if name else app_ctx.host
    if host is None:
        raise click.UsageError("name a host: `occ host test NAME` (see `occ host list`)")
    data = describe_host(host)
    app_ctx.out.result(data, lambda: _describe_test(data))


@host_group.command("default")
@click.argument("name", required=False, shell_complete=complete.host_names)
@click.pass_obj
def default(app_ctx: AppContext, name: str | None) -> None:
    """Show or set the host commands use without --host (`local`: this machine)."""
    from opencode_cloud.hosts import LOCAL, HostList

    hosts = HostList.load()
    if name is not None:
        if name != LOCAL:
            hosts.get(name)
        hosts.default = None if name == LOCAL else name
        hosts.save()
    current = hosts.default or LOCAL
    verb = "is now" if name is not None else "is"
    app_ctx.out.result({"default": current}, lambda: [f"The default host {verb} {current}."])


# ------------------------------------------------------------------------------ tunnel


@click.command()
@click.option("--port", "-p", "local_port", type=int, help="Local port (default: the same).")
@click.option("--open", "open_browser", is_flag=True, help="Open the URL in a browser.")
@click.pass_obj
def tunnel(app_ctx: AppContext, local_port: int | None, open_browser: bool) -> None:
    """Reach a service on a remote host from this machine, over SSH, until Ctrl-C.

    The service keeps listening on the remote host's loopback only: nothing is opened
    to the network there. The local end listens on this machine's 127.0.0.1.

    Examples: occ --host cloud tunnel | occ --host cloud tunnel --port 8080 --open
    """
    if local_port is not None and not 1 <= local_port <= 65535:
        raise click.BadParameter("must be from 1 to 65535", param_hint="--port")
    run_tunnel(app_ctx, local_port, open_browser)


def run_tunnel(app_ctx: AppContext, local_port: int | None, open_browser: bool) -> None:
    """Forward a local port to the instance's service and hold it until Ctrl-C or until
    the connection drops (then the error says so)."""
    service = app_ctx.service()
    host = service.host
    if host is None:
        endpoint = service.endpoint()
        app_ctx.out.result(
            {"url": endpoint.url, "tunnel": False},
            lambda: [f"{service.name} runs on this machine: open {endpoint.url}"],
        )
        return
    endpoint = service.tunnel_endpoint(local_port)
    url = endpoint.base_url  # the forwarded local port
    from opencode_cloud.access.credentials import read_password

    state, _version = service.probe(read_password(service.paths), endpoint)
    app_ctx.out.result(
        {"url": url, "tunnel": True, "host": host, "service": state},
        lambda: [
            f"{url} reaches {service.name} on {host} ({state}).",
            f"  User: {endpoint.username}; password: `{app_ctx.occ} auth show`.",
            "  Press Ctrl-C to close the tunnel.",
        ],
    )
    app_ctx.out.stdout.flush()
    if open_browser:
        open_in_browser(app_ctx, url, endpoint.username)
    from opencode_cloud import interrupts

    try:
        with interrupts.terminations_interrupt():  # `kill` closes it as Ctrl-C does
            service.hold_tunnel()  # raises why it dropped
    except KeyboardInterrupt:
        app_ctx.out.progress("Tunnel closed.")


def open_in_browser(app_ctx: AppContext, url: str, username: str | None) -> bool:
    """Open `url` in the user's browser (`$BROWSER`, else the system's); where there is
    none, say where to go and how to sign in. Whether a browser took it."""
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        who = f" as {username}" if username else ""
        app_ctx.out.warn(
            f"No browser could be opened here: open {url} and sign in{who} "
            f"(the password: `{app_ctx.occ} auth show`)."
        )
    return opened


# --------------------------------------------------------------------------------- open


@click.command("open")
@click.option("--port", "-p", "local_port", type=int, help="Local port of a tunnel to a host.")
@click.option("--show-password", is_flag=True, help="Print the password too.")
@click.pass_obj
def open_(app_ctx: AppContext, local_port: int | None, show_password: bool) -> None:
    """Open the web UI in your browser ($BROWSER, else the system's).

    For a service on a remote host's loopback it first opens a tunnel over SSH, opens
    its local end and holds it until Ctrl-C. Without a browser it prints the URL and how
    to sign in. The password is printed only with --show-password.

    Examples: occ open | occ --host cloud open | occ --instance work open
    """
    if local_port is not None and not 1 <= local_port <= 65535:
        raise click.BadParameter("must be from 1 to 65535", param_hint="--port")
    from opencode_cloud.access import credentials

    if app_ctx.in_team_mode():
        url, username = app_ctx.team().url, None  # each person signs in with their own name
    else:
        service = app_ctx.service()
        info = service.shell_target()  # it runs, or the error says how to start it
        endpoint = service.endpoint_of(info)  # on a remote host: by that host's name
        if endpoint.only_on_remote:
            if show_password:
                app_ctx.out.progress(f"Password: {credentials.read_password(app_ctx.paths)}")
            run_tunnel(app_ctx, local_port, open_browser=True)
            return
        url, username = endpoint.url, endpoint.username
    password = credentials.read_password(app_ctx.paths) if show_password else None
    opened = open_in_browser(app_ctx, url, username)
    data = {"url": url, "username": username, "opened": opened}
    if password is not None:
        data["password"] = password

    def human() -> list[str]:
        lines = [f"Opened {url} in your browser." if opened else url]
        if username:
            lines.append(f"  User:     {username}")
        if password is not None:
            lines.append(f"  Password: {password}")
        elif username:
            lines.append(f"  Password: run `{app_ctx.occ} auth show` to see it")
        return lines

    app_ctx.out.result(data, human)


def register(group: click.Group) -> None:
    group.add_command(host_group)
    group.add_command(tunnel)
    group.add_command(open_)
