"""Host paths of the tool's own files, resolved from the environment so tests can redirect them.

Config directory: `$OCC_CONFIG_DIR`, else `$XDG_CONFIG_HOME/opencode-cloud`, else
`~/.config/opencode-cloud`. Files of a named instance live in `instances/<name>/` below it;
the default instance uses the directory itself. Instances of a remote host `H` follow the
same layout below `hosts/H/`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from opencode_cloud.instance import DEFAULT, Instance

APP_DIR_NAME = "opencode-cloud"


def config_dir() -> Path:
    """The tool's configuration directory (not created)."""
    if os.environ.get("OCC_CONFIG_DIR"):
        return Path(os.environ["OCC_CONFIG_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / APP_DIR_NAME


@dataclass(frozen=True)
class InstancePaths:
    """Every host file that belongs to one instance."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def password_hash_file(self) -> Path:
        """The bcrypt hash of the password, made once per password (`credentials.py`)."""
        return self.root / "password.bcrypt"

    @property
    def config_backup_file(self) -> Path:
        """The configuration as it was before `occ config reset` (or a change that could
        not keep its comments) replaced it."""
        return self.root / "config.json.bak"

    @property
    def team_file(self) -> Path:
        """Team mode's record on this machine: whether it is on, and who the first person
        is (the one whose files turning it off brings back to the single-user service)."""
        return self.root / "team.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def edge_state_file(self) -> Path:
        """The login service's state folder (sessions, sign-in log, second factor) of a
        container removed by a restore, as a tar (0600), until the next start puts it
        into the new container."""
        return self.root / "edge-state.tar"


def instance_paths(instance: Instance = DEFAULT, base: Path | None = None) -> InstancePaths:
    """Paths of `instance`'s files under `base`: the config directory, or the folder of
    a remote host's instances (`hosts.host_root`)."""
    root = base or config_dir()
    return InstancePaths(root if instance.is_default else root / "instances" / instance.name)


def config_fingerprint(path: Path) -> str | None:
    """A digest of the configuration file's bytes and of the tool's version.

    Equal fingerprints mean the same file read by the same release, so the same
    settings (defaults included). None when the file cannot be read.
    """
    import hashlib

    from opencode_cloud import __version__

    try:
        content = path.read_bytes()
    except FileNotFoundError:
        content = b""
    except OSError:
        return None
    return hashlib.sha256(__version__.encode() + b"\0" + content).hexdigest()[:32]
