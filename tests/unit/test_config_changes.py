"""`team.changes`: whether a change of each key needs a restart, held against what the
service itself reports as waiting for a restart once the key changed in the file."""

from __future__ import annotations

import pytest

from fakes import FakeEngine
from opencode_cloud.config.edit import set_value
from opencode_cloud.config.errors import UnknownConfigKey
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.config.schema import EXAMPLES, KEYS, RETIRED_KEYS, Config
from opencode_cloud.config.store import save_config
from opencode_cloud.service.service import Service
from opencode_cloud.team.changes import applies, between
from service_helpers import INSTANCE, Make

# Keys that change no single-user container: another image (an update), and the door's
# own setting (team mode makes the door again for it, which `test_team.py` covers).
NOT_THE_CONTAINER = {"opencode_version", "image", "idle_stop_minutes"}


@pytest.mark.parametrize(
    "key", [k for k in KEYS if k not in RETIRED_KEYS and k not in NOT_THE_CONTAINER]
)
def test_a_restart_is_needed_exactly_when_the_service_reports_one_pending(
    key: str, make: Make, fake: FakeEngine, paths: InstancePaths
) -> None:
    service = make()
    service.start()
    how = applies(key)
    # (The image sets the example's variable itself: an equal value is no change.)
    example = '{"TZ": "UTC"}' if key == "env" else EXAMPLES[key].strip("'")
    changed = set_value(service.config, key, example)
    if changed == service.config:  # the example is the default
        changed = set_value(service.config, key, str(int(EXAMPLES[key]) + 1))
    save_config(paths.config_file, changed)

    pending = Service(fake, changed, INSTANCE, paths).pending_changes(
        fake.inspect_container(service.name)
    )

    assert (how.needs == "restart") == bool(pending), (key, how, pending)
    assert set(how.touches) == set(pending)


def test_another_image_is_an_update_and_the_door_counts() -> None:
    assert applies("opencode_version").needs == "update"
    assert applies("image").needs == "update"
    assert applies("idle_stop_minutes").needs == "restart"
    assert applies("start_timeout").needs == "nothing"
    assert applies("restart_retries").needs == "nothing"  # retired
    assert between(Config(), Config(port=1234)).touches == ("port",)
    with pytest.raises(UnknownConfigKey, match="Did you mean 'port'"):
        applies("prot")
