"""Building images through the library on the real engine: progress, cache, CA files, errors.

The real sandbox image is exercised by the e2e suite; here a tiny Dockerfile on the
busybox test image goes through the same code path (build context, stream parsing,
errors) in seconds.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opencode_cloud.docker.errors import BuildFailed, InvalidCertificate
from opencode_cloud.docker.image import (
    EXTRA_CA_DIR,
    build_context,
    build_from_context,
    image_exists,
    image_opencode_version,
    split_certificates,
)
from opencode_cloud.instance import Instance

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self) -> None:
        self.steps: list[tuple[int, int, str]] = []
        self.output: list[str] = []
        self.finished: list[str] = []

    def build_step(self, step: int, total: int, message: str) -> None:
        self.steps.append((step, total, message))

    def build_output(self, line: str) -> None:
        self.output.append(line)

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        return None

    def status(self, message: str) -> None:
        return None

    def done(self, message: str = "") -> None:
        self.finished.append(message)


LABELS: dict[str, str] = {}


def tiny_dockerfile(base: str, body: str) -> list[tuple[str, bytes, int]]:
    labels = " ".join(f"{key}={value}" for key, value in LABELS.items())
    text = f"FROM {base}\nLABEL {labels} io.opencode-cloud.opencode-version=0.0.0-test\n{body}\n"
    return [("Dockerfile", text.encode(), 0o644)]


@pytest.fixture
def tag(docker_client: Any, docker_sdk: Any, instance: Instance) -> Iterator[str]:
    """A unique image name, removed after the test; builds carry the test-session label."""
    LABELS.clear()
    LABELS.update(instance.extra_labels)
    name = f"opencode-cloud-test/tiny:{instance.name}"
    yield name
    if image_exists(docker_client, name):
        docker_sdk.images.remove(name, force=True)
    # A failed build keeps its last good step as an unnamed image; it carries our label.
    for key, value in instance.extra_labels.items():
        for image in docker_sdk.images.list(filters={"dangling": True, "label": f"{key}={value}"}):
            docker_sdk.images.remove(image.id, force=True)


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh self-signed CA certificate, like a corporate proxy's."""
    directory = tmp_path_factory.mktemp("ca")
    cert = directory / "corp-proxy-ca.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=opencode-cloud test proxy CA",
            "-keyout", str(directory / "key.pem"), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert


def run_in(docker_sdk: Any, image: str, *command: str) -> str:
    output = docker_sdk.containers.run(image, list(command), remove=True, labels=dict(LABELS))
    return bytes(output).decode()


