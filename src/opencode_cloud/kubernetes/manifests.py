"""`ContainerSpec` to Kubernetes objects: each container of a team becomes a StatefulSet
(its volumes claims of their own, its files a Secret), and the team gets a namespace,
NetworkPolicies that let only the front door reach a person, and an Ingress.

Every field of the spec is either carried into the objects or named in `NOT_CARRIED`
with the reason (`CARRIED` and `NOT_CARRIED` cover the spec's fields: a unit test holds
them to it), so a new container setting needs a decision here too.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opencode_cloud.docker.image import dockerfile_command
from opencode_cloud.docker.models import ContainerFile
from opencode_cloud.docker.spec import NO_NEW_PRIVILEGES, RESTART_POLICY, ContainerSpec
from opencode_cloud.instance import (
    LABEL_CONFIG_HASH,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_PERSON,
    LABEL_PREFIX,
    LABEL_ROLE,
)
from opencode_cloud.kubernetes.errors import NotRenderable
from opencode_cloud.team.layout import PERSON_PORT

Manifest = dict[str, Any]

# Where each field of the spec goes.
CARRIED: dict[str, str] = {
    "name": "the StatefulSet's, Service's and Secret's names",
    "image": "the container's image (or the one the cluster pulls, --image)",
    "username": "the environment, as on Docker",
    "env": "the environment, as on Docker",
    "mounts": "volumes: each named volume a claim of its own (volumeClaimTemplates)",
    "runtime_uid": "the environment (the entrypoint gives the runtime user this uid)",
    "runtime_gid": "the environment",
    "restart_policy": "the pod's restartPolicy Always",
    "stop_timeout": "terminationGracePeriodSeconds",
    "memory_bytes": "resources.limits.memory",
    "nano_cpus": "resources.limits.cpu (none when 0)",
    "pids_limit": "an annotation; the kubelet's podPidsLimit enforces it",
    "working_dir": "workingDir",
    "hardening": "securityContext: capabilities, allowPrivilegeEscalation false",
    "tls": "the environment (the front door's is off: TLS ends at the Ingress)",
    "role": "the environment and the labels the NetworkPolicies select on",
    "network": "NetworkPolicies: a person's pod takes connections from the door only",
    "sysctls": "the pod's securityContext.sysctls, but for forwarding off (see below)",
    "labels": "labels, and the config hash as an annotation",
}
NOT_CARRIED: dict[str, str] = {
    "image_id": "an id of this machine's engine; the cluster resolves the reference",
    "port": "the host's published port: the door's Service and the Ingress publish it",
    "bind_address": "likewise: the Ingress decides who reaches the door",
    "log_rotation": "the kubelet rotates logs (containerLogMaxSize, containerLogMaxFiles)",
    "hostname": "a StatefulSet names its pod's host itself (NAME-0)",
}
# A pod has a network namespace of its own with one interface: forwarding is off there
# already, and the kubelet refuses this sysctl unless told to allow unsafe ones.
MOOT_SYSCTLS = frozenset({("net.ipv4.ip_forward", "0")})
# Where a container's files (`ContainerFile`) are mounted from their Secret, root's and
# read-only, to be copied into place before the entrypoint runs.
SECRET_DIR = "/run/secrets/opencode-cloud"
HEADER = (
    "Rendered by opencode-cloud from its containers' specs. NOT YET RUN ON A CLUSTER:\n"
    "checked against the Kubernetes API's schemas only. See docs/kubernetes.md."
)
KUBERNETES_VERSION = "1.35"  # the API whose schemas the tests check the objects against

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# A StatefulSet's name goes into its pods' `controller-revision-hash` label with 11 more
# characters; a label value has at most 63.
STATEFULSET_NAME_MAX = 52


@dataclass(frozen=True)
class Cluster:
    """What the cluster decides that no container spec says."""

    namespace: str
    host_name: str  # the name the Ingress answers to
    volume_size: str = "10Gi"  # each claim's requested size
    image: str | None = None  # the image as the cluster pulls it (None: the spec's)
    ingress_namespace: str = "ingress-nginx"  # where the Ingress controller runs


@dataclass(frozen=True)
class Workload:
    """One container of the team, as the cluster gets it: its spec, the port it serves
    inside the cluster, and the files handed to it before it starts (Docker's archive
    API; here a Secret)."""

    spec: ContainerSpec
    port: int
    files: Mapping[str, ContainerFile] = field(default_factory=dict)


def team_manifests(door: Workload, people: Sequence[Workload], cluster: Cluster) -> list[Manifest]:
    """Every object of a team in the order `kubectl apply` needs them: the namespace,
    the Secrets, the NetworkPolicies, the Services, the StatefulSets, the Ingress.

    Raises:
        NotRenderable: a setting or name no object can carry.
    """
    instance = door.spec.labels.get(LABEL_INSTANCE, "")
    workloads = [door, *people]
    secrets = [s for w in workloads if (s := _secret(w, cluster)) is not None]
    return [
        _namespace(cluster),
        _tls_secret(door.spec, cluster),
        *secrets,
        *_policies(door, people, instance, cluster),
        *(_service(w, cluster) for w in workloads),
        *(_statefulset(w, cluster) for w in workloads),
        _ingress(door, cluster),
    ]


# -- the objects -------------------------------------------------------------------------


def _meta(name: str, cluster: Cluster, labels: Mapping[str, str] | None = None) -> Manifest:
    meta: Manifest = {"name": name, "namespace": cluster.namespace}
    if labels:
        meta["labels"] = dict(labels)
    return meta


def _namespace(cluster: Cluster) -> Manifest:
    # "restricted" would refuse the entrypoint's root phase (docs/kubernetes.md): enforce
    # "baseline", and have the API warn and audit against "restricted".
    levels = {"enforce": "baseline", "warn": "restricted", "audit": "restricted"}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": cluster.namespace,
            "labels": {f"pod-security.kubernetes.io/{k}": v for k, v in levels.items()},
        },
    }


def _labels(spec: ContainerSpec) -> dict[str, str]:
    return {k: v for k, v in spec.labels.items() if k != LABEL_CONFIG_HASH}


def _selector(spec: ContainerSpec) -> dict[str, str]:
    """The labels that pick the pods of one container: the instance's, its role and
    person (not the tool's version: a StatefulSet's selector never changes)."""
    keys = (LABEL_MANAGED, LABEL_INSTANCE, LABEL_ROLE, LABEL_PERSON)
    return {k: spec.labels[k] for k in keys if k in spec.labels}


def _secret_name(spec: ContainerSpec) -> str:
    return f"{spec.name}-files"


def _file_key(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _secret(workload: Workload, cluster: Cluster) -> Manifest | None:
    if not workload.files:
        return None
    keys = [_file_key(p) for p in workload.files]
    if len(set(keys)) != len(keys):
        raise NotRenderable(f"two files of {workload.spec.name} have the same name")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(_secret_name(workload.spec), cluster, _labels(workload.spec)),
        "type": "Opaque",
        "stringData": {_file_key(p): f.content.decode() for p, f in workload.files.items()},
    }


def _service(workload: Workload, cluster: Cluster) -> Manifest:
    """The container's name as a Service: the door reaches a person at NAME:4096 on
    Docker, and by the same name here."""
    spec = workload.spec
    _check_name(spec.name, 63, "a Service's name")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec.name, cluster, _labels(spec)),
        "spec": {
            "selector": _selector(spec),
            "ports": [{"name": "http", "port": workload.port, "targetPort": workload.port}],
        },
    }


def _statefulset(workload: Workload, cluster: Cluster) -> Manifest:
    spec = workload.spec
    _check_name(spec.name, STATEFULSET_NAME_MAX, "a StatefulSet's name")
    if spec.restart_policy not in (RESTART_POLICY, "always"):
        raise NotRenderable(f"the restart policy {spec.restart_policy} (a pod always restarts)")
    claims, mounts = _volumes(spec, cluster)
    volumes: list[Manifest] = []
    container = _container(workload, cluster)
    container["volumeMounts"] = mounts
    if workload.files:
        volumes.append(
            {
                "name": "files",
                # Root's only: the agent's user cannot read them.
                "secret": {"secretName": _secret_name(spec), "defaultMode": 0o400},
            }
        )
        mounts.append({"name": "files", "mountPath": SECRET_DIR, "readOnly": True})
    pod_security: Manifest = {"seccompProfile": {"type": "RuntimeDefault"}}
    sysctls = [{"name": k, "value": v} for k, v in spec.sysctls if (k, v) not in MOOT_SYSCTLS]
    if sysctls:
        pod_security["sysctls"] = sysctls
    pod: Manifest = {
        # Nothing in the pod speaks to the cluster's API: no token for the agent to find.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": spec.stop_timeout,
        "securityContext": pod_security,
        "containers": [container],
    }
    if volumes:
        pod["volumes"] = volumes
    annotations = {
        LABEL_CONFIG_HASH: spec.labels.get(LABEL_CONFIG_HASH, ""),
        f"{LABEL_PREFIX}.pids-limit": str(spec.pids_limit),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(spec.name, cluster, _labels(spec)),
        "spec": {
            "serviceName": spec.name,
            # One pod: its volumes are one person's (or the door's SQLite file).
            "replicas": 1,
            "selector": {"matchLabels": _selector(spec)},
            "updateStrategy": {"type": "RollingUpdate"},
            # Like Docker's volumes: they outlive the pod and the StatefulSet.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {"labels": _labels(spec), "annotations": annotations},
                "spec": pod,
            },
            "volumeClaimTemplates": claims,
        },
    }


def _container(workload: Workload, cluster: Cluster) -> Manifest:
    spec = workload.spec
    body = spec.create_body()
    host = body["HostConfig"]
    unknown = [o for o in host["SecurityOpt"] if o != NO_NEW_PRIVILEGES]
    if unknown:
        raise NotRenderable(f"the security option {unknown[0]}")
    limits = {"memory": _bytes_quantity(spec.memory_bytes)}
    if spec.nano_cpus:
        limits["cpu"] = f"{max(1, round(spec.nano_cpus / 1e6))}m"
    container: Manifest = {
        "name": spec.role,
        "image": cluster.image or spec.image,
        "imagePullPolicy": "IfNotPresent",
        "workingDir": spec.working_dir,
        "env": [
            {"name": name, "value": value}
            for name, value in (item.split("=", 1) for item in body["Env"])
        ],
        "ports": [{"name": "http", "containerPort": workload.port}],
        # The image's own health check, as Docker runs it: the door's Caddy answers it,
        # a person's opencode with their internal password. Ready only once it passes.
        "readinessProbe": {
            "exec": {"command": dockerfile_command("HEALTHCHECK")},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # Limits without requests: the requests are the limits.
        "resources": {"limits": limits},
        "securityContext": {
            "allowPrivilegeEscalation": NO_NEW_PRIVILEGES not in host["SecurityOpt"],
            "privileged": False,
            "capabilities": {"drop": host["CapDrop"], "add": host["CapAdd"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if workload.files:
        container["command"] = ["/bin/sh", "-c", _hand_over(workload.files), "entrypoint"]
    return container


def _hand_over(files: Mapping[str, ContainerFile]) -> str:
    """A shell line that puts each file where the entrypoint reads it, with its owner
    and mode, as Docker's archive API does before the first start (the entrypoint
    changes their owner and mode, which a Secret's read-only mount would refuse), then
    runs the image's entrypoint."""
    steps = [
        "/usr/bin/install -o {owner} -g {owner} -m {mode:04o} {source} {target}".format(
            owner=f.owner,
            mode=f.mode,
            source=shlex.quote(f"{SECRET_DIR}/{_file_key(path)}"),
            target=shlex.quote(path),
        )
        for path, f in files.items()
    ]
    entrypoint = " ".join(shlex.quote(part) for part in dockerfile_command("ENTRYPOINT"))
    return " && ".join([*steps, f'exec {entrypoint} "$@"'])


