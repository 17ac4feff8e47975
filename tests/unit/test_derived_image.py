"""`extra_packages` and `extra_dockerfile`: their rules, the derived image's name and
Dockerfile, when it is built, and how start, update and rollback use it (in-memory engine;
tests/e2e/test_extra_packages.py builds real ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes import SANDBOX_ENV, FakeEngine
from opencode_cloud.config.errors import ConfigValidationError
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.config.schema import Config
from opencode_cloud.config.store import load_config, validate_config
from opencode_cloud.docker.errors import BuildFailed
from opencode_cloud.docker.image import (
    LABEL_BASE_ID,
    LABEL_BASE_REF,
    LABEL_OPENCODE_VERSION,
    derived_dockerfile,
    derived_ref,
)
from opencode_cloud.docker.models import ImageInfo
from opencode_cloud.instance import Instance
from opencode_cloud.service.errors import VersionChange
from opencode_cloud.service.image import base_image_for, ensure_image, image_for
from opencode_cloud.service.service import Service
from opencode_cloud.service.snapshots import remove_unneeded_images
from service_helpers import NAME, OLD, OLD_REF, REF, Make

# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    "name", ["jq", "build-essential", "g++", "libssl3", "python3.11", "r-base"]
)
def test_debian_package_names_are_accepted(name: str) -> None:
    assert Config(extra_packages=[name]).extra_packages == [name]


@pytest.mark.parametrize(
    "name", ["Foo Bar", "Foo", "j", "-o=APT::Foo", "jq;rm", "jq && id", "", ".jq", "jq\n"]
)
def test_anything_else_is_refused(name: str) -> None:
    with pytest.raises(ConfigValidationError, match="Debian package names"):
        validate_config({"extra_packages": [name]})


@pytest.mark.parametrize(
    "line",
    ["RUN pip install ruff", "run make install", "ARG X=1", "  RUN  id"],
)
def test_lines_that_add_to_the_image_are_accepted(line: str) -> None:
    assert Config(extra_dockerfile=[line]).extra_dockerfile == [line]


@pytest.mark.parametrize(
    "line",
    [
        "FROM debian:bookworm-slim",
        "ENV PATH=/home/opencode/.local/bin:/usr/bin",
        "LABEL io.opencode-cloud.edge=3",
        "WORKDIR /home/opencode",
        "USER opencode",
        "user root",
        'ENTRYPOINT ["/bin/sh"]',
        'CMD ["sh"]',
        "HEALTHCHECK NONE",
        "COPY a /b",
        "ONBUILD RUN id",
        "RUN",
        "RUN a\nUSER root",
        "RUN a\rUSER root",
        "# RUN a comment",
        # A line continued onto the next would swallow the USER line that ends the file.
        "RUN true \\",
        "RUN true \\ \t",
        # Newer engines read a here-document's lines up to its delimiter, here the USER line.
        'RUN cat <<"USER opencode"',
        "RUN cat <<-EOF >/x",
    ],
)
def test_lines_that_would_change_how_the_container_starts_are_refused(line: str) -> None:
    with pytest.raises(ConfigValidationError, match="one-line Dockerfile instructions"):
        validate_config({"extra_dockerfile": [line]})


# --------------------------------------------------------------------------- name, file


def test_the_name_says_what_it_is_built_on_and_changes_with_what_it_adds() -> None:
    name = derived_ref(REF, ["jq"], [])
    assert name.startswith(f"{REF}-x") and len(name) == len(REF) + 14
    assert derived_ref(REF, ["jq"], []) == name
    others = {
        derived_ref(REF, ["gcc"], []),
        derived_ref(REF, ["jq"], ["RUN make"]),
        derived_ref(OLD_REF, ["jq"], []),
        derived_ref(REF, ["jq", "gcc"], []),
    }
    assert name not in others and len(others) == 4
    custom = derived_ref("registry.example.com/team/sandbox:1.0", ["jq"], [])
    assert custom.startswith("opencode-cloud-sandbox:derived-x")


def test_the_dockerfile_installs_as_root_and_ends_as_the_base_starts() -> None:
    text = derived_dockerfile(ImageInfo("sha256:b"), REF, ["jq", "gcc"], ["RUN make"])
    assert text.splitlines() == [
        f"FROM {REF}",
        "RUN apt-get update && apt-get install -y --no-install-recommends jq gcc "
        "&& rm -rf /var/lib/apt/lists/*",
        "RUN make",
    ]
    other = derived_dockerfile(ImageInfo("sha256:b", user="1000:1000"), REF, [], ["RUN id"])
    assert other.splitlines() == [f"FROM {REF}", "USER root", "RUN id", "USER 1000:1000"]


# --------------------------------------------------------------------------- building


def test_the_image_is_built_once_on_the_base_and_again_when_the_base_changes(
    fake: FakeEngine,
) -> None:
    config = Config(extra_packages=["jq"])
    assert base_image_for(config) == REF and image_for(config) == derived_ref(REF, ["jq"], [])
    assert ensure_image(fake, config) == "built"
    derived = fake.inspect_image(image_for(config))
    base = fake.inspect_image(REF)
    assert derived is not None and base is not None
    assert derived.labels[LABEL_BASE_ID] == base.id and derived.labels[LABEL_BASE_REF] == REF
    assert derived.labels[LABEL_OPENCODE_VERSION] == "1.18.33"  # the base's, inherited
    builds = len(fake.builds)

    assert ensure_image(fake, config) == "present"
    assert len(fake.builds) == builds

    fake.add_image(REF, env=SANDBOX_ENV, labels={LABEL_OPENCODE_VERSION: "1.18.33"})  # anew
    assert ensure_image(fake, config) == "built"
    rebuilt = fake.inspect_image(image_for(config))
    assert rebuilt is not None and rebuilt.id != derived.id
    assert fake.inspect_image(derived.id) is None  # the one of the old base is removed


def test_a_missing_base_is_built_first(fake: FakeEngine) -> None:
    config = Config(opencode_version=OLD, extra_packages=["jq"])
    assert ensure_image(fake, config) == "built"
    assert [tag for call, tag in fake.calls if call == "build"] == [OLD_REF, image_for(config)]


def test_a_package_apt_does_not_know_fails_with_apts_own_line(fake: FakeEngine) -> None:
    config = Config(extra_packages=["jq", "nosuchpkg"])
    with pytest.raises(BuildFailed) as failed:
        ensure_image(fake, config)
    assert str(failed.value) == "E: Unable to locate package nosuchpkg"
    assert failed.value.cause == "packages"
    assert fake.inspect_image(image_for(config)) is None


# --------------------------------------------------------------------------- start


def test_adding_packages_re_creates_the_container_on_the_derived_image(
    make: Make, fake: FakeEngine
) -> None:
    make().start()
    result = make(extra_packages=["jq"]).start()
    assert result.image == derived_ref(REF, ["jq"], []) and result.image_action == "built"
    assert result.recreated_because == ["image"]
    assert fake.inspect_container(NAME).image == result.image


def test_a_failed_build_leaves_the_running_container_as_it_was(
    make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    make(extra_packages=["jq"]).start()
    before = fake.inspect_container(NAME)
    service = make(extra_packages=["jq", "nosuchpkg"])
    written = paths.config_file.read_bytes()
    with pytest.raises(BuildFailed, match=r"^E: Unable to locate package nosuchpkg$"):
        service.start()
    with pytest.raises(BuildFailed, match="nosuchpkg"):
        service.prepare_image()  # what a restart does before it stops the container
    after = fake.inspect_container(NAME)
    assert (after.id, after.image, after.running) == (before.id, before.image, True)
    assert paths.config_file.read_bytes() == written  # the user's value stays, to be fixed


def test_other_packages_replace_the_image_of_the_old_ones(make: Make, fake: FakeEngine) -> None:
    make(extra_packages=["jq"]).start()
    make(extra_packages=["gcc"]).start()
    assert fake.inspect_image(derived_ref(REF, ["jq"], [])) is None
    assert fake.inspect_container(NAME).image == derived_ref(REF, ["gcc"], [])
    make().start()  # no packages: the sandbox image, which stays
    assert fake.inspect_image(derived_ref(REF, ["gcc"], [])) is None
    assert fake.inspect_image(REF) is not None


def test_another_version_is_still_a_version_change(make: Make, fake: FakeEngine) -> None:
    fake.add_image(OLD_REF, env=SANDBOX_ENV, labels={LABEL_OPENCODE_VERSION: OLD})
    make(extra_packages=["jq"]).start()
    with pytest.raises(VersionChange):
        make(extra_packages=["jq"], opencode_version=OLD).start()


# --------------------------------------------------------------------------- update


def test_update_builds_the_packages_on_the_new_base_and_rollback_returns(
    make: Make, versions, fake: FakeEngine, paths: InstancePaths
) -> None:
    make(opencode_version=OLD, extra_packages=["jq"]).start()
    updater = versions(opencode_version=OLD, extra_packages=["jq"])
    target = updater.service.config.model_copy(update={"opencode_version": "1.18.33"})
    updater.update(target)
    assert fake.inspect_container(NAME).image == derived_ref(REF, ["jq"], [])
    # What a rollback needs stays: the old derived image and the base it is built on.
    assert fake.inspect_image(OLD_REF) is not None
    assert fake.inspect_image(derived_ref(OLD_REF, ["jq"], [])) is not None
    assert remove_unneeded_images(fake, [OLD_REF, derived_ref(OLD_REF, ["jq"], [])]) == []

    again = versions(extra_packages=["jq"])
    again.rollback()
    assert fake.inspect_container(NAME).image == derived_ref(OLD_REF, ["jq"], [])
    config = load_config(paths.config_file).config
    assert (config.opencode_version, config.image, config.extra_packages) == (OLD, None, ["jq"])


# --------------------------------------------------------------------------- uninstall


def test_uninstall_takes_the_derived_image_and_its_base_when_nobody_else_uses_them(
    make: Make, fake: FakeEngine
) -> None:
    service = make(extra_packages=["jq"])
    service.start()
    plan = service.plan_uninstall(volumes=False)
    assert [image.tags for image in plan.images] == [(derived_ref(REF, ["jq"], []),), (REF,)]


def test_uninstall_keeps_the_base_another_instances_derived_image_needs(
    make: Make, fake: FakeEngine, tmp_path: Path
) -> None:
    service = make(extra_packages=["jq"])
    service.start()
    other = Service(
        fake, Config(extra_packages=["gcc"]), Instance("other"), InstancePaths(tmp_path / "o")
    )
    other.ensure_image()
    other.create()
    plan = service.plan_uninstall(volumes=False)
    assert [image.tags for image in plan.images] == [(derived_ref(REF, ["jq"], []),)]
    [kept] = plan.kept_images
    assert kept.image.startswith(f"{REF} (") and kept.reason.startswith("used by container")
