"""The sandbox image: its canonical local name, building it, pulling it, asking what it holds.

The image is built locally from the Dockerfile embedded in the package (`sandbox/`), or
pulled from a list of registries with retries and failover, then tagged with the one
canonical local name the container layer uses (`opencode-cloud-sandbox:<opencode version>`).

Behind a TLS-inspecting proxy the build cannot download opencode until it trusts the
proxy's CA; `build_image(ca_files=...)` puts the user's certificates into the build
context, and the Dockerfile trusts them for its downloads and in the running sandbox.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from opencode_cloud import __version__
from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION, IMAGE_NAME
from opencode_cloud.docker.engine import Engine
from opencode_cloud.docker.errors import (
    BuildCause,
    BuildFailed,
    DockerError,
    InvalidCertificate,
    PullFailed,
)
from opencode_cloud.docker.models import ContainerInfo, ImageInfo
from opencode_cloud.docker.progress import (
    NullProgress,
    ProgressReporter,
    clean_line,
    handle_build_chunk,
    handle_pull_chunk,
    shorten,
)

# tarfile and collections.deque are imported where a build needs them: container
# creation imports this module, and `occ stop` or `occ status` should not pay for them.

IMAGE_TAG_DEFAULT = DEFAULT_OPENCODE_VERSION
DEFAULT_IMAGE = f"{IMAGE_NAME}:{IMAGE_TAG_DEFAULT}"

LABEL_OPENCODE_VERSION = "io.opencode-cloud.opencode-version"
LABEL_TOOL_VERSION = "io.opencode-cloud.version"
# Set by the Dockerfile on images whose entrypoint runs the edge (TLS, login page):
# an image without it, from an earlier release, is built again.
LABEL_EDGE = "io.opencode-cloud.edge"
# The edge's generation in images built from today's Dockerfile: 2 runs it as a user of
# its own (older images ran it as the agent's user, or had none); 3 adds team mode's
# roles (OCC_ROLE person and door) and its starter; 4 keeps single-user mode's sessions'
# addresses and browsers, a sign-in log and a second factor (`edge.py single-admin`).
EDGE_LABEL = "4"
# Its value from which `occ auth sessions`, `log` and `totp` can ask the edge.
EDGE_SINGLE_RECORDS = 4
# Its value from which the edge runs as a user of its own (uid 61000), which owns the
# password's hash.
EDGE_OWN_USER = 2
# Its value from which the container's first process reloads the edge's certificate on
# SIGHUP (earlier ones stop on it): a new certificate then reaches a running service
# without a restart.
EDGE_RELOADS_ON_HUP = 2
# On the build stage's last image (with the opencode version), in images built by earlier
# releases from a Dockerfile of two stages: the engine left it without a name (682 MB).
# Today's Dockerfile has one stage; a build removes what an earlier one left.
LABEL_STAGE = "io.opencode-cloud.stage"
BUILD_STAGE = "build"

# Files of the embedded build context (package data next to this package).
SANDBOX_FILES: tuple[tuple[str, int], ...] = (
    ("Dockerfile", 0o644),
    ("entrypoint.sh", 0o755),
    ("edge.py", 0o644),
    ("edge_second.py", 0o644),
    ("edge_single.py", 0o644),
    ("edge_totp.py", 0o644),
    ("edge_passkeys.py", 0o644),
    ("edge_oidc.py", 0o644),
    ("supervise.py", 0o644),
    ("starter.py", 0o644),
    ("fetch_opencode.py", 0o644),
)
EXTRA_CA_DIR = "extra-ca"
# Lines of build output kept for the error message of a failed build.
BUILD_TAIL_LINES = 15
BUILD_TAIL_CHUNKS = 400
DEFAULT_PULL_RETRIES = 3
DEFAULT_PULL_BACKOFF = 1.0

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
# Errors that another attempt at the same registry cannot fix.
_PERMANENT_PULL_ERROR = re.compile(
    r"manifest unknown|not found|unauthorized|denied|invalid reference", re.IGNORECASE
)


def image_ref(opencode_version: str = DEFAULT_OPENCODE_VERSION) -> str:
    """Canonical local name of the sandbox image holding `opencode_version`."""
    return f"{IMAGE_NAME}:{opencode_version}"


def inspect_image(client: Engine, image: str) -> ImageInfo | None:
    """The engine's description of `image`, or None if absent."""
    return client.inspect_image(image)


