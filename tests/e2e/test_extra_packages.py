"""Packages the agent needs: `extra_packages` and `extra_dockerfile` make an image derived
from the sandbox image, on the real engine with the real image and Debian's mirror."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from occ_helpers import api, docker, remove_containers, remove_images, run
from opencode_cloud.defaults import IMAGE_NAME, RUNTIME_UID
from opencode_cloud.docker.image import derived_ref

pytestmark = pytest.mark.e2e


# The derived images each test made, by instance.
_MADE: dict[str, set[str]] = {}


@pytest.fixture
def derived_images(instance) -> Iterator[None]:
    """The derived images a test made are removed after it (its containers first: they
    hold them)."""
    yield
    remove_containers(instance)
    remove_images(*_MADE.pop(instance.name, set()))


def _remember(occ_env: dict[str, str], image: str) -> None:
    _MADE.setdefault(occ_env["OCC_INSTANCE"], set()).add(image)


def _container(occ_env: dict[str, str]) -> str:
    return f"opencode-cloud-{occ_env['OCC_INSTANCE']}"


def _image_id(occ_env: dict[str, str]) -> str:
    return docker("inspect", "-f", "{{.Image}}", _container(occ_env)).strip()


def _shell(occ_env: dict[str, str], script: str) -> str:
    return run(occ_env, "shell", "--", "sh", "-c", script).stdout


def test_a_package_is_there_for_the_agent_and_a_name_apt_does_not_know_changes_nothing(
    occ_env, derived_images
) -> None:
    run(occ_env, "config", "set", "extra_packages", "jq")
    started = json.loads(run(occ_env, "--json", "start").stdout)
    _remember(occ_env, started["image"])
    assert started["image_action"] == "built"
    assert started["image"].startswith("opencode-cloud-sandbox:1.18.33-x")
    assert _shell(occ_env, "id -u; jq --version").split() == [str(RUNTIME_UID), "jq-1.6"]
    first = _image_id(occ_env)

    # The same inputs build nothing: the restart keeps the image (and its container's id).
    again = json.loads(run(occ_env, "--json", "restart").stdout)
    assert again["image_action"] == "present" and again["healthy"] is True
    assert _image_id(occ_env) == first

    # A name apt does not know: apt's own line, and the old container serves on.
    run(occ_env, "config", "set", "extra_packages", "jq,nosuchpkg")
    for command in ("restart", "start"):
        failed = run(occ_env, command, check=False)
        assert failed.returncode != 0, failed.stderr
        assert "Error: E: Unable to locate package nosuchpkg\n" in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr
        status = json.loads(run(occ_env, "--json", "status").stdout)
        assert status["running"] and status["http_health"] == "healthy", status
        assert _image_id(occ_env) == first
    assert json.loads(run(occ_env, "config", "get", "extra_packages").stdout) == ["jq", "nosuchpkg"]

    # Fixed, the next start serves the image it had, without a build.
    run(occ_env, "config", "set", "extra_packages", "jq")
    fixed = json.loads(run(occ_env, "--json", "start").stdout)
    assert fixed["image_action"] == "present" and _image_id(occ_env) == first


def test_dockerfile_lines_run_as_root_and_the_container_starts_as_the_sandbox_does(
    occ_env, derived_images, sandbox_image
) -> None:
    lines = ["ARG SETTING=on", "RUN (id -u; echo $SETTING) > /etc/occ-extra-built-by"]
    run(occ_env, "config", "set", "extra_dockerfile", json.dumps(lines))
    started = json.loads(run(occ_env, "--json", "start").stdout)
    _remember(occ_env, started["image"])
    assert started["healthy"] is True
    built_by = _shell(occ_env, "cat /etc/occ-extra-built-by; id -u").split()
    assert built_by == ["0", "on", str(RUNTIME_UID)]
    keys = " ".join(
        f"{{{{json .Config.{key}}}}}" for key in ("User", "Entrypoint", "Cmd", "Healthcheck")
    )
    assert docker("inspect", "-f", keys, started["image"]) == docker(
        "inspect", "-f", keys, sandbox_image
    )
    # Back to no lines: the sandbox image itself, and the derived one is gone.
    run(occ_env, "config", "unset", "extra_dockerfile")
    back = json.loads(run(occ_env, "--json", "start").stdout)
    assert back["image"] == sandbox_image and back["healthy"] is True
    assert docker("images", "-q", started["image"]).strip() == ""


def test_bad_names_and_lines_are_refused_and_the_file_stays_as_it_was(occ_env) -> None:
    path = Path(run(occ_env, "config", "path").stdout.strip())
    run(occ_env, "config", "set", "extra_packages", "jq")
    before = path.read_bytes()
    for key, value in [
        ("extra_packages", "Foo Bar"),
        ("extra_packages", '["-oAPT::Get::Foo=1"]'),
        ("extra_dockerfile", '["FROM debian:bookworm-slim"]'),
        ("extra_dockerfile", '["USER opencode"]'),
        ("extra_dockerfile", '["ENV PATH=/home/opencode/.local/bin:/usr/bin"]'),
        ("extra_dockerfile", '["ENTRYPOINT [\\"/bin/sh\\"]"]'),
        ("extra_dockerfile", '["RUN a\\nUSER root"]'),
    ]:
        refused = run(occ_env, "config", "set", key, value, check=False)
        assert refused.returncode != 0, (key, value)
        error = [line for line in refused.stderr.splitlines() if line.startswith("Error: ")]
        assert len(error) == 1 and key in error[0], refused.stderr
        assert "Hint: " in refused.stderr and "Traceback" not in refused.stderr
        assert path.read_bytes() == before


@pytest.mark.timeout(900)
def test_update_builds_the_packages_on_the_new_release_and_rollback_returns(
    occ_env, host_ca, older_release, derived_images
) -> None:
    """1.18.32 with jq -> `occ update` -> 1.18.33 with jq, checked deeply on the derived
    image; `occ rollback` returns to the 1.18.32 image with jq."""
    for version in (older_release, "1.18.33"):  # removed after, whatever happens
        _remember(occ_env, derived_ref(f"{IMAGE_NAME}:{version}", ["jq"], []))
    run(occ_env, "config", "set", "opencode_version", older_release)
    run(occ_env, "config", "set", "extra_packages", "jq")
    old = json.loads(run(occ_env, "--json", "start").stdout)
    _remember(occ_env, old["image"])
    assert old["image"].startswith(f"opencode-cloud-sandbox:{older_release}-x")
    made = api(occ_env, "POST", "/session", {"title": "made with jq on 1.18.32"})

    run(occ_env, "config", "unset", "opencode_version")
    updated = json.loads(run(occ_env, "--json", "update").stdout)
    assert (updated["previous"], updated["current"]) == ("opencode 1.18.32", "opencode 1.18.33")
    new_image = docker("inspect", "-f", "{{.Config.Image}}", _container(occ_env)).strip()
    _remember(occ_env, new_image)
    assert new_image.startswith("opencode-cloud-sandbox:1.18.33-x")
    assert "jq-1.6" in _shell(occ_env, "jq --version")
    assert api(occ_env, "GET", f"/session/{made['id']}")["id"] == made["id"]
    # The old derived image stays while the snapshot that can go back to it does.
    assert docker("images", "-q", old["image"]).strip() != ""

    run(occ_env, "rollback", "--yes")
    status = json.loads(run(occ_env, "--json", "status").stdout)
    assert status["opencode_version"] == older_release and status["session_api"] == "ok"
    image = docker("inspect", "-f", "{{.Config.Image}}", _container(occ_env)).strip()
    assert image == old["image"]
    assert "jq-1.6" in _shell(occ_env, "jq --version")


@pytest.mark.timeout(600)
def test_a_team_update_moves_everyone_onto_the_packages(occ_env, derived_images) -> None:
    """In team mode the people's containers move to the derived image one at a time, each
    checked deeply, and the door and its starter follow."""
    wanted = derived_ref(f"{IMAGE_NAME}:1.18.33", ["jq"], [])
    _remember(occ_env, wanted)
    run(occ_env, "team", "enable", "--name", "ada")
    run(occ_env, "config", "set", "extra_packages", "jq")

    result = json.loads(run(occ_env, "--json", "update").stdout)

    assert result["target"] == wanted and result["updated"] == ["ada"], result
    instance = occ_env["OCC_INSTANCE"]
    for container in (f"{instance}-user-ada", f"{instance}-door"):
        image = docker("inspect", "-f", "{{.Config.Image}}", f"opencode-cloud-{container}")
        assert image.strip() == wanted, container
    assert "jq-1.6" in run(occ_env, "shell", "--user", "ada", "--", "jq", "--version").stdout
