"""The configuration schema: the one source of truth for keys, defaults and rules.

The pydantic model `Config` validates every load; `config.schema.json`, shipped beside this
module for editors, is generated from it. Regenerate it after changing the model:

    python -m opencode_cloud.config.schema          # writes config.schema.json
    python -m opencode_cloud.config.schema --check  # exits 1 when the file is stale

Keys are flat, so that `occ config get port` and `occ config set port 8080` name them as
the file does. Unknown keys are kept (a newer release may know them) and reported as
warnings, never as errors.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

from opencode_cloud.defaults import (
    DEFAULT_BIND_ADDRESS,
    DEFAULT_KEEP_SNAPSHOTS,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_OPENCODE_VERSION,
    DEFAULT_PIDS_LIMIT,
    DEFAULT_PORT,
    DEFAULT_RESTART_RETRIES,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_USERNAME,
    MIN_MEMORY_BYTES,
    RUNTIME_HOME,
)
from opencode_cloud.mounts import HostMount, MountError
from opencode_cloud.opencode import PASSWORD_ENV, USERNAME_ENV

SCHEMA_FILE = Path(__file__).with_name("config.schema.json")
# Keys a file may carry without being reported as unknown: editors use `$schema`.
IGNORED_KEYS = frozenset({"$schema"})

# Environment variables opencode-cloud sets itself. The password must never reach the
# container's visible environment, and the user name has its own key.
RESERVED_ENV = {
    PASSWORD_ENV: (
        "opencode-cloud sets it from the password file, which never reaches the "
        "container's visible environment"
    ),
    USERNAME_ENV: "opencode-cloud sets it from the `username` key",
}

_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::[0-9]{{1,5}})?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

IMAGE_REF_PATTERN = (
    rf"^(?:{_DOMAIN}/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$"
)
REGISTRY_PATTERN = rf"^{_DOMAIN}(?:/{_NAME_COMPONENT})*$"
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
VERSION_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
CA_PATH_PATTERN = r"^[~/]"
MOUNT_PATTERN = r"^/[^:]*:/[^:]*(?::(?:ro|rw))?$"
TLS_PATH_PATTERN = r"^[~/]"
_HOST_NAME = r"[A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*\.?"
HOST_NAME_PATTERN = rf"^(?:{_HOST_NAME}|[0-9A-Fa-f:.]+)$"
TLS_MODES = ("auto", "self-signed", "off")
# Debian's rule for package names: lower case letters, digits, '+', '-' and '.', at least
# two long, starting with a letter or digit (so none reads as an option of apt-get).
DEBIAN_PACKAGE_PATTERN = r"^[a-z0-9][a-z0-9+.-]+$"
# What an `extra_dockerfile` line may do: run a command as root while the image is built
# (and name a build argument for it). Every other instruction is refused: FROM, USER,
# ENTRYPOINT, CMD and HEALTHCHECK would change how the container starts; ENV would reach
# root's `docker exec` too (a PATH into the agent's home would run its programs as root;
# opencode's variables are the `env` key's); LABEL could forge the tool's own labels.
DOCKERFILE_INSTRUCTIONS = ("RUN", "ARG")
_DOCKERFILE_LINE = re.compile(rf"^\s*({'|'.join(DOCKERFILE_INSTRUCTIONS)})\s+\S", re.IGNORECASE)

_ENV_NAME = re.compile(ENV_NAME_PATTERN)

# What each key must be, as the end of the sentence "<key> is <value>, but ...".
RULES: dict[str, str] = {
    "port": "must be a whole number from 1 to 65535",
    "bind_address": "must be an IP address, such as 127.0.0.1, 0.0.0.0 or ::1",
    "username": (
        "must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
    ),
    "opencode_version": "must be an opencode release version, such as 1.18.33",
    "image": "must be an image reference, such as registry.example.com/team/sandbox:1.0",
    "registries": (
        'must be a list of registry prefixes, such as ["ghcr.io/acme"] '
        "(host[:port][/path], no scheme, no tag)"
    ),
    "ca_certificates": (
        "must be a list of absolute paths to PEM certificate files, such as "
        '["/etc/ssl/certs/corp-ca.pem"]'
    ),
    "env": (
        "must be an object of environment variable names to string values, "
        'such as {"OPENCODE_DISABLE_AUTOUPDATE": "1"}'
    ),
    "mounts": (
        'must be a list of "HOST_PATH:CONTAINER_PATH" or "HOST_PATH:CONTAINER_PATH:ro", '
        "both absolute paths without ':', such as "
        f'["/home/alice/code:{RUNTIME_HOME}/code"]'
    ),
    "limits": (
        'must be an object such as {"memory": "8g", "cpus": 2, "pids": 4096}: memory a '
        "size with b, k, m or g (256m or more), cpus a number above 0 (or null for all), "
        "pids a whole number, 64 or more"
    ),
    "cluster": (
        'must be an object such as {"registry": "registry.example.com:5000/team"}: the '
        "registry every node of the swarm pulls the image from (host[:port][/path], no "
        "scheme, no tag), or null"
    ),
    "tls": (
        "must be auto (HTTPS when the service is exposed beyond localhost or a certificate "
        "is set), self-signed (always HTTPS) or off (plain HTTP)"
    ),
    "tls_cert": "must be the absolute path of a PEM certificate file (with its chain)",
    "tls_key": "must be the absolute path of the PEM private key file of tls_cert",
    "host_names": (
        'must be a list of host names or IP addresses, such as ["opencode.example.lan"]'
    ),
    "extra_packages": (
        'must be a list of Debian package names, such as ["build-essential", "jq"] '
        "(lower case letters, digits, '+', '-' and '.')"
    ),
    "extra_dockerfile": (
        'must be a list of one-line Dockerfile instructions, such as ["RUN pip install '
        f'ruff"]: only {" and ".join(DOCKERFILE_INSTRUCTIONS)} (no FROM, USER, ENV, ...), '
        "none ending in a backslash or holding a here-document (<<)"
    ),
    "keep_snapshots": "must be a whole number, 1 or more",
    "restart_retries": "must be a whole number, 0 or more",
    "start_timeout": "must be a whole number of seconds, 1 or more",
    "stop_timeout": "must be a whole number of seconds, 1 or more",
    "idle_stop_minutes": "must be a whole number of minutes, 0 or more (0: never)",
}
# Keys of earlier releases that no longer do anything, with why. A file that holds one
# stays valid (the value is read, and ignored), but none can be set any more.
RETIRED_KEYS: dict[str, str] = {
    "restart_retries": (
        "the service restarts after any crash unless you stopped it, and Docker cannot "
        "combine that with a retry count"
    ),
}
# A valid value per key, as typed after `occ config set KEY`.
EXAMPLES: dict[str, str] = {
    "port": "8080",
    "bind_address": "0.0.0.0",
    "username": "alice",
    "opencode_version": DEFAULT_OPENCODE_VERSION,
    "image": "registry.example.com/team/opencode-sandbox:1.0",
    "registries": "ghcr.io/acme,registry.example.com:5000/mirror",
    "ca_certificates": "/etc/ssl/certs/corp-ca.pem",
    "env": '\'{"OPENCODE_DISABLE_AUTOUPDATE": "1"}\'',
    "mounts": f"/home/alice/code:{RUNTIME_HOME}/code",
    "limits": '\'{"memory": "8g", "cpus": 2, "pids": 4096}\'',
    "tls": "self-signed",
    "cluster": '\'{"registry": "registry.example.com:5000/team"}\'',
    "tls_cert": "/etc/ssl/private/opencode.example.com.pem",
    "tls_key": "/etc/ssl/private/opencode.example.com.key",
    "host_names": "opencode.example.lan,192.168.1.20",
    "extra_packages": "build-essential,jq",
    "extra_dockerfile": "'[\"RUN pip install ruff\"]'",
    "keep_snapshots": "3",
    "restart_retries": "5",
    "start_timeout": "120",
    "stop_timeout": "10",
    "idle_stop_minutes": "60",
}
ENV_NAME_RULE = (
    f"names must match {ENV_NAME_PATTERN} (letters, digits and '_', not starting with a digit)"
)
ENV_VALUE_RULE = "must be a string of UTF-8 text without NUL characters"

RegistryPrefix = Annotated[str, StringConstraints(pattern=REGISTRY_PATTERN)]


def is_text(value: str) -> bool:
    """True for text a file, a label and an environment can hold: UTF-8, no NUL.

    Command-line arguments with undecodable bytes arrive as lone surrogates; they would
    make the file unwritable, so they are refused with the rest.
    """
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text_path(value: str) -> str:
    if not is_text(value):
        raise ValueError(RULES["ca_certificates"])
    return value


CaPath = Annotated[
    str,
    StringConstraints(min_length=2, pattern=CA_PATH_PATTERN),
    AfterValidator(_text_path),
]


def _mount_text(value: str) -> str:
    # Syntax only: whether the folder exists, or hides a volume, is `occ mount add`'s
    # check (opencode_cloud.mounts), which reads the disk.
    if not is_text(value):
        raise ValueError(RULES["mounts"])
    try:
        HostMount.parse(value)
    except MountError:
        raise ValueError(RULES["mounts"]) from None
    return value


MountText = Annotated[str, StringConstraints(pattern=MOUNT_PATTERN), AfterValidator(_mount_text)]
DebianPackage = Annotated[str, StringConstraints(pattern=DEBIAN_PACKAGE_PATTERN)]


def _dockerfile_line(value: str) -> str:
    # A line ending in a backslash goes on into the next one, and a here-document (`<<`)
    # takes the lines up to its delimiter: either would swallow the USER line that gives
    # the image back its base's user.
    continued = value.rstrip().endswith("\\") or "<<" in value
    if "\n" in value or "\r" in value or continued or not is_text(value):
        raise ValueError(RULES["extra_dockerfile"])
    if not _DOCKERFILE_LINE.match(value):
        raise ValueError(RULES["extra_dockerfile"])
    return value


DockerfileLine = Annotated[str, AfterValidator(_dockerfile_line)]


_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([bkmg]?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def size_in_bytes(text: str) -> int:
    """`512m`, `4g`, `1.5g` or a number of bytes, as bytes (Docker's units: powers of 1024).

    Raises:
        ValueError: not a size.
    """
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size such as 512m or 4g")
    return int(float(match[1]) * _SIZE_UNITS[match[2].lower()])


class Limits(BaseModel):
    """What the container may use of the machine."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    memory: str = Field(
        default=DEFAULT_MEMORY_LIMIT,
        description="Memory for opencode and everything the agent runs: 512m, 4g, ...",
    )
    cpus: float | None = Field(
        default=None,
        gt=0,
        description="CPUs it may use, such as 2 or 1.5; null: all of the engine's CPUs.",
    )
    pids: int = Field(
        default=DEFAULT_PIDS_LIMIT,
        ge=64,
        description="Processes and threads it may run at once.",
    )

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if size_in_bytes(value) < MIN_MEMORY_BYTES:
            raise ValueError(f"memory {value!r} is below 256m, too little for opencode")
        return value

    @field_validator("cpus", mode="before")
    @classmethod
    def _whole_cpus(cls, value: Any) -> Any:
        # `"cpus": 2` is as good as 2.0 (strict mode would refuse the integer).
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def memory_bytes(self) -> int:
        return size_in_bytes(self.memory)