def _volumes(spec: ContainerSpec, cluster: Cluster) -> tuple[list[Manifest], list[Manifest]]:
    """Each named volume as a claim of the StatefulSet (named by its kind: `home`,
    `session`, ...) and its mount."""
    claims, mounts = [], []
    for mount in spec.mounts:
        if mount.type != "volume":
            raise NotRenderable(f"the host folder {mount.source} (a pod has only its claims)")
        name = mount.source.removeprefix(f"{spec.name}-")
        _check_name(name, 63, "a volume's name")
        claims.append(
            {
                "metadata": {"name": name, "labels": _selector(spec)},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": cluster.volume_size}},
                },
            }
        )
        mounts.append({"name": name, "mountPath": mount.target, "readOnly": mount.read_only})
    return claims, mounts


def _policies(
    door: Workload, people: Sequence[Workload], instance: str, cluster: Cluster
) -> list[Manifest]:
    """Nothing reaches the team's pods but what is let in: the Ingress controller the
    door's port, the door a person's opencode. A person's agent reaches the internet, not
    the cluster's or the cloud's private addresses."""
    team = {LABEL_INSTANCE: instance}
    door_pods = _selector(door.spec)
    dns = {"ports": [{"protocol": p, "port": 53} for p in ("UDP", "TCP")]}
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(f"{door.spec.name}-deny-all", cluster, team),
            "spec": {"podSelector": {"matchLabels": team}, "policyTypes": ["Ingress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(door.spec.name, cluster, team),
            "spec": {
                "podSelector": {"matchLabels": door_pods},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {
                                        "kubernetes.io/metadata.name": cluster.ingress_namespace
                                    }
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": door.port}],
                    }
                ],
                # The door speaks to the people's opencode, and to nothing else.
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {**team, LABEL_ROLE: "person"}}}],
                        "ports": [{"protocol": "TCP", "port": PERSON_PORT}],
                    },
                    dns,
                ],
            },
        },
        *(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": _meta(person.spec.name, cluster, team),
                "spec": {
                    "podSelector": {"matchLabels": _selector(person.spec)},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": door_pods}}],
                            "ports": [{"protocol": "TCP", "port": person.port}],
                        }
                    ],
                    "egress": [
                        {
                            "to": [
                                {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_V4)}},
                                {"ipBlock": {"cidr": "::/0", "except": list(PRIVATE_V6)}},
                            ]
                        },
                        dns,
                    ],
                },
            }
            for person in people
        ),
    ]