def image_exists(client: Engine, image: str) -> bool:
    """Return True if the local engine has `image` (a name:tag or an id)."""
    return client.inspect_image(image) is not None


def image_opencode_version(client: Engine, image: str = DEFAULT_IMAGE) -> str | None:
    """The opencode version baked into `image` (from its label); None if unknown or absent."""
    info = client.inspect_image(image)
    return (info.labels.get(LABEL_OPENCODE_VERSION) or None) if info else None


def edge_generation(info: ImageInfo | None) -> int:
    """The image's `io.opencode-cloud.edge` label as a number (0: none, or not a number)."""
    text = info.labels.get(LABEL_EDGE, "") if info else ""
    return int(text) if text.isdigit() else 0


# --------------------------------------------------------------------------- context


def split_certificates(data: bytes) -> list[bytes]:
    """Every PEM certificate in `data` (a single certificate or a bundle), in order."""
    return [match.group(0).replace(b"\r\n", b"\n") + b"\n" for match in _PEM_CERT.finditer(data)]


def _read_ca_files(ca_files: Iterable[str | Path]) -> list[tuple[str, bytes]]:
    """Split the named files into one `.crt` entry per certificate.

    One certificate per file is what `update-ca-certificates` expects: it links each file
    by its hash into /etc/ssl/certs (and skips a multi-certificate file there).
    """
    entries: list[tuple[str, bytes]] = []
    for index, ca_file in enumerate(ca_files):
        path = Path(ca_file).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidCertificate(
                str(path),
                f"Cannot read the CA certificate file {path}: {exc.strerror or exc}.",
                unreadable=True,
            ) from exc
        certificates = split_certificates(data)
        if not certificates:
            raise InvalidCertificate(
                str(path),
                f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----).",
                unreadable=False,
            )
        stem = _SAFE_NAME.sub("_", path.stem) or "ca"
        for number, certificate in enumerate(certificates):
            entries.append((f"{index:02d}-{stem}-{number:03d}.crt", certificate))
    return entries


def _sandbox_file(name: str) -> bytes:
    from importlib import resources  # only builds need the package data

    return (resources.files("opencode_cloud") / "sandbox" / name).read_bytes()


def dockerfile_command(instruction: str) -> list[str]:
    """The exec form (`["/usr/bin/x", ...]`) of an instruction of the embedded
    Dockerfile: `ENTRYPOINT`, or `HEALTHCHECK`'s `CMD`. What runs the image elsewhere
    (Kubernetes) reads it here rather than keeping a copy.

    Raises:
        ValueError: the Dockerfile has no such instruction in exec form.
    """
    import json

    text = _sandbox_file("Dockerfile").decode().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith(f"{instruction} "):
            start = line.find("[")
            if start >= 0:
                command = json.loads(line[start:])
                return [str(part) for part in command]
    raise ValueError(f"the Dockerfile has no {instruction} in exec form")


def build_context(
    ca_files: Iterable[str | Path] = (),
    *,
    files: Sequence[tuple[str, bytes, int]] | None = None,
) -> bytes:
    """The build context as an uncompressed tar: the sandbox files plus `extra-ca/`.

    Every entry gets a fixed owner and timestamp, so the same inputs always make the same
    bytes and the engine's layer cache hits on a rebuild.

    Args:
        ca_files: PEM files (single certificates or bundles) the image must trust.
        files: (name, content, mode) entries that replace the embedded sandbox files;
            for tests and tools that build another Dockerfile the same way.

    Raises:
        InvalidCertificate: a CA file cannot be read or holds no certificate.
    """
    if files is None:
        files = [(name, _sandbox_file(name), mode) for name, mode in SANDBOX_FILES]
    certificates = _read_ca_files(ca_files)
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, content: bytes | None, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.mode = 0, 0, 0, mode
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))

        for name, content, mode in files:
            add(name, content, mode)
        add(EXTRA_CA_DIR, None, 0o755)
        for name, content in certificates:
            add(f"{EXTRA_CA_DIR}/{name}", content, 0o644)
    return buffer.getvalue()


# --------------------------------------------------------------------------- build


