"""The instance the unit tests of the service and of its version changes run, on the
in-memory engine; `tests/unit/conftest.py` has the fixtures that make it."""

from __future__ import annotations

from collections.abc import Callable

from opencode_cloud.defaults import DEFAULT_OPENCODE_VERSION
from opencode_cloud.docker.image import image_ref
from opencode_cloud.instance import Instance
from opencode_cloud.service.service import Service

INSTANCE = Instance("unit")
NAME = INSTANCE.container_name
REF = image_ref(DEFAULT_OPENCODE_VERSION)  # the default release's image
OLD = "1.18.32"  # a release before it, for version changes
OLD_REF = image_ref(OLD)

# The `make` fixture: a Service over a configuration file written with these settings.
Make = Callable[..., Service]
