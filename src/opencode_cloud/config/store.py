"""Read, validate and atomically write the configuration file (JSON with comments).

A missing file means every default. Reading accepts comments, trailing commas and the
rest of JSON5. A change (`occ config set ...`) to a file with comments edits only the
text of what changed (`config/jsonc.py`), so the comments and the layout stay; a file
without comments is written anew as plain JSON. Unknown keys survive either way. A write
never happens unless the whole new configuration is valid, and it replaces the file in
one step, so the file is either the old one or the new one, never half of each.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import json5
from pydantic import ValidationError

from opencode_cloud.config.errors import (
    ConfigError,
    ConfigReadError,
    ConfigSyntaxError,
    ConfigValidationError,
    ConfigWriteError,
    Problem,
)
from opencode_cloud.config.jsonc import comments_of, edit_text
from opencode_cloud.config.schema import (
    ENV_NAME_RULE,
    ENV_VALUE_RULE,
    IGNORED_KEYS,
    KEYS,
    RULES,
    Config,
)

FILE_MODE = 0o600
DIR_MODE = 0o700
BACKUP_SUFFIX = ".bak"

_JSON5_POSITION = re.compile(r"^<string>:(?P<line>\d+) (?P<what>.*) at column (?P<column>\d+)$")
_MAX_VALUE_CHARS = 60


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration and what was noticed while reading it.

    Attributes:
        config: The validated settings (defaults for every key the file does not set).
        warnings: One line per unknown key, for the user (the keys are kept, not used).
        path: The file it came from.
        exists: False when there was no file (every value is a default).
    """

    config: Config
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None
    exists: bool = True


# --- reading --------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigReadError(
            f"Cannot read the configuration file {path}: it is a directory.",
            "Move the directory away, or point OCC_CONFIG_DIR at another directory.",
            path=path,
        ) from None
    except PermissionError:
        raise ConfigReadError(
            f"Cannot read the configuration file {path}: permission denied.",
            f"Make it yours and readable: `chmod u+rw {path}` (check the owner with "
            f"`ls -l {path}`).",
            path=path,
        ) from None
    except OSError as exc:
        raise ConfigReadError(
            f"Cannot read the configuration file {path}: {exc.strerror or exc}.",
            "Check the file and the disk it is on.",
            path=path,
        ) from None


def parse_config_text(text: str, path: Path | None = None) -> dict[str, Any]:
    """Parse JSON with comments into the raw (not yet validated) configuration data.

    Empty or whitespace-only text is an empty configuration.

    Raises:
        ConfigSyntaxError: not JSON5, a duplicate key, or not an object at the top.
    """
    where = str(path) if path is not None else "the configuration"
    if not text.strip():
        return {}
    try:
        data = json5.loads(text, allow_duplicate_keys=False)
    except (ValueError, RecursionError) as exc:
        detail = str(exc)
        match = _JSON5_POSITION.match(detail)
        if match:
            line, column = int(match["line"]), int(match["column"])
            what = match["what"][:1].lower() + match["what"][1:]
            raise ConfigSyntaxError(
                f"Invalid JSON in {where} at line {line}, column {column}: {what}.",
                path=path,
                line=line,
                column=column,
            ) from None
        # One line, whatever character the parser quotes (a newline, say).
        detail = " ".join(detail.replace('"\n"', "line break").split()).rstrip(".")
        detail = detail or type(exc).__name__
        raise ConfigSyntaxError(f"Invalid JSON in {where}: {detail}.", path=path) from None
    if not isinstance(data, dict):
        raise ConfigSyntaxError(
            f"Invalid configuration in {where}: the top level must be an object "
            f"({{ ... }}), not {_json_type(data)}.",
            path=path,
        )
    return data


def read_config_text(path: Path) -> str | None:
    """The text of the file at `path` (None when there is no file).

    Raises:
        ConfigReadError: the file exists but cannot be read.
        ConfigSyntaxError: the file is not UTF-8 text.
    """
    raw = _read_bytes(path)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigSyntaxError(
            f"Invalid configuration in {path}: not UTF-8 text (byte {exc.start}).",
            path=path,
            encoding=True,
        ) from None


def read_config_data(path: Path) -> dict[str, Any]:
    """The raw configuration data of the file at `path` ({} when there is no file).

    Only the syntax is checked, not the values: this is what an edit starts from, so that
    `occ config set` can repair a file whose values are invalid.

    Raises:
        ConfigReadError: the file exists but cannot be read.
        ConfigSyntaxError: the file is not JSON with comments, or not an object.
    """
    return _read_data(path)[0]