def _build_cause(tail: Sequence[str], error: str, instruction: str) -> BuildCause | None:
    """What most likely broke a build, when it is one of the usual suspects."""
    if instruction.upper().startswith("FROM "):
        # The classic builder pulls a missing base image; without a registry that fails
        # with a network error that does not say the image is missing.
        return "base-image"
    text = "\n".join([*tail, error])
    if re.search(r"SELF_SIGNED_CERT|UNABLE_TO_GET_ISSUER|certificate", text, re.IGNORECASE):
        return "certificate"  # a TLS-inspecting proxy is probably in the way
    return None


def build_from_context(
    client: Engine,
    context: bytes,
    *,
    tag: str,
    buildargs: dict[str, str] | None = None,
    no_cache: bool = False,
    labels: dict[str, str] | None = None,
    reporter: ProgressReporter | None = None,
) -> str:
    """Build an image from a tar build context, reporting progress; returns its id.

    The base image is never pulled (`pull=False`): a present local base is used as is,
    which is how machines without a registry build at all.

    Raises:
        BuildFailed: the build stopped; `output_tail` holds its last output lines.
        DockerError: the engine failed otherwise.
    """
    from collections import deque

    out: ProgressReporter = reporter or NullProgress()
    # The output as the engine sent it: a program's line may come in pieces (apt writes
    # "E", ": " and its message apart), and the tail joins them back into lines.
    output: deque[str] = deque(maxlen=BUILD_TAIL_CHUNKS)
    image_id: str | None = None
    current_step = ""
    instruction = ""

    class _Tail:
        """Keeps the last output lines while passing every event on."""

        def build_step(self, step: int, total: int, message: str) -> None:
            nonlocal current_step, instruction
            current_step = f"step {step}/{total} ({shorten(message, 80)})"
            instruction = message
            out.build_step(step, total, message)

        def build_output(self, line: str) -> None:
            out.build_output(line)

        def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
            out.layer(layer_id, status, current, total)

        def status(self, message: str) -> None:
            out.status(message)

        def done(self, message: str = "") -> None:
            out.done(message)

    relay = _Tail()
    try:
        for chunk in client.build(
            context, tag=tag, buildargs=buildargs, no_cache=no_cache, labels=labels
        ):
            if isinstance(chunk.get("stream"), str):
                output.append(chunk["stream"])
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
            error = handle_build_chunk(chunk, relay)
            if error is not None:
                tail = _last_lines("".join(output))
                where = f" at {current_step}" if current_step else ""
                raise BuildFailed(
                    f"Building {tag} failed{where}: {error.strip()}",
                    tag=tag,
                    output_tail=tail,
                    cause=_build_cause(tail, error, instruction),
                    instruction=instruction,
                )
        if image_id is None:
            built = client.inspect_image(tag)
            if built is None:
                raise BuildFailed(f"Building {tag} produced no image.", tag=tag)
            image_id = built.id
    except BaseException:
        out.done()
        raise
    out.done(f"Built {tag} ({image_id[7:19] if image_id.startswith('sha256:') else image_id})")
    return image_id


def _last_lines(text: str) -> list[str]:
    """The last `BUILD_TAIL_LINES` lines of build output that hold something."""
    lines = [clean_line(raw) for raw in text.splitlines()]
    return [line for line in lines if line][-BUILD_TAIL_LINES:]


def build_image(
    client: Engine,
    *,
    tag: str | None = None,
    opencode_version: str = DEFAULT_OPENCODE_VERSION,
    ca_files: Iterable[str | Path] = (),
    no_cache: bool = False,
    reporter: ProgressReporter | None = None,
) -> str:
    """Build the sandbox image from the embedded Dockerfile.

    The engine's layer cache makes a rebuild with the same inputs take a fraction of a
    second; `no_cache` forces every step to run again (to pick up Debian updates, say).
    The Dockerfile has one stage, so the build leaves no unnamed image; what it leaves
    without use is removed unless a container still uses it: the image that held `tag`
    before, and the build stages of this version that earlier releases left.

    Args:
        client: a connected engine.
        tag: image name; `opencode-cloud-sandbox:<opencode_version>` by default.
        opencode_version: the opencode release (npm `opencode-ai`) to install.
        ca_files: PEM certificates (or bundles) to trust during the build and in the
            running sandbox, such as a corporate proxy's CA.
        no_cache: rebuild every layer.
        reporter: receives build steps and output; nothing is shown by default.

    Returns:
        The new image's id (`sha256:...`).

    Raises:
        InvalidCertificate: a CA file cannot be read or holds no certificate.
        BuildFailed: a build step failed; `output_tail` holds the last output lines.
        DockerError: the engine failed otherwise.
    """
    context = build_context(ca_files)
    tag = tag or image_ref(opencode_version)
    previous = inspect_image(client, tag)
    image_id = build_from_context(
        client,
        context,
        tag=tag,
        buildargs={"OPENCODE_VERSION": opencode_version, "OCC_VERSION": __version__},
        no_cache=no_cache,
        reporter=reporter,
    )
    # What the build left without use: the image that lost its name to the new one, and
    # an earlier release's build stages of this version (no longer anyone's cache).
    unused = [previous.id] if previous and previous.id != image_id else []
    _remove_quietly(client, [*unused, *_build_stages(client, opencode_version)])
    return image_id


