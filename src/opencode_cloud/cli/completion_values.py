"""What shell completion offers besides commands and options: configuration keys,
instance names, host names, mount paths and environment variable names.

Each function is a click `shell_complete` callback: it gets the context parsed so far
(`--instance` and `--host` are on the root context) and what is typed of the word, and
returns the candidates that start with it. They read files only, never the engine, and
give nothing rather than fail: a broken file must not break the shell.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem


def _matching(words: list[str], incomplete: str) -> list[CompletionItem]:
    seen: list[str] = []
    for word in words:
        if word.startswith(incomplete) and word not in seen:
            seen.append(word)
    return [CompletionItem(word) for word in seen]


def _chosen(ctx: click.Context) -> tuple[str, str | None]:
    """The instance and host named on the line so far (or by OCC_INSTANCE, OCC_HOST)."""
    params = ctx.find_root().params
    return str(params.get("instance") or "default"), params.get("host_name") or None


def _host_base(host: str | None) -> Path | None:
    """The folder of the instances of `host`, or None for this machine's (or none known)."""
    from opencode_cloud.hosts import LOCAL, HostList, host_root

    if host and host != LOCAL:
        return host_root(host)
    if host == LOCAL:
        return None
    with contextlib.suppress(Exception):
        hosts = HostList.load()
        if hosts.default:
            return host_root(hosts.default)
    return None


def _config_data(ctx: click.Context) -> dict[str, Any]:
    """The raw data of the chosen instance's configuration file ({} when unreadable)."""
    from opencode_cloud.config.paths import instance_paths
    from opencode_cloud.config.store import read_config_data
    from opencode_cloud.instance import Instance

    name, host = _chosen(ctx)
    try:
        return read_config_data(instance_paths(Instance(name), _host_base(host)).config_file)
    except Exception:
        return {}


def config_keys(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """The keys `occ config get` and `occ config set` take (retired ones left out)."""
    from opencode_cloud.config.schema import KEYS, RETIRED_KEYS

    return _matching([key for key in KEYS if key not in RETIRED_KEYS], incomplete)


def config_keys_set(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """The keys `occ config unset` takes: those the file sets first, then the others."""
    from opencode_cloud.config.schema import KEYS, RETIRED_KEYS

    in_file = [str(key) for key in _config_data(ctx) if key != "$schema"]
    others = [key for key in KEYS if key not in RETIRED_KEYS]
    return _matching([*in_file, *others], incomplete)


def env_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """The environment variables the chosen instance's configuration sets."""
    env = _config_data(ctx).get("env")
    return _matching(sorted(str(name) for name in env), incomplete) if isinstance(env, dict) else []


def provider_names(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """The providers opencode knows by name (a custom one is any other name)."""
    from opencode_cloud.opencode import KNOWN_PROVIDERS

    return _matching(sorted(KNOWN_PROVIDERS), incomplete)


def instance_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """`default` and the instances that have a folder in the configuration directory
    (of the host named on the line, if any)."""
    from opencode_cloud.config.paths import config_dir
    from opencode_cloud.instance import DEFAULT_INSTANCE

    _, host = _chosen(ctx)
    base = _host_base(host) or config_dir()
    names = [DEFAULT_INSTANCE]
    with contextlib.suppress(OSError):
        names += sorted(p.name for p in (base / "instances").iterdir() if p.is_dir())
    return _matching(names, incomplete)


def host_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """The saved hosts, and `local` (this machine) where a command takes it."""
    from opencode_cloud.hosts import LOCAL, HostList

    names: list[str] = []
    with contextlib.suppress(Exception):
        names = sorted(HostList.load().hosts)
    takes_local = ctx.info_name != "remove" and ctx.info_name != "test"
    return _matching([*names, LOCAL] if takes_local else names, incomplete)


def mount_paths(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """Both sides of the chosen instance's mounts, for `occ mount remove`."""
    from opencode_cloud.mounts import HostMount

    mounts = _config_data(ctx).get("mounts")
    paths: list[str] = []
    for text in mounts if isinstance(mounts, list) else []:
        try:
            mount = HostMount.parse(str(text))
        except Exception:
            continue
        paths += [mount.host, mount.container]
    return _matching(paths, incomplete)