def _read_data(path: Path) -> tuple[dict[str, Any], bool]:
    text = read_config_text(path)
    if text is None:
        return {}, False
    return parse_config_text(text, path), True


# --- validation -----------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def show_value(value: Any) -> str:
    """A value as JSON text, shortened to one short line."""
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        text = ascii(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _env_name_problem(name: Any, rule: str) -> Problem:
    value = show_value(name)
    return Problem("env", value, rule, message=f"env name {value} is not allowed: {rule}")


def _problem(error: Mapping[str, Any]) -> Problem:
    loc = tuple(error.get("loc", ()))
    ctx = error.get("ctx") or {}
    top = str(loc[0]) if loc else ""
    kind = error.get("type", "")
    if kind == "env_name":
        return _env_name_problem(ctx["name"], str(ctx["rule"]))
    if kind == "env_value":
        name = ctx["name"]
        return Problem(f"env.{name}", show_value(error.get("input")), str(ctx["rule"]))
    if top == "env" and len(loc) == 2:
        return Problem(f"env.{loc[1]}", show_value(error.get("input")), ENV_VALUE_RULE)
    if top == "env" and len(loc) == 3:
        return _env_name_problem(loc[1], ENV_NAME_RULE)
    key = top + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
    if kind == "value_error" and isinstance(ctx.get("error"), ValueError):
        rule = str(ctx["error"])
    else:
        rule = RULES.get(top, str(error.get("msg", "is invalid")))
    return Problem(key or "configuration", show_value(error.get("input")), rule)


def problems_of(exc: ValidationError) -> list[Problem]:
    """The broken rules of a pydantic error, in user terms."""
    return [_problem(error) for error in exc.errors()]


def unknown_key_warnings(config: Config, path: Path | None = None) -> list[str]:
    """One warning per key of the file the schema does not know."""
    where = f"{path}: " if path is not None else ""
    warnings = []
    for key in config.model_extra or {}:
        if key in IGNORED_KEYS:
            continue
        close = difflib.get_close_matches(key, KEYS, n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        warnings.append(f"{where}unknown key {key!r} is ignored{suggestion}.")
    return warnings


def validate_config(data: Mapping[str, Any], path: Path | None = None) -> Config:
    """Validate raw configuration data.

    Raises:
        ConfigValidationError: one or more values break the rules; every problem is listed.
    """
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigValidationError(problems_of(exc), path=path) from None


def config_data(config: Config) -> dict[str, Any]:
    """The keys a configuration sets explicitly (unknown keys included), as JSON data.

    This is what `save_config` writes: keys left at their default stay out of the file,
    so a default that changes in a later release still reaches them.
    """
    return config.model_dump(mode="json", exclude_unset=True)


def load_config(path: Path) -> LoadedConfig:
    """Read and validate the configuration file; a missing file gives the defaults.

    Raises:
        ConfigReadError: the file exists but cannot be read.
        ConfigSyntaxError: not JSON with comments; the message gives line and column.
        ConfigValidationError: a value breaks a rule; the message names file, key, value
            and rule.
    """
    data, exists = _read_data(path)
    config = validate_config(data, path)
    return LoadedConfig(config, unknown_key_warnings(config, path), path, exists)


# --- writing --------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some file systems refuse, and that is fine.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomically(
    target: Path, content: bytes, default_mode: int = FILE_MODE, *, keep_mode: bool = True
) -> None:
    """Replace `target` with `content`: temp file in the same directory, fsync, rename.

    An existing file keeps its mode (and owner, when run as root) unless `keep_mode` is
    False; a new one, or one not kept, gets `default_mode`. The temporary file is 0600
    from its first byte (mkstemp), so secrets are never readable on the way.
    """
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    try:
        existing: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        existing = None
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if existing is not None and keep_mode:
            os.fchmod(fd, existing.st_mode & 0o7777)
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                with contextlib.suppress(OSError):
                    os.fchown(fd, existing.st_uid, existing.st_gid)
        else:
            os.fchmod(fd, default_mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_dir(directory)


def _write_error(path: Path, exc: OSError) -> ConfigWriteError:
    reason = exc.strerror or str(exc)
    return ConfigWriteError(
        f"Cannot write the configuration file {path}: {reason.lower()}. It was not changed.",
        f"Check that you own {path.parent} and that the disk has room.",
        path=path,
    )


def render_config(config: Config) -> str:
    """The text `save_config` writes for `config`: indented JSON ending in a newline."""
    return json.dumps(config_data(config), indent=2, ensure_ascii=False) + "\n"


def save_config(path: Path, config: Config) -> None:
    """Write `config` to `path` atomically, with mode 0600 for a new file.

    The configuration is validated again first; on any failure the file on disk is left
    exactly as it was. A symbolic link at `path` is followed, so a linked file (kept in
    a dotfiles repository, say) is updated in place and stays linked.

    Raises:
        ConfigValidationError: `config` breaks a rule (nothing is written).
        ConfigWriteError: the file or its directory cannot be written.
    """
    validate_config(config_data(config))
    _write_text(path, render_config(config))


def _write_text(path: Path, text: str) -> None:
    target = Path(os.path.realpath(path))
    try:
        write_atomically(target, text.encode("utf-8"))
    except OSError as exc:
        raise _write_error(path, exc) from None


def update_config(path: Path, change: Callable[[dict[str, Any]], Config]) -> LoadedConfig:
    """Read the file's raw data, apply `change`, validate, and save the result.

    `change` receives the file's data even when its values are invalid, so a command
    such as `occ config set port 8080` can repair the file. On any error nothing is
    written. The comments of the file are kept (only the text of what changed is
    edited); should that edit be impossible, the file is written anew, the old one is
    kept as `<path>.bak`, and a warning says so. Hold the instance lock
    (`opencode_cloud.locking.instance_lock`) around the call, so that two commands do
    not both read the old file and each drop the other's change.

    Example:
        update_config(path, lambda data: set_value(data, "port", "8080"))

    Raises:
        ConfigReadError, ConfigSyntaxError: the file cannot be read or parsed.
        ConfigValidationError: the change, or the rest of the file, breaks a rule.
        UnknownConfigKey: `change` named a key the schema does not have.
        ConfigWriteError: the file cannot be written.
    """
    text = read_config_text(path)
    data = parse_config_text(text, path) if text is not None else {}
    before = copy.deepcopy(data)
    try:
        config = change(data)
    except ConfigValidationError as exc:
        if exc.document and exc.path is None:
            raise exc.in_file(path) from None
        raise
    warnings = unknown_key_warnings(config, path)
    comments = comments_of(text) if text else []
    if not comments:
        save_config(path, config)
        return LoadedConfig(config, warnings, path, True)
    new = config_data(config)
    validate_config(new)
    edited = edit_text(text or "", before, new)
    if edited is None:
        kept = _keep_backup(path)
        warnings.append(
            f"{path} was written anew, without its comments ({len(comments)}): the change "
            f"could not be made in its text. The old file, comments included, is {kept}."
        )
        edited = render_config(config)
    _write_text(path, edited)
    return LoadedConfig(config, warnings, path, True)


def replace_config_text(
    path: Path, text: str, *, expected: str | None, source: Path | None = None
) -> LoadedConfig:
    """Replace the file with `text` as it is (comments and layout are the user's), once
    the whole of it is valid; `expected` is the text the edit started from (None: no
    file), so that a change made meanwhile by another command is not overwritten;
    errors in `text` name `source`, where it was edited. Hold the instance lock around
    the call. On any error nothing is written.

    Raises:
        ConfigSyntaxError, ConfigValidationError: `text` is not a valid configuration.
        ConfigError: the file changed since `expected` was read.
        ConfigReadError, ConfigWriteError.
    """
    config = validate_config(parse_config_text(text, source or path), source or path)
    if read_config_text(path) != expected:
        raise ConfigError(f"{path} was changed by another command meanwhile.", path=path)
    _write_text(path, text)
    return LoadedConfig(config, unknown_key_warnings(config, path), path, True)


def _keep_backup(path: Path) -> Path:
    """Copy the file to `<path>.bak` (0600) before it is replaced; the copy's path."""
    target = Path(os.path.realpath(path))
    backup = target.with_name(target.name + BACKUP_SUFFIX)
    try:
        write_atomically(backup, target.read_bytes(), keep_mode=False)
    except OSError as exc:
        raise _write_error(path, exc) from None
    return backup


def reset_config_file(path: Path, *, backup: bool = True) -> Path | None:
    """Replace the file with an empty configuration (every default), whatever it holds.

    Works on a file that cannot be parsed. With `backup`, the old file is first copied
    to `<path>.bak` (mode 0600).

    Returns:
        The backup's path, or None when there was nothing to back up.

    Raises:
        ConfigReadError: the old file exists but cannot be read for the backup.
        ConfigWriteError: the file or the backup cannot be written.
    """
    old = _read_bytes(path) if backup else None
    backup_path: Path | None = None
    target = Path(os.path.realpath(path))
    try:
        if old is not None:
            backup_path = target.with_name(target.name + BACKUP_SUFFIX)
            write_atomically(backup_path, old)
            os.chmod(backup_path, FILE_MODE)
        write_atomically(target, b"{}\n")
    except OSError as exc:
        raise _write_error(path, exc) from None
    return backup_path