def remove_unnamed_sandbox_images(client: Engine) -> list[str]:
    """Remove the sandbox images that lost their name to a newer build while a container
    still ran on them (the build could not remove them then), once none does; their ids.

    Only final images without a name are taken: a snapshot names its image by tag, and
    the engine refuses to remove an image a container (of any instance) still uses.
    """
    try:
        unnamed = client.list_images(labels=[LABEL_EDGE], dangling=True)
    except DockerError:
        return []
    removed: list[str] = []
    for image in unnamed:
        if image.tags or image.labels.get(LABEL_STAGE) == BUILD_STAGE:
            continue
        try:
            client.remove_image(image.id)
        except DockerError:
            continue  # still in use
        removed.append(image.id)
    return removed


def _build_stages(client: Engine, opencode_version: str) -> list[str]:
    """Ids of the unnamed build-stage images of `opencode_version` the engine holds."""
    labels = [f"{LABEL_STAGE}={BUILD_STAGE}", f"{LABEL_OPENCODE_VERSION}={opencode_version}"]
    try:
        return [image.id for image in client.list_images(labels=labels, dangling=True)]
    except DockerError:
        return []


def _remove_quietly(client: Engine, image_ids: Iterable[str]) -> None:
    """Remove images no name refers to, with their unshared layers; leave any that a
    container still uses or that gained a name (the engine refuses without force)."""
    for image_id in image_ids:
        try:
            client.remove_image(image_id)
        except DockerError:
            continue


# --------------------------------------------------------------------------- derived


# On a derived image: the image it was built on, by name and by id. A derived image whose
# base id is no longer the base name's is built again.
LABEL_BASE_REF = "io.opencode-cloud.base-image"
LABEL_BASE_ID = "io.opencode-cloud.base-image-id"
# How a derived image's tag ends: `-x` and a hash of what it adds.
DERIVED_SUFFIX = "-x"
DERIVED_HASH_LENGTH = 12
# apt's own error lines ("E: Unable to locate package nosuchpkg").
_APT_ERROR = re.compile(r"^E: .+")


def derived_ref(base: str, packages: Sequence[str], lines: Sequence[str]) -> str:
    """The local name of the image that adds `packages` and Dockerfile `lines` to `base`:
    `opencode-cloud-sandbox:<base tag>-x<hash>` for the sandbox image, else
    `opencode-cloud-sandbox:derived-x<hash>`. The hash covers the base's name and what is
    added, so the same inputs always name the same image (and a second start builds
    nothing).
    """
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps([base, list(packages), list(lines)]).encode()).hexdigest()
    repository, tag = _split_ref(base)
    stem = tag if repository == IMAGE_NAME and "@" not in base else "derived"
    return f"{IMAGE_NAME}:{stem}{DERIVED_SUFFIX}{digest[:DERIVED_HASH_LENGTH]}"


