"""A person's pod of `occ kubernetes render`, run by hand on the real engine with the real
sandbox image, as a kubelet would run it: the rendered command, environment,
capabilities and privilege-escalation setting, its claims as volumes, and its Secret as
a read-only folder of root's 0400 files. Its readiness probe must pass, which means
opencode answers with the internal password that came from the Secret.

This is not a cluster (docs/kubernetes.md): it checks that the container the manifests
describe starts and serves with the image as it is.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from opencode_cloud.defaults import INTERNAL_PASSWORD_PATH
from opencode_cloud.docker.client import DockerClient
from opencode_cloud.docker.health import log_tail
from opencode_cloud.docker.spec import DefaultSettings
from opencode_cloud.instance import Instance
from opencode_cloud.kubernetes import manifests as k8s
from opencode_cloud.team.door import door_spec
from opencode_cloud.team.layout import PERSON_PORT, TeamLayout
from opencode_cloud.team.people import (
    PersonLimits,
    PersonSettings,
    internal_password_file,
    person_spec,
)

pytestmark = pytest.mark.e2e

READY_TIMEOUT = 90.0
CLUSTER = k8s.Cluster(namespace="team", host_name="team.example.com")


def _run(client: DockerClient, name: str, command: list[str], user: str = "0:0") -> int:
    output, exit_code = client.exec_run(name, command, user=user, workdir="/")
    b"".join(output)
    code = exit_code()
    return -1 if code is None else code


def _render(instance: Instance, image: str, internal: str) -> list[dict[str, Any]]:
    layout = TeamLayout(instance)
    settings = PersonSettings(
        username="opencode",
        env={"OPENCODE_DISABLE_MODELS_FETCH": "1"},
        stop_timeout=10,
        limits=PersonLimits(1 << 30, 1.0, 512),
    )
    person = person_spec(settings, layout, "alice", image=image, image_id=None, nano_cpus=10**9)
    door = door_spec(DefaultSettings(), layout, image=image, image_id=None, idle_stop_seconds=0)
    return k8s.team_manifests(
        k8s.Workload(door, 3000),
        [k8s.Workload(person, PERSON_PORT, internal_password_file(internal))],
        CLUSTER,
    )


def test_a_rendered_persons_pod_starts_and_passes_its_readiness_probe(
    docker_client: DockerClient, sandbox_image: str, instance: Instance, tmp_path: Path
) -> None:
    internal = "k8s-internal-" + instance.name
    manifests = _render(instance, sandbox_image, internal)
    for manifest in manifests:
        kubernetes_validate.validate(manifest, k8s.KUBERNETES_VERSION, strict=True)
    person = instance.for_person("alice")
    name = person.container_name
    [statefulset] = [
        m for m in manifests if m["kind"] == "StatefulSet" and m["metadata"]["name"] == name
    ]
    [secret] = [
        m for m in manifests if m["kind"] == "Secret" and m["metadata"]["name"] == f"{name}-files"
    ]
    pod = statefulset["spec"]["template"]["spec"]
    [container] = pod["containers"]
    security = container["securityContext"]

    # The Secret as the kubelet mounts it: root's files, its defaultMode, read-only.
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    [volume] = pod["volumes"]
    for key, value in secret["stringData"].items():
        (secret_dir / key).write_text(value)
        (secret_dir / key).chmod(volume["secret"]["defaultMode"])
    mounts = []
    for mount in container["volumeMounts"]:
        if mount["name"] == volume["name"]:
            mounts.append(
                {
                    "Type": "bind",
                    "Source": str(secret_dir),
                    "Target": mount["mountPath"],
                    "ReadOnly": True,
                }
            )
            continue
        source = f"{name}-{mount['name']}"
        docker_client.create_volume(source, person.labels("volume"))
        mounts.append({"Type": "volume", "Source": source, "Target": mount["mountPath"]})
    assert security["allowPrivilegeEscalation"] is False
    docker_client.create_container(
        name,
        {
            "Image": container["image"],
            "Entrypoint": container["command"][:1],
            "Cmd": container["command"][1:],
            "Env": [f"{e['name']}={e['value']}" for e in container["env"]],
            "WorkingDir": container["workingDir"],
            "Labels": person.labels("person"),
            "HostConfig": {
                "CapDrop": security["capabilities"]["drop"],
                "CapAdd": security["capabilities"]["add"],
                "SecurityOpt": ["no-new-privileges:true"],
                "Privileged": security["privileged"],
                "Mounts": mounts,
                "Memory": 1 << 30,
            },
        },
    )
    docker_client.start_container(name)

    probe = container["readinessProbe"]["exec"]["command"]
    deadline = time.monotonic() + READY_TIMEOUT
    while _run(docker_client, name, probe) != 0:
        info = docker_client.inspect_container(name)
        assert info.running, "\n".join(log_tail(docker_client, name))
        assert time.monotonic() < deadline, "the readiness probe never passed"
        time.sleep(1)

    # The internal password is where the entrypoint wants it, root's and 0600, and the
    # agent's user reads neither it nor the Secret's copy.
    assert _run(docker_client, name, ["/usr/bin/test", "-O", INTERNAL_PASSWORD_PATH]) == 0
    stat = ["/bin/sh", "-c", f'[ "$(stat -c %a {INTERNAL_PASSWORD_PATH})" = 600 ]']
    assert _run(docker_client, name, stat) == 0
    for path in (INTERNAL_PASSWORD_PATH, f"{k8s.SECRET_DIR}/internal.password"):
        assert _run(docker_client, name, ["/usr/bin/cat", path], user="1000:1000") != 0
