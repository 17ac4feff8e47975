"""A team as Kubernetes objects (docs/kubernetes.md): translated from the same container
specs the team runs on Docker with, written as YAML by `occ kubernetes render`.

Checked against the Kubernetes API's schemas only; not yet run on a cluster.
"""