def derived_dockerfile(
    base: ImageInfo, base_ref: str, packages: Sequence[str], lines: Sequence[str]
) -> str:
    """The Dockerfile of a derived image.

    The packages and the user's lines are installed as root; the file then ends with the
    base's own user, so the container starts as the base image does. The entrypoint,
    command and health check are the base's: the lines cannot set them (the
    configuration refuses FROM, USER, ENTRYPOINT, CMD, HEALTHCHECK, ... lines).
    """
    # The sandbox image starts as root (its entrypoint drops to its users): then there is
    # no user to switch, and the derived image's is the base's exactly (none).
    switch = base.user not in ("", "root", "0", "0:0")
    out = [f"FROM {base_ref}", *(["USER root"] if switch else [])]
    if packages:
        out.append(
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            f"{' '.join(packages)} && rm -rf /var/lib/apt/lists/*"
        )
    out.extend(lines)
    if switch:
        out.append(f"USER {base.user}")
    return "\n".join(out) + "\n"


def is_derived_container(info: ContainerInfo) -> bool:
    """True for a container of a derived image (its labels are its image's)."""
    return bool(info.labels.get(LABEL_BASE_ID))


def derived_current(derived: ImageInfo | None, base: ImageInfo | None) -> bool:
    """True when `derived` exists and was built on `base` as it is now."""
    return bool(derived and base and derived.labels.get(LABEL_BASE_ID) == base.id)


def build_derived(
    client: Engine,
    base_ref: str,
    packages: Sequence[str],
    lines: Sequence[str],
    *,
    no_cache: bool = False,
    reporter: ProgressReporter | None = None,
) -> str:
    """Build the image that adds Debian `packages` and Dockerfile `lines` to `base_ref`
    (which must exist), named `derived_ref(...)`; returns its id. The image that held that
    name before, built on an older base, is removed unless a container still uses it.

    Raises:
        BuildFailed: the build stopped; a package apt does not know fails with apt's own
            line (`E: Unable to locate package ...`) as the message.
        DockerError: the engine failed otherwise.
    """
    tag = derived_ref(base_ref, packages, lines)
    base = client.inspect_image(base_ref)
    if base is None:
        raise BuildFailed(f"Building {tag} failed: its base {base_ref} is not in the engine.")
    dockerfile = derived_dockerfile(base, base_ref, packages, lines).encode()
    previous = client.inspect_image(tag)
    try:
        image_id = build_from_context(
            client,
            build_context(files=[("Dockerfile", dockerfile, 0o644)]),
            tag=tag,
            no_cache=no_cache,
            labels={LABEL_BASE_REF: base_ref, LABEL_BASE_ID: base.id},
            reporter=reporter,
        )
    except BuildFailed as error:
        apt = [line for line in error.output_tail if _APT_ERROR.match(line.strip())]
        if not apt:
            raise
        raise BuildFailed(
            apt[-1].strip(),
            tag=tag,
            output_tail=error.output_tail,
            cause="packages",
            instruction=error.instruction,
        ) from None
    if previous is not None and previous.id != image_id:
        _remove_quietly(client, [previous.id])
    return image_id


# --------------------------------------------------------------------------- pull


def _split_ref(image: str) -> tuple[str, str]:
    """(repository, tag) of `image`; a bare tag means the sandbox image with that tag."""
    if ":" not in image.rsplit("/", 1)[-1]:
        if "/" in image or not image:
            return image or IMAGE_NAME, "latest"
        return IMAGE_NAME, image
    repository, tag = image.rsplit(":", 1)
    return repository, tag


def local_ref(tag: str = IMAGE_TAG_DEFAULT) -> str:
    """The local name a pull of `tag` ends up under (see `pull_image`)."""
    repository, version = _split_ref(tag)
    return f"{repository}:{version}"


def registry_ref(registry: str, tag: str = IMAGE_TAG_DEFAULT) -> str:
    """Where the image `tag` lives in `registry` (a host, or a host and namespace).

    `tag` is a bare tag (`1.18.33`, meaning the sandbox image) or a local name
    (`opencode-cloud-sandbox:1.18.33`); the registry holds it under the name's last part:
    `127.0.0.1:5000` gives `127.0.0.1:5000/opencode-cloud-sandbox:1.18.33`, and
    `ghcr.io/acme` gives `ghcr.io/acme/opencode-cloud-sandbox:1.18.33`.
    """
    repository, version = _split_ref(tag)
    return f"{registry.strip().rstrip('/')}/{repository.rsplit('/', 1)[-1]}:{version}"


