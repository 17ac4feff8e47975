"""What a change of one configuration key takes to apply, read from the containers
the settings make rather than from a list kept by hand.

A key applies with a restart when changing it changes the service's container
(`ContainerSpec.diff`) or the team's front door (`door.door_spec`); with an update when
it changes the image the service's image is built on (`base_image_for`: another opencode
version or `image`); otherwise it is read when it is
used (the next build, start, update or backup).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from opencode_cloud.docker.spec import ContainerSpec
from opencode_cloud.instance import Instance
from opencode_cloud.service.image import base_image_for, image_for
from opencode_cloud.team import door
from opencode_cloud.team.layout import TeamLayout

if TYPE_CHECKING:
    from opencode_cloud.config.schema import Config

# A CPU count for "all CPUs", so that a CPU limit reads as a change of the container.
_SOME_CPUS = 2


@dataclass(frozen=True)
class Applies:
    """How a change of a key takes effect.

    Attributes:
        needs: `restart` (the container is made again at the next start), `update` (the
            service runs another image: `occ update`), or `nothing` (read when used).
        touches: What it changes, as `occ status` words it ("port", "TLS", "image").
    """

    needs: str
    touches: tuple[str, ...] = ()

    @property
    def needs_restart(self) -> bool:
        return self.needs != "nothing"


def _specs(config: Config) -> tuple[ContainerSpec, ContainerSpec]:
    instance = Instance()
    image = image_for(config)
    service = ContainerSpec.from_config(
        config, instance, image=image, image_id=None, engine_cpus=_SOME_CPUS
    )
    front_door = door.door_spec(
        config,
        TeamLayout(instance),
        image=image,
        image_id=None,
        idle_stop_seconds=config.idle_stop_minutes * 60,
    )
    return service, front_door


def applies(key: str) -> Applies:
    """How a change of `key` takes effect: the containers made from the defaults are
    compared with those made after the key is set to its example value (`EXAMPLES`).

    Raises:
        UnknownConfigKey: `key` is not a configuration key.
    """
    from opencode_cloud.config.edit import key_info, set_value
    from opencode_cloud.config.schema import EXAMPLES, RETIRED_KEYS, Config

    info = key_info(key)  # an unknown key is refused here
    if key in RETIRED_KEYS:
        return Applies("nothing")
    before = Config()
    after = set_value(before, key, EXAMPLES[key].strip("'"))
    if after == before:  # the example is the default: another value of its kind
        other = info.default + 1 if info.kind == "integer" else f"{info.default}-1"
        after = set_value(before, key, str(other))
    return between(before, after)


def between(before: Config, after: Config) -> Applies:
    """How the change from `before` to `after` takes effect (`applies`)."""
    if base_image_for(before) != base_image_for(after):
        return Applies("update", ("image",))
    old_service, old_door = _specs(before)
    new_service, new_door = _specs(after)
    # Another image on the same base (`extra_packages`) is built by the next restart.
    touches = ["image"] if image_for(before) != image_for(after) else []
    touches += [t for t in new_service.diff(old_service) if t not in touches]
    touches += [t for t in new_door.diff(old_door) if t not in touches]
    return Applies("restart", tuple(touches)) if touches else Applies("nothing")