class ClusterSettings(BaseModel):
    """Team mode on a Docker Swarm (`occ cluster init`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    registry: RegistryPrefix | None = Field(
        default=None,
        description=(
            "Registry (host[:port][/path]) the image is pushed to from the manager and "
            "pulled from by every node; null: none."
        ),
    )


class Config(BaseModel):
    """The settings of one opencode-cloud instance. Every field has a default.

    The model is immutable: editing functions return a new one. Fields a file sets
    explicitly are remembered (`model_fields_set`), so saving writes only those, and a
    default that changes in a later release (`opencode_version`, say) still applies to
    users who never chose a value.
    """

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        strict=True,
        title="opencode-cloud configuration",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    port: int = Field(
        default=DEFAULT_PORT,
        ge=1,
        le=65535,
        description="Host port that serves the opencode web UI.",
    )
    bind_address: str = Field(
        default=DEFAULT_BIND_ADDRESS,
        description=(
            "Host IP address the port is published on. 127.0.0.1 keeps the service local; "
            "0.0.0.0 (or ::) exposes it to the network."
        ),
        examples=["127.0.0.1", "0.0.0.0", "::1"],
        json_schema_extra={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    )
    username: str = Field(
        default=DEFAULT_USERNAME,
        pattern=USERNAME_PATTERN,
        description="User name for the web UI's HTTP Basic authentication.",
    )
    opencode_version: str = Field(
        default=DEFAULT_OPENCODE_VERSION,
        pattern=VERSION_PATTERN,
        description="opencode release installed in the sandbox image.",
    )
    image: str | None = Field(
        default=None,
        pattern=IMAGE_REF_PATTERN,
        description=(
            "Image reference to run instead of building the sandbox image "
            "(opencode_version and registries are then not used)."
        ),
    )
    registries: list[RegistryPrefix] = Field(
        default_factory=list,
        description=(
            "Registry prefixes to pull the sandbox image from, tried in order; "
            "empty means build it locally."
        ),
        examples=[["ghcr.io/acme", "registry.example.com:5000/mirror"]],
    )
    ca_certificates: list[CaPath] = Field(
        default_factory=list,
        description=(
            "Host paths of extra CA certificates (PEM) the image build trusts, "
            "for networks behind a TLS-inspecting proxy."
        ),
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables passed to opencode.",
        json_schema_extra={"propertyNames": {"pattern": ENV_NAME_PATTERN}},
    )
    mounts: list[MountText] = Field(
        default_factory=list,
        description=(
            "Host folders mounted into the container, as HOST_PATH:CONTAINER_PATH "
            "(read-write) or HOST_PATH:CONTAINER_PATH:ro (read-only), both absolute."
        ),
        examples=[[f"/home/alice/code:{RUNTIME_HOME}/code", "/srv/data:/srv/data:ro"]],
    )
    extra_packages: list[DebianPackage] = Field(
        default_factory=list,
        description=(
            "Debian packages added to the sandbox image (a compiler, a library): the next "
            "start builds an image derived from it, once per set of packages."
        ),
        examples=[["build-essential", "jq"]],
    )
    extra_dockerfile: list[DockerfileLine] = Field(
        default_factory=list,
        description=(
            "Dockerfile lines added to the sandbox image after extra_packages, run as root "
            f"while it is built: {' and '.join(DOCKERFILE_INSTRUCTIONS)} only."
        ),
        examples=[["ARG RUFF=0.6.9", "RUN pip install --break-system-packages ruff==$RUFF"]],
    )
    limits: Limits = Field(
        default_factory=Limits,
        description=(
            "Memory, CPU and process limits of the container. Keys left out keep their defaults."
        ),
    )
    cluster: ClusterSettings = Field(
        default_factory=ClusterSettings,
        description="Team mode on a Docker Swarm: the registry its nodes pull the image from.",
    )
    tls: str = Field(
        default="auto",
        description=(
            "HTTPS on the published port: auto (HTTPS when the service is exposed beyond "
            "localhost or tls_cert is set, plain HTTP on loopback), self-signed (always "
            "HTTPS, with the tool's own CA unless tls_cert is set) or off (plain HTTP: "
            "the password travels in clear)."
        ),
        json_schema_extra={"enum": list(TLS_MODES)},
    )
    tls_cert: str | None = Field(
        default=None,
        min_length=2,
        pattern=TLS_PATH_PATTERN,
        description=(
            "Your own certificate (PEM, leaf first, then its chain) instead of the "
            "self-signed one; set tls_key with it."
        ),
    )
    tls_key: str | None = Field(
        default=None,
        min_length=2,
        pattern=TLS_PATH_PATTERN,
        description="The private key (PEM) of tls_cert.",
    )
    host_names: list[Annotated[str, StringConstraints(pattern=HOST_NAME_PATTERN)]] = Field(
        default_factory=list,
        description=(
            "Names and addresses other machines use to reach the service; the self-signed "
            "certificate covers them besides localhost, 127.0.0.1 and the bind address."
        ),
        examples=[["opencode.example.lan", "192.168.1.20"]],
    )
    keep_snapshots: int = Field(
        default=DEFAULT_KEEP_SNAPSHOTS,
        ge=1,
        description=(
            "Snapshots of opencode's data kept from the last updates, for `occ rollback`."
        ),
    )
    restart_retries: int = Field(
        default=DEFAULT_RESTART_RETRIES,
        ge=0,
        description=(
            "No longer used: the service restarts after any crash unless you stopped it. "
            "Kept so that files that set it stay valid."
        ),
    )
    idle_stop_minutes: int = Field(
        default=0,
        ge=0,
        description=(
            "Team mode: stop a person's opencode after this many minutes without a "
            "request, to give its memory back (it starts again at their next sign-in); "
            "0 never stops it."
        ),
    )
    start_timeout: int = Field(
        default=DEFAULT_START_TIMEOUT,
        gt=0,
        description="Seconds to wait for opencode to become healthy on start.",
    )
    stop_timeout: int = Field(
        default=DEFAULT_STOP_TIMEOUT,
        gt=0,
        description="Seconds opencode gets to shut down before it is killed.",
    )

    @field_validator("bind_address")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(RULES["bind_address"]) from None
        return value

    @field_validator("tls")
    @classmethod
    def _tls_mode(cls, value: str) -> str:
        if value not in TLS_MODES:
            raise ValueError(RULES["tls"])
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _ENV_NAME.match(name):
                raise PydanticCustomError(
                    "env_name", "{rule}", {"name": name, "rule": ENV_NAME_RULE}
                )
            if name in RESERVED_ENV:
                raise PydanticCustomError(
                    "env_name", "{rule}", {"name": name, "rule": RESERVED_ENV[name]}
                )
            if not is_text(text):
                raise PydanticCustomError(
                    "env_value", "{rule}", {"name": name, "rule": ENV_VALUE_RULE}
                )
        return value

    @field_validator("mounts")
    @classmethod
    def _distinct_mounts(cls, value: list[str]) -> list[str]:
        hosts: set[str] = set()
        containers: set[str] = set()
        for mount in map(HostMount.parse, value):
            if mount.host in hosts:
                raise ValueError(f"must not mount the host folder {mount.host} twice")
            if mount.container in containers:
                raise ValueError(f"must not mount two folders at {mount.container}")
            hosts.add(mount.host)
            containers.add(mount.container)
        return value

    @property
    def exposed(self) -> bool:
        """True when the service is reachable from other hosts (not a loopback address)."""
        return not ipaddress.ip_address(self.bind_address).is_loopback

    @property
    def tls_mode(self) -> str:
        """What the edge serves: `off`, `self-signed` (the tool's CA) or `custom` (tls_cert)."""
        if self.tls == "off":
            return "off"
        if self.tls_cert or self.tls_key:
            return "custom"  # both are needed: the tool says so when it reads them
        if self.tls == "self-signed" or self.exposed:
            return "self-signed"
        return "off"


KEYS: tuple[str, ...] = tuple(Config.model_fields)


def default_value(key: str) -> Any:
    """The default of `key`, as JSON-compatible data.

    Raises:
        KeyError: `key` is not a field of the schema.
    """
    return Config().model_dump(mode="json")[key]


def generate_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file, derived from `Config`."""
    schema = Config.model_json_schema(mode="validation")
    schema["description"] = (
        "Configuration of opencode-cloud (JSON with comments). Unknown keys are kept "
        "and reported as warnings."
    )
    schema["properties"]["$schema"] = {
        "type": "string",
        "description": "Schema of this file, for editors.",
    }
    return schema


def render_schema() -> str:
    """`generate_schema()` as the exact text of `config.schema.json`."""
    return json.dumps(generate_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write `config.schema.json` beside this module; with `--check`, only compare.

    Returns:
        0 when the file is (now) up to date, 1 when `--check` finds it stale.
    """
    args = sys.argv[1:] if argv is None else argv
    text = render_schema()
    current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else None
    if "--check" in args:
        if current != text:
            print(
                f"{SCHEMA_FILE} is out of date: run python -m opencode_cloud.config.schema",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != text:
        SCHEMA_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