def test_steps_are_reported_and_cache_is_used(
    docker_client: Any, docker_sdk: Any, busybox_image: str, tag: str
) -> None:
    files = tiny_dockerfile(
        busybox_image, 'RUN cat /proc/sys/kernel/random/uuid > /stamp\nCMD ["cat", "/stamp"]'
    )
    context = build_context(files=files)
    first = Recorder()
    image_id = build_from_context(docker_client, context, tag=tag, reporter=first)
    assert image_id.startswith("sha256:")
    assert [(s, t) for s, t, _ in first.steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert first.steps[0][2] == f"FROM {busybox_image}"
    assert first.finished and tag in first.finished[-1]
    stamp = run_in(docker_sdk, tag)

    again = Recorder()
    assert build_from_context(docker_client, context, tag=tag, reporter=again) == image_id
    assert any("Using cache" in line for line in again.output)

    fresh = Recorder()
    rebuilt = build_from_context(docker_client, context, tag=tag, no_cache=True, reporter=fresh)
    assert rebuilt != image_id
    assert not any("Using cache" in line for line in fresh.output)
    assert run_in(docker_sdk, tag) != stamp
    assert image_opencode_version(docker_client, tag) == "0.0.0-test"
    # The first build lost its name to the rebuild; drop it rather than leave it dangling.
    docker_sdk.images.remove(image_id, force=True)


def test_build_leaves_no_unnamed_image_behind(
    docker_client: Any,
    docker_sdk: Any,
    busybox_image: str,
    tag: str,
    instance: Instance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A build of the one-stage Dockerfile leaves nothing unnamed, cached or not; it also
    removes the build stage of its version that an earlier release's two stages left, and
    after a no-cache build the image it replaced."""
    from opencode_cloud.docker import image as images

    labels = " ".join(f"{key}={value}" for key, value in instance.extra_labels.items())
    version = f"0.0.0-{instance.name}"  # this test's images alone carry it
    earlier = (  # the shape of an earlier release's Dockerfile
        f"FROM {busybox_image} AS build\n"
        "RUN cat /proc/sys/kernel/random/uuid > /stamp\n"
        f"LABEL {labels} io.opencode-cloud.stage=build"
        f" io.opencode-cloud.opencode-version={version}\n"
        f"FROM {busybox_image}\n"
        f"LABEL {labels} io.opencode-cloud.opencode-version={version}\n"
        "COPY --from=build /stamp /stamp\n"
    ).encode()
    one_stage = (
        f"FROM {busybox_image}\n"
        "ARG OPENCODE_VERSION\n"
        "RUN cat /proc/sys/kernel/random/uuid > /stamp\n"
        "ARG OCC_VERSION\n"
        f"LABEL {labels} io.opencode-cloud.opencode-version=${{OPENCODE_VERSION}}\n"
    ).encode()
    build_from_context(
        docker_client, build_context(files=[("Dockerfile", earlier, 0o644)]), tag=tag
    )
    embedded = images._sandbox_file
    monkeypatch.setattr(
        images, "_sandbox_file", lambda name: one_stage if name == "Dockerfile" else embedded(name)
    )

    def unnamed() -> list[str]:
        return [
            image.id
            for image in docker_sdk.images.list(
                filters={"dangling": True, "label": f"io.opencode-cloud.opencode-version={version}"}
            )
        ]

    assert len(unnamed()) == 1  # the earlier release's build stage
    first = images.build_image(docker_client, tag=tag, opencode_version=version)
    assert unnamed() == []
    assert images.build_image(docker_client, tag=tag, opencode_version=version) == first
    assert unnamed() == []

    fresh = images.build_image(docker_client, tag=tag, opencode_version=version, no_cache=True)
    assert fresh != first
    assert not image_exists(docker_client, first)
    assert unnamed() == []


def test_extra_ca_files_are_in_the_context(
    docker_client: Any,
    docker_sdk: Any,
    busybox_image: str,
    tag: str,
    test_ca: Path,
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle.crt"
    host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    two = split_certificates(host_bundle.read_bytes())[:2] if host_bundle.exists() else []
    bundle.write_bytes(b"".join(two))
    ca_files = [test_ca, bundle] if two else [test_ca]
    files = tiny_dockerfile(busybox_image, f"COPY {EXTRA_CA_DIR}/ /certs/")
    build_from_context(docker_client, build_context(ca_files, files=files), tag=tag)

    listing = run_in(docker_sdk, tag, "ls", "/certs").split()
    # One certificate per file: update-ca-certificates links each file by its hash.
    expected = ["00-corp-proxy-ca-000.crt"]
    if two:
        expected += ["01-bundle-000.crt", "01-bundle-001.crt"]
    assert listing == expected
    inside = run_in(docker_sdk, tag, "cat", "/certs/00-corp-proxy-ca-000.crt")
    assert inside.strip() == test_ca.read_text().strip()


def test_empty_extra_ca_builds(
    docker_client: Any, docker_sdk: Any, busybox_image: str, tag: str
) -> None:
    files = tiny_dockerfile(busybox_image, f"COPY {EXTRA_CA_DIR}/ /certs/")
    build_from_context(docker_client, build_context(files=files), tag=tag)
    assert run_in(docker_sdk, tag, "ls", "-A", "/certs").strip() == ""


def test_context_is_deterministic(test_ca: Path) -> None:
    assert build_context([test_ca]) == build_context([test_ca])


def test_failed_step_raises_with_last_lines(
    docker_client: Any, busybox_image: str, tag: str
) -> None:
    files = tiny_dockerfile(busybox_image, "RUN echo marker-before-failure && exit 3")
    recorder = Recorder()
    with pytest.raises(BuildFailed) as info:
        build_from_context(docker_client, build_context(files=files), tag=tag, reporter=recorder)
    assert "step 3/3" in info.value.message
    assert "non-zero code: 3" in info.value.message
    # The last output lines travel with the error (the CLI prints them under it).
    assert "marker-before-failure" in info.value.output_tail
    assert info.value.output_tail[0].startswith("Step 1/3 : FROM ")
    assert info.value.tag == tag
    assert info.value.cause is None
    assert recorder.finished == [""]  # the display was released


def test_certificate_errors_point_at_ca_files(
    docker_client: Any, busybox_image: str, tag: str
) -> None:
    files = tiny_dockerfile(
        busybox_image, "RUN echo 'npm error code SELF_SIGNED_CERT_IN_CHAIN' && exit 1"
    )
    with pytest.raises(BuildFailed) as info:
        build_from_context(docker_client, build_context(files=files), tag=tag)
    # A TLS-inspecting proxy is the likely cause: the CLI then names `--ca-file`.
    assert info.value.cause == "certificate"
    assert any("SELF_SIGNED_CERT_IN_CHAIN" in line for line in info.value.output_tail)


def test_missing_base_image_is_explained(docker_client: Any, tag: str) -> None:
    base = f"opencode-cloud-test/absent:{uuid.uuid4().hex}"
    files = tiny_dockerfile(base, "")
    with pytest.raises(BuildFailed) as info:
        build_from_context(docker_client, build_context(files=files), tag=tag)
    # The base image is missing: the CLI then points at scripts/base-image.sh.
    assert info.value.cause == "base-image"
    assert info.value.instruction == f"FROM {base}"


def test_invalid_ca_file(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a")
    with pytest.raises(InvalidCertificate, match="no PEM certificate") as info:
        build_context([not_pem])
    assert (info.value.path, info.value.unreadable) == (str(not_pem), False)
    with pytest.raises(InvalidCertificate, match="Cannot read") as info:
        build_context([tmp_path / "missing.crt"])
    assert (info.value.path, info.value.unreadable) == (str(tmp_path / "missing.crt"), True)


def test_an_image_that_lost_its_name_while_in_use_goes_once_unused(
    docker_client: Any, docker_sdk: Any, busybox_image: str, tag: str, instance: Instance
) -> None:
    """A rebuild cannot remove the image a running container still uses; once that
    container is gone, `remove_unnamed_sandbox_images` removes it, and leaves build
    stages and named images alone."""
    from opencode_cloud.docker import image as images

    sandbox_like = tiny_dockerfile(
        busybox_image, "LABEL io.opencode-cloud.edge=4\nRUN cat /proc/sys/kernel/random/uuid > /s"
    )
    labels = " ".join(f"{key}={value}" for key, value in LABELS.items())
    two_stages = (  # the classic builder keeps the first stage as an unnamed image
        f"FROM {busybox_image} AS build\nRUN date > /s\n"
        f"LABEL {labels} io.opencode-cloud.edge=4 io.opencode-cloud.stage=build\n"
        f"FROM {busybox_image}\nLABEL {labels}\nCOPY --from=build /s /s\n"
    ).encode()
    build_from_context(
        docker_client, build_context(files=[("Dockerfile", two_stages, 0o644)]), tag=f"{tag}-2"
    )
    stages = docker_sdk.images.list(
        filters={"dangling": True, "label": [f"{k}={v}" for k, v in LABELS.items()]}
    )
    assert len(stages) == 1
    stage_id = stages[0].id
    docker_sdk.images.remove(f"{tag}-2")
    old = build_from_context(docker_client, build_context(files=sandbox_like), tag=tag)
    container = docker_sdk.containers.create(tag, ["sleep", "60"], labels=dict(LABELS))
    try:
        new = build_from_context(
            docker_client, build_context(files=sandbox_like), tag=tag, no_cache=True
        )
        assert new != old
        unnamed = images.inspect_image(docker_client, old)
        assert unnamed is not None and unnamed.tags == ()
        assert old not in images.remove_unnamed_sandbox_images(docker_client)
        assert image_exists(docker_client, old)  # its container still uses it
        container.remove(force=True)
        assert old in images.remove_unnamed_sandbox_images(docker_client)
        assert not image_exists(docker_client, old)
        assert image_exists(docker_client, new) and image_exists(docker_client, stage_id)
    finally:
        if _exists(docker_sdk, container.id):
            container.remove(force=True)
        for leftover in (old, stage_id):
            if image_exists(docker_client, leftover):
                docker_sdk.images.remove(leftover, force=True)


def _exists(docker_sdk: Any, container_id: str) -> bool:
    return any(c.id == container_id for c in docker_sdk.containers.list(all=True))
