"""`occ kubernetes render` on the in-memory engine: a team of two people with different
limits rendered from its containers' specs, every object checked against the
Kubernetes API's schemas (strict: an unknown field fails), the NetworkPolicies asked who
may reach whom, and the command's bad input."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cli_runner import Result, isolated_runner, one_error
from fakes import FakeEngine
from opencode_cloud.cli.context import AppContext
from opencode_cloud.config.paths import InstancePaths, instance_paths
from opencode_cloud.config.schema import Config
from opencode_cloud.config.store import save_config
from opencode_cloud.defaults import INTERNAL_PASSWORD_PATH
from opencode_cloud.docker.image import dockerfile_command
from opencode_cloud.docker.spec import HARDENING, ContainerSpec
from opencode_cloud.instance import LABEL_ROLE, Instance
from opencode_cloud.kubernetes import manifests as k8s
from opencode_cloud.kubernetes.errors import NotRenderable
from opencode_cloud.kubernetes.render import cluster_door, cluster_settings, render_team, to_yaml
from opencode_cloud.service.service import Service
from opencode_cloud.team.errors import PersonNotFound
from opencode_cloud.team.people import PersonLimits
from opencode_cloud.team.team import Team
from service_helpers import INSTANCE

PREFIX = INSTANCE.service_prefix
ALICE, BOB = f"{PREFIX}-user-alice", f"{PREFIX}-user-bob"
CLUSTER = cluster_settings(
    namespace="team",
    host_name="team.example.com",
    known_host_names=(),
    volume_size="20Gi",
    image=None,
    ingress_namespace="ingress-nginx",
)


def make_team(fake: FakeEngine, paths: InstancePaths, instance: Instance = INSTANCE) -> Team:
    """A team whose door runs, with alice (1 GiB, 1.5 CPUs) and bob (2 GiB, every CPU)."""
    config = Config(port=43999, start_timeout=5)
    save_config(paths.config_file, config)
    paths.team_file.write_text(json.dumps({"enabled": True, "first": "alice"}))
    team = Team(Service(fake, config, instance, paths))
    team.door_answers = lambda: True
    team.start()
    team.create_person("alice", PersonLimits(1 << 30, 1.5, 512), "internal-alice-0123")
    team.create_person("bob", PersonLimits(2 << 30, None, 256), "internal-bob-4567")
    return team


@pytest.fixture
def team(fake: FakeEngine, paths: InstancePaths) -> Team:
    return make_team(fake, paths)


def validate(manifests: list[dict[str, Any]]) -> None:
    """Each object against the API's schemas, as kubectl --validate=strict would (but
    offline): a missing required field, a wrong type or an unknown field fails."""
    for manifest in manifests:
        kubernetes_validate.validate(manifest, k8s.KUBERNETES_VERSION, strict=True)


def objects(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def container(statefulset: dict[str, Any]) -> dict[str, Any]:
    [only] = statefulset["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_a_team_of_two_with_different_limits_passes_the_strict_schema_check(team: Team) -> None:
    manifests = render_team(team, CLUSTER)

    validate(manifests)
    kinds = [m["kind"] for m in manifests]
    assert kinds == [
        "Namespace",
        *["Secret"] * 3,
        *["NetworkPolicy"] * 4,
        *["Service"] * 3,
        *["StatefulSet"] * 3,
        "Ingress",
    ]
    sets = objects(manifests, "StatefulSet")
    assert set(sets) == {f"{PREFIX}-door", ALICE, BOB}
    assert container(sets[ALICE])["resources"]["limits"] == {"memory": "1Gi", "cpu": "1500m"}
    # bob's "every CPU" was this engine's two, as his container has it.
    assert container(sets[BOB])["resources"]["limits"] == {"memory": "2Gi", "cpu": "2000m"}
    claims = sets[ALICE]["spec"]["volumeClaimTemplates"]
    assert sorted(c["metadata"]["name"] for c in claims) == sorted(
        ["home", "session", "state", "projects", "config"]
    )
    assert {c["spec"]["resources"]["requests"]["storage"] for c in claims} == {"20Gi"}
    # The door reaches a person by their container's name on Docker: a Service here.
    assert objects(manifests, "Service")[ALICE]["spec"]["ports"][0]["port"] == 4096
    ingress = objects(manifests, "Ingress")[f"{PREFIX}-door"]
    assert ingress["spec"]["rules"][0]["host"] == "team.example.com"
    assert ingress["spec"]["tls"][0]["secretName"] == f"{PREFIX}-door-tls"


def test_the_schema_check_can_fail(team: Team) -> None:
    manifests = render_team(team, CLUSTER)
    pod = objects(manifests, "StatefulSet")[ALICE]["spec"]["template"]["spec"]
    pod["containers"][0]["memoryLimit"] = "1Gi"  # no such field

    with pytest.raises(kubernetes_validate.ValidationError, match="memoryLimit"):
        validate(manifests)


def test_the_containers_keep_their_docker_hardening(team: Team) -> None:
    manifests = render_team(team, CLUSTER)
    added = sorted(h.removeprefix("add:") for h in HARDENING if h.startswith("add:"))
    for statefulset in objects(manifests, "StatefulSet").values():
        pod = statefulset["spec"]["template"]["spec"]
        security = container(statefulset)["securityContext"]
        assert security["allowPrivilegeEscalation"] is False  # no-new-privileges
        assert security["privileged"] is False
        assert security["capabilities"] == {"drop": ["ALL"], "add": added}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert container(statefulset)["readinessProbe"]["exec"]["command"] == (
            dockerfile_command("HEALTHCHECK")
        )
    door = container(objects(manifests, "StatefulSet")[f"{PREFIX}-door"])
    env = {e["name"]: e["value"] for e in door["env"]}
    assert env["OCC_ROLE"] == "door"
    assert env["OCC_TLS"] == "off"  # TLS ends at the Ingress
    assert env["OCC_TEAM_IDLE_STOP"] == "0"  # no starter stops anybody
    assert [m["mountPath"] for m in door["volumeMounts"]] == ["/var/lib/opencode-cloud-edge"]


# -- who may reach whom ------------------------------------------------------------------------


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def allowed(
    policies: list[dict[str, Any]],
    source: tuple[str, Mapping[str, str]],
    target: Mapping[str, str],
    port: int,
) -> bool:
    """Whether a pod (namespace, labels) may open a connection to a pod of the team's
    namespace with `target` labels on `port`, by the NetworkPolicy rules: allowed when no
    policy selects the target for ingress, else when one of their rules lets it in."""
    namespace, labels = source
    selecting = [
        p
        for p in policies
        if "Ingress" in p["spec"]["policyTypes"] and _matches(p["spec"]["podSelector"], target)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer:
                    name = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    if name == namespace:
                        return True
                elif namespace == CLUSTER.namespace and _matches(peer["podSelector"], labels):
                    return True
    return False


def test_only_the_front_door_reaches_a_persons_opencode(team: Team) -> None:
    manifests = render_team(team, CLUSTER)
    policies = list(objects(manifests, "NetworkPolicy").values())
    pods = {
        name: s["spec"]["template"]["metadata"]["labels"]
        for name, s in objects(manifests, "StatefulSet").items()
    }
    door, alice, bob = pods[f"{PREFIX}-door"], pods[ALICE], pods[BOB]
    team_ns = CLUSTER.namespace

    assert allowed(policies, (team_ns, door), alice, 4096)
    assert allowed(policies, (team_ns, door), bob, 4096)
    assert not allowed(policies, (team_ns, bob), alice, 4096)
    assert not allowed(policies, (team_ns, alice), bob, 4096)
    assert not allowed(policies, (team_ns, alice), door, 3000)
    assert not allowed(policies, ("default", {}), alice, 4096)
    assert not allowed(policies, ("ingress-nginx", {}), alice, 4096)
    # The Ingress controller reaches the door's port, and nothing else does.
    assert allowed(policies, ("ingress-nginx", {}), door, 3000)
    assert not allowed(policies, ("ingress-nginx", {}), door, 22)
    assert not allowed(policies, ("default", {}), door, 3000)
    # A person's agent is kept from the cluster's and the cloud's private addresses.
    [egress] = [
        p["spec"]["egress"][0]["to"][0]["ipBlock"]
        for p in policies
        if p["spec"]["podSelector"]["matchLabels"].get(LABEL_ROLE) == "person"
        and _matches(p["spec"]["podSelector"], alice)
    ]
    assert {"10.0.0.0/8", "169.254.0.0/16"} <= set(egress["except"])


# -- secrets -------------------------------------------------------------------------------


def test_secrets_are_files_never_environment(team: Team) -> None:
    manifests = render_team(team, CLUSTER, with_secrets=True)

    validate(manifests)
    secret = objects(manifests, "Secret")[f"{ALICE}-files"]
    assert secret["stringData"] == {"internal.password": "internal-alice-0123"}
    not_secrets = json.dumps([m for m in manifests if m["kind"] != "Secret"])
    for password in ("internal-alice-0123", "internal-bob-4567"):
        assert password not in not_secrets
    for statefulset in objects(manifests, "StatefulSet").values():
        for item in container(statefulset)["env"]:
            assert set(item) == {"name", "value"}  # no valueFrom: a Secret's key
    alice = objects(manifests, "StatefulSet")[ALICE]["spec"]["template"]["spec"]
    assert alice["volumes"] == [
        {"name": "files", "secret": {"secretName": f"{ALICE}-files", "defaultMode": 0o400}}
    ]
    # Copied into place as root's, 0600, before the entrypoint, as Docker's archive API does.
    command = container(objects(manifests, "StatefulSet")[ALICE])["command"]
    assert (
        f"/usr/bin/install -o 0 -g 0 -m 0600 {k8s.SECRET_DIR}/internal.password "
        f"{INTERNAL_PASSWORD_PATH}"
    ) in command[2]
    assert command[2].endswith(f'exec {" ".join(dockerfile_command("ENTRYPOINT"))} "$@"')


def test_without_asking_the_secrets_are_placeholders(team: Team) -> None:
    manifests = render_team(team, CLUSTER)

    text = to_yaml(manifests)
    assert "internal-alice-0123" not in text
    assert "internal-bob-4567" not in text
    secret = objects(manifests, "Secret")[f"{ALICE}-files"]
    assert secret["stringData"]["internal.password"].startswith("REPLACE-ME")
    assert text.startswith("# Rendered by opencode-cloud")
    assert "NOT YET RUN ON A CLUSTER" in text.splitlines()[0]
    assert len(list(yaml.safe_load_all(text))) == len(manifests)


# -- made from the container specs ----------------------------------------------------------------


def test_every_field_of_the_container_spec_is_carried_or_said_why_not() -> None:
    assert set(k8s.CARRIED) | set(k8s.NOT_CARRIED) == {f.name for f in fields(ContainerSpec)}
    assert not set(k8s.CARRIED) & set(k8s.NOT_CARRIED)


def test_a_changed_limit_changes_the_manifests(team: Team, fake: FakeEngine) -> None:
    before = render_team(team, CLUSTER)
    fake.remove_container(ALICE, force=True)
    team.create_person("alice", PersonLimits(3 << 30, 0.5, 512), "internal-alice-0123")

    after = render_team(team, CLUSTER)

    validate(after)
    limits = container(objects(after, "StatefulSet")[ALICE])["resources"]["limits"]
    assert limits == {"memory": "3Gi", "cpu": "500m"}
    assert objects(after, "StatefulSet")[BOB] == objects(before, "StatefulSet")[BOB]


def test_a_change_of_the_spec_shows_in_its_statefulset(team: Team) -> None:
    spec = team.person_spec("alice", team.person_limits("alice"))
    door = k8s.Workload(cluster_door(team), 3000)

    def rendered(changed: ContainerSpec) -> dict[str, Any]:
        manifests = k8s.team_manifests(door, [k8s.Workload(changed, 4096)], CLUSTER)
        validate(manifests)
        return objects(manifests, "StatefulSet")[ALICE]

    plain = rendered(spec)
    assert (
        rendered(replace(spec, pids_limit=99))["spec"]["template"]["metadata"]["annotations"][
            "io.opencode-cloud.pids-limit"
        ]
        == "99"
    )
    assert container(rendered(replace(spec, stop_timeout=42))) == container(plain)
    assert (
        rendered(replace(spec, stop_timeout=42))["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
        == 42
    )
    env = container(rendered(replace(spec, env=("EDITOR=vim",))))["env"]
    assert {"name": "EDITOR", "value": "vim"} in env
    without = replace(spec, hardening=tuple(h for h in spec.hardening if h != "add:KILL"))
    assert "KILL" not in container(rendered(without))["securityContext"]["capabilities"]["add"]
    with pytest.raises(NotRenderable, match="security option"):
        rendered(replace(spec, hardening=(*spec.hardening, "apparmor=unconfined")))


def test_the_dockerfile_facts_it_reads() -> None:
    assert dockerfile_command("ENTRYPOINT") == ["/usr/local/bin/occ-entrypoint"]
    assert dockerfile_command("HEALTHCHECK")[-1] == "http://127.0.0.1:4096/global/health"
    with pytest.raises(ValueError):
        dockerfile_command("STOPSIGNAL")


# -- the command -------------------------------------------------------------------------------


@pytest.fixture
def occ(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake: FakeEngine,
) -> Callable[..., Result]:
    """`occ` in-process on the in-memory engine, whose default instance is a team."""
    run = isolated_runner(tmp_path, monkeypatch, capsys)
    monkeypatch.setattr(AppContext, "connect", lambda self, timeout=None: fake)
    default = Instance()
    paths = instance_paths(default)
    paths.root.mkdir(parents=True)
    make_team(fake, paths, default)
    return run


def test_render_writes_one_file_per_object(occ, tmp_path: Path) -> None:
    result = occ("kubernetes", "render", "--out", "k8s", "--host-name", "team.example.com")

    assert result.code == 0, result.err
    assert "not yet run on a cluster" in result.out
    files = sorted((tmp_path / "k8s").iterdir())
    assert [f.name for f in files][:2] == [
        "00-namespace-opencode-cloud.yaml",
        "01-secret-opencode-cloud-door-tls.yaml",
    ]
    assert len(files) == 15
    for path in files:
        assert os.stat(path).st_mode & 0o077 == 0
        text = path.read_text()
        assert text.startswith("# Rendered by opencode-cloud")
        validate([yaml.safe_load(text)])
    assert "internal-alice-0123" not in "".join(f.read_text() for f in files)


def test_render_prints_to_standard_output_and_picks_people(occ) -> None:
    result = occ(
        "kubernetes", "render", "--user", "bob", "--host-name", "t.example.org", "--with-secrets"
    )

    assert result.code == 0, result.err
    manifests = [m for m in yaml.safe_load_all(result.out) if m]
    validate(manifests)
    assert set(objects(manifests, "StatefulSet")) == {
        "opencode-cloud-door",
        "opencode-cloud-user-bob",
    }
    assert "internal-bob-4567" in result.out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--user", "carol"], "carol"),
        (["--user", "Not_A_Name"], "Not_A_Name"),
        ([], "host name"),  # none given, none in the configuration
        (["--host-name", "10.0.0.1"], "10.0.0.1"),
        (["--namespace", "Team!"], "Team!"),
        (["--volume-size", "lots"], "lots"),
    ],
)
def test_bad_input_is_one_error_and_writes_nothing(
    occ, tmp_path: Path, args: list[str], words: str
) -> None:
    host = [] if not args or args[0] == "--host-name" else ["--host-name", "team.example.com"]
    result = occ("kubernetes", "render", "--out", "k8s", *host, *args)

    assert result.code == 2, result.err
    assert words in one_error(result)
    assert not (tmp_path / "k8s").exists()
    assert result.out == ""


def test_a_folder_with_files_is_left_as_it_was(occ, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    out.mkdir()
    (out / "secret.yaml").write_text("filled in by hand\n")

    result = occ("kubernetes", "render", "--out", str(out), "--host-name", "team.example.com")

    assert result.code == 2
    assert "is not an empty folder" in one_error(result)
    assert [p.name for p in out.iterdir()] == ["secret.yaml"]
    assert (out / "secret.yaml").read_text() == "filled in by hand\n"


@pytest.mark.parametrize("out", ["/proc/occ-k8s-render", "{tmp}/a-file/k8s"])
def test_an_unwritable_out_folder_is_one_error(occ, tmp_path: Path, out: str) -> None:
    (tmp_path / "a-file").write_text("")
    before = sorted(p.name for p in tmp_path.iterdir())

    result = occ(
        "kubernetes", "render", "--out", out.format(tmp=tmp_path), "--host-name", "t.example.com"
    )

    assert result.code == 2
    assert "Cannot write the manifests" in one_error(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_outside_team_mode_it_says_how_to_turn_it_on(occ, tmp_path: Path) -> None:
    paths = instance_paths(Instance())
    paths.team_file.write_text(json.dumps({"enabled": False}))

    result = occ("kubernetes", "render", "--host-name", "team.example.com")

    assert result.code == 2
    assert "team" in one_error(result).lower()
    assert "team enable" in result.err


def test_an_unknown_person_is_named(team: Team) -> None:
    with pytest.raises(PersonNotFound):
        render_team(team, CLUSTER, people=["carol"])
