"""One object that derives every Docker name from an instance name.

The default instance has the plain names (`opencode-cloud`, `opencode-cloud-session`, ...);
a named instance `work` gets `opencode-cloud-work`, `opencode-cloud-work-session`, ... so
several can run side by side and tests never touch a user's real service. In team mode
each person's instance is the same kind of object with `person` set: `alice` of the
default instance has `opencode-cloud-user-alice`, `opencode-cloud-user-alice-session`,
... (docs/team.md), so `docker ps` and `docker volume ls` show whose they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from opencode_cloud import __version__
from opencode_cloud.errors import OpencodeCloudError

DEFAULT_INSTANCE = "default"
BASE_NAME = "opencode-cloud"

LABEL_PREFIX = "io.opencode-cloud"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_INSTANCE = f"{LABEL_PREFIX}.instance"
LABEL_VERSION = f"{LABEL_PREFIX}.version"
LABEL_ROLE = f"{LABEL_PREFIX}.role"
LABEL_PERSON = f"{LABEL_PREFIX}.person"
LABEL_CONFIG_HASH = f"{LABEL_PREFIX}.config-hash"
# Fingerprint of the configuration file the container was created from (see service.py).
LABEL_CONFIG_FILE = f"{LABEL_PREFIX}.config-file"

# Lower case, digits and dashes; it becomes part of container and volume names and of
# file names under the config directory, so nothing that could escape a path.
_NAME_RULE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
# A person's name, in team mode: part of their container, volume and network names, and
# their sign-in name. The login service in the container applies the same rule.
PERSON_RULE = re.compile(r"^[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?$")


class InvalidInstanceName(OpencodeCloudError):
    """The instance name cannot be used in Docker names and file paths."""


def validate_instance_name(name: str) -> str:
    """Return `name` if it is a usable instance name.

    Raises:
        InvalidInstanceName: for upper case, spaces, slashes, or names too long.
    """
    if not _NAME_RULE.match(name):
        raise InvalidInstanceName(
            f"Invalid instance name {name!r}: use 1-40 lower-case letters, digits and dashes.",
            "For example: --instance work",
        )
    parts = name.split("-")
    if "door" in parts or "user" in parts[:-1]:
        raise InvalidInstanceName(
            f"Invalid instance name {name!r}: a part 'door', or 'user-' followed by more, "
            "would name another instance's team (its front door, its people).",
            "For example: --instance work",
        )
    return name


class InvalidPersonName(OpencodeCloudError):
    """The person's name cannot be used as a sign-in name and in Docker names."""


def validate_person_name(name: str) -> str:
    """Return `name` if it is a usable person name.

    Raises:
        InvalidPersonName: upper case, spaces, a leading digit or dash, or too long.
    """
    if not PERSON_RULE.match(name):
        raise InvalidPersonName(
            f"Invalid name {name!r}: use 1-30 lower-case letters, digits and dashes, "
            "starting with a letter.",
            "For example: occ user add alice",
        )
    return name


@dataclass(frozen=True)
class Instance:
    """Names and labels of one opencode-cloud service.

    Attributes:
        name: The instance name; `default` maps to the plain names (docs/architecture.md).
        extra_labels: Labels added to every resource (tests tag their session here).
        person: In team mode, whose instance this is (None: the service itself).
    """

    name: str = DEFAULT_INSTANCE
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    person: str | None = None

    def __post_init__(self) -> None:
        validate_instance_name(self.name)
        if self.person is not None:
            validate_person_name(self.person)

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_INSTANCE

    @property
    def service_prefix(self) -> str:
        """The prefix of the service's own names, whoever's instance this is."""
        return BASE_NAME if self.is_default else f"{BASE_NAME}-{self.name}"

    @property
    def prefix(self) -> str:
        if self.person is not None:
            return f"{self.service_prefix}-user-{self.person}"
        return self.service_prefix

    def for_person(self, person: str | None) -> Instance:
        """The instance of `person` in this service's team (None: the service's own)."""
        return Instance(self.name, self.extra_labels, person)

    @property
    def container_name(self) -> str:
        return self.prefix

    def volume_name(self, kind: str) -> str:
        """Volume name for a kind of data (`session`, `projects`, ...)."""
        return f"{self.prefix}-{kind}"

    def labels(self, role: str) -> dict[str, str]:
        """Labels for a resource this instance owns; `role` says what it is."""
        labels = {
            LABEL_MANAGED: "true",
            LABEL_INSTANCE: self.name,
            LABEL_VERSION: __version__,
            LABEL_ROLE: role,
            **self.extra_labels,
        }
        if self.person is not None:
            labels[LABEL_PERSON] = self.person
        return labels

    def label_filter(self) -> list[str]:
        """Docker `label=` filters that select exactly this instance's resources (the
        service's own select its people's too: uninstalling it removes theirs)."""
        person = [f"{LABEL_PERSON}={self.person}"] if self.person is not None else []
        return [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={self.name}", *person]


DEFAULT = Instance()


def command_prefix(instance: Instance, host: str | None = None) -> str:
    """The command line that acts on `instance` (of `host`), for messages and hints."""
    words = ["occ"]
    if host:
        words.append(f"--host {host}")
    if not instance.is_default:
        words.append(f"--instance {instance.name}")
    return " ".join(words)


def person_option(instance: Instance) -> str:
    """` --user NAME` for a person's instance, for hints that act on it ('' otherwise)."""
    return f" --user {instance.person}" if instance.person is not None else ""