def _pull_once(client: Engine, ref: str, reporter: ProgressReporter) -> str | None:
    """Pull `ref`; return None on success, else the engine's error text."""
    repository, tag = ref.rsplit(":", 1)
    try:
        for chunk in client.pull(repository, tag):
            error = handle_pull_chunk(chunk, reporter)
            if error is not None:
                return error
    except DockerError as exc:
        return exc.message
    return None


def pull_image(
    client: Engine,
    registries: Sequence[str],
    *,
    tag: str = IMAGE_TAG_DEFAULT,
    retries: int = DEFAULT_PULL_RETRIES,
    backoff: float = DEFAULT_PULL_BACKOFF,
    reporter: ProgressReporter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Pull the sandbox image from the first registry that serves it; return where from.

    Each registry gets up to `retries` attempts, waiting `backoff`, then twice that, ...
    between them; an answer that another attempt cannot change (unknown tag, access
    denied) moves on to the next registry at once. The pulled image is tagged with the
    canonical local name (`local_ref(tag)`, `opencode-cloud-sandbox:<tag>` for a bare
    tag) and its registry name is dropped, so the container layer finds it wherever it
    came from.

    Args:
        client: a connected engine.
        registries: registry hosts (optionally with a namespace), tried in order.
        tag: the image tag (the opencode version by convention), or the full local
            name the image must end up under (`opencode-cloud-sandbox:1.18.33`).
        retries: attempts per registry (at least one).
        backoff: seconds before the second attempt; doubles after each failure.
        reporter: receives per-layer byte progress and status lines.
        sleep: how to wait between attempts (tests pass a fake).

    Returns:
        The registry reference the image came from (`127.0.0.1:5000/...:1.18.33`).

    Raises:
        PullFailed: no registry served the image; the message names each one's error.
        DockerError: the engine failed to tag the pulled image.
    """
    reporter = reporter or NullProgress()
    if not registries:
        raise PullFailed(local_ref(tag))
    failures: list[str] = []
    for registry in registries:
        ref = registry_ref(registry, tag)
        error = _pull_with_retries(client, ref, retries, backoff, reporter, sleep)
        if error is None:
            return _adopt(client, ref, tag, reporter)
        failures.append(f"{registry}: {error}")
        reporter.status(f"Could not pull from {registry}: {error}")
    reporter.done()
    raise PullFailed(local_ref(tag), failures)


def pull_reference(
    client: Engine,
    ref: str,
    *,
    retries: int = DEFAULT_PULL_RETRIES,
    backoff: float = DEFAULT_PULL_BACKOFF,
    reporter: ProgressReporter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Pull an image by its full reference (`registry.example.com/team/sandbox:1.0`), from
    the registry it names, with the same retries as `pull_image`; returns `ref`.

    Raises:
        PullFailed: the registry did not serve it.
    """
    reporter = reporter or NullProgress()
    repository, tag = _split_ref(ref)
    error = _pull_with_retries(client, f"{repository}:{tag}", retries, backoff, reporter, sleep)
    reporter.done("" if error else f"Pulled {ref}")
    if error is not None:
        raise PullFailed(ref, [error])
    return ref


def _pull_with_retries(
    client: Engine,
    ref: str,
    retries: int,
    backoff: float,
    reporter: ProgressReporter,
    sleep: Callable[[float], None],
) -> str | None:
    """Pull `ref`, trying again after a passing failure; None on success, else the error."""
    error = "not tried"
    for attempt in range(max(1, retries)):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            reporter.status(f"Retrying {ref} in {delay:g} s ({error})")
            sleep(delay)
        reporter.status(f"Pulling {ref}")
        result = _pull_once(client, ref, reporter)
        if result is None:
            return None
        error = " ".join(result.split())
        if _PERMANENT_PULL_ERROR.search(error):
            break
    return error


def _adopt(client: Engine, ref: str, tag: str, reporter: ProgressReporter) -> str:
    """Give the pulled image its canonical local name and drop the registry's name."""
    canonical = local_ref(tag)
    repository, version = _split_ref(tag)
    pulled = client.inspect_image(ref)
    if pulled is None:
        raise PullFailed(canonical, [f"{ref}: pulled, but the engine does not list it"])
    client.tag_image(pulled.id, repository, version)
    if ref != canonical:
        # Only the name goes; the layers stay under the canonical name.
        client.remove_image(ref, noprune=True)
    reporter.done(f"Pulled {ref} as {canonical}")
    return ref
