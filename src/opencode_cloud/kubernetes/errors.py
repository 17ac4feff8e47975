"""What can stop a rendering: a setting with no Kubernetes form, or an output folder that
cannot take the files. Nothing is written when one is raised."""

from __future__ import annotations

from pathlib import Path

from opencode_cloud.errors import OpencodeCloudError


class KubernetesError(OpencodeCloudError):
    """Base of the rendering's errors."""


class NotRenderable(KubernetesError):
    """A container setting or a name that no Kubernetes object can carry as it is."""

    def __init__(self, what: str) -> None:
        super().__init__(f"Cannot render for Kubernetes: {what}.")
        self.what = what


class NoHostName(KubernetesError):
    """The Ingress needs the name the team is reached at, and none was given."""

    def __init__(self) -> None:
        super().__init__("The Ingress needs a host name, and none is set.")


class BadClusterValue(KubernetesError):
    """A value given for the cluster (namespace, host name, size) Kubernetes refuses."""

    def __init__(self, option: str, value: str, rule: str) -> None:
        super().__init__(f"{option} {value!r} is not valid: {rule}.")
        self.option = option


class OutFolderNotEmpty(KubernetesError):
    """The output folder already holds something: a manifest edited by hand (a Secret's
    value filled in) would be lost."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is not an empty folder.")
        self.path = path


class OutFolderUnwritable(KubernetesError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"Cannot write the manifests to {path}: {reason}.")
        self.path = path