# The cluster's pods and services, the nodes, and the clouds' metadata services live in
# these: a person's agent is kept from all of them.
PRIVATE_V4 = ("10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16")
PRIVATE_V6 = ("fc00::/7", "fe80::/10")


def _ingress(door: Workload, cluster: Cluster) -> Manifest:
    name = door.spec.name
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            **_meta(name, cluster, _labels(door.spec)),
            # ingress-nginx's: the web UI's event stream and terminal stay open for long,
            # and uploads are as large as the door takes.
            "annotations": {
                "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
                "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
                "nginx.ingress.kubernetes.io/proxy-buffering": "off",
                "nginx.ingress.kubernetes.io/proxy-body-size": "0",
            },
        },
        "spec": {
            "tls": [{"hosts": [cluster.host_name], "secretName": tls_secret_name(door.spec)}],
            "rules": [
                {
                    "host": cluster.host_name,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {"name": name, "port": {"number": door.port}}
                                },
                            }
                        ]
                    },
                }
            ],
        },
    }


def tls_secret_name(door: ContainerSpec) -> str:
    return f"{door.name}-tls"


def _tls_secret(door: ContainerSpec, cluster: Cluster) -> Manifest:
    """The Ingress's certificate and key: the cluster's own (or cert-manager's), never
    this machine's, whose certificate names this machine."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(tls_secret_name(door), cluster, _labels(door)),
        "type": "kubernetes.io/tls",
        "stringData": {
            "tls.crt": placeholder(f"the PEM certificate chain of {cluster.host_name}"),
            "tls.key": placeholder(f"the PEM private key of {cluster.host_name}"),
        },
    }


def placeholder(what: str) -> str:
    """A Secret's value left for the operator to fill in (docs/kubernetes.md)."""
    return f"REPLACE-ME: {what}"


# -- values ----------------------------------------------------------------------------------


def _check_name(name: str, longest: int, what: str) -> None:
    if len(name) > longest or not _DNS_LABEL.match(name):
        raise NotRenderable(
            f"{name} cannot be {what} (at most {longest} lower-case letters, digits and "
            "dashes): choose a shorter instance or person name"
        )


def _bytes_quantity(size: int) -> str:
    """Bytes as Kubernetes writes them: `2Gi`, `512Mi`, or the plain number."""
    for suffix, unit in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)
