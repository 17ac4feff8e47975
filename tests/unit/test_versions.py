"""Version changes on the in-memory engine: update, its automatic way back, rollback,
snapshots and what is pruned. opencode answers through the local HTTP server of
`fake_opencode.py`, so the deep check (sessions listed, an old session read) runs for real."""

from __future__ import annotations

from typing import Any

import pytest

from fake_opencode import FakeOpencode
from fakes import SANDBOX_ENV, FakeEngine
from opencode_cloud.config.paths import InstancePaths
from opencode_cloud.config.store import load_config
from opencode_cloud.docker.image import LABEL_OPENCODE_VERSION, image_ref
from opencode_cloud.service.errors import (
    NothingToRollBack,
    NotUpdatable,
    UpdateFailed,
    VersionChange,
)
from opencode_cloud.service.snapshots import LABEL_SNAPSHOT, SNAPSHOT_KINDS
from service_helpers import NAME, OLD, OLD_REF, REF, Make

NEW_REF = REF  # the default release's image


def _on(make: Make, version: str) -> None:
    make(opencode_version=version).start()


def test_update_keeps_a_snapshot_and_moves_to_the_new_version(
    make: Make, versions, fake: FakeEngine, paths: InstancePaths
) -> None:
    _on(make, OLD)
    updater = versions(opencode_version=OLD)
    target = updater.service.config.model_copy(update={"opencode_version": "1.18.33"})
    result = updater.update(target)
    assert (result.previous, result.current, result.changed) == (
        f"opencode {OLD}",
        "opencode 1.18.33",
        True,
    )
    assert fake.inspect_container(NAME).image == NEW_REF
    [snapshot] = updater.snapshots()
    assert snapshot.id == result.snapshot and snapshot.image == OLD_REF
    assert set(snapshot.volumes) == set(SNAPSHOT_KINDS)
    for name in snapshot.volumes.values():
        volume = fake.inspect_volume(name)
        assert volume is not None
        labels = volume.labels
        assert (
            labels[LABEL_SNAPSHOT] == snapshot.id and labels["io.opencode-cloud.instance"] == "unit"
        )
    # The data was copied while the old container was stopped, before the new one ran.
    order = [c for c, _ in fake.calls]
    assert order.index("stop_container") < order.index("wait_container")
    assert load_config(paths.config_file).config.opencode_version == "1.18.33"
    assert not any(n.startswith("opencode-cloud-unit-copy") for n in fake.containers)


def test_an_update_that_cannot_read_the_data_goes_back_by_itself(
    make: Make, versions, fake: FakeEngine, opencode: FakeOpencode, paths: InstancePaths
) -> None:
    _on(make, OLD)
    opencode.broken_images.add(NEW_REF)  # the new release answers health, not sessions
    updater = versions(opencode_version=OLD)
    target = updater.service.config.model_copy(update={"opencode_version": "1.18.33"})
    with pytest.raises(UpdateFailed) as caught:
        updater.update(target)
    assert caught.value.rolled_back and "no such column" in caught.value.problem
    assert fake.inspect_container(NAME).image == OLD_REF
    assert load_config(paths.config_file).config.opencode_version == OLD
    assert updater.snapshots() == []  # restored, so no longer needed
    copies = [n for c, n in fake.calls if c == "wait_container"]
    assert len(copies) == 2  # the snapshot, then its way back


def test_an_unchanged_version_is_no_update(make: Make, versions, fake: FakeEngine) -> None:
    make().start()
    updater = versions()
    fake.calls.clear()
    result = updater.update(updater.service.config)
    assert result.changed is False and result.previous == result.current
    assert fake.called("stop_container") == [] and updater.snapshots() == []


def test_rollback_returns_to_the_snapshot_and_drops_it(
    make: Make, versions, fake: FakeEngine, paths: InstancePaths
) -> None:
    _on(make, OLD)
    updater = versions(opencode_version=OLD)
    updater.update(updater.service.config.model_copy(update={"opencode_version": "1.18.33"}))
    result = versions(opencode_version="1.18.33").rollback()
    assert (result.previous, result.current) == ("opencode 1.18.33", f"opencode {OLD}")
    assert fake.inspect_container(NAME).image == OLD_REF
    assert load_config(paths.config_file).config.opencode_version == OLD
    assert versions(opencode_version=OLD).snapshots() == []


def test_rollback_leaves_the_provider_keys_as_they_are_now(
    make: Make, versions, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot's data comes back, but for opencode's key store: the copy into the
    session volume leaves `auth.json` (or its absence) as it is. The update's own copies
    keep nothing back."""
    commands: list[str] = []
    create = fake.create_container

    def recording(name: str, body: Any) -> str:
        if "copy" in name:
            commands.append(" ".join(body.get("Entrypoint") or []))
        return create(name, body)

    monkeypatch.setattr(fake, "create_container", recording)
    _on(make, OLD)
    updater = versions(opencode_version=OLD)
    updater.update(updater.service.config.model_copy(update={"opencode_version": "1.18.33"}))
    versions(opencode_version="1.18.33").rollback()
    taken, restored = commands
    assert "auth.json" not in taken
    steps = restored.split(" && ")
    session = SNAPSHOT_KINDS.index("session")
    kept = [step for step in steps if f"/to/{session} " in step or f"/to/{session}/" in step]
    assert kept and all("! -name auth.json" in step for step in kept), restored
    assert not any("auth.json" in step for step in steps if step not in kept)
    assert f"cp -a /from/{session}/. " not in restored  # no copy over the whole volume


def test_nothing_to_roll_back_and_nothing_to_update(versions) -> None:
    with pytest.raises(NothingToRollBack):
        versions().rollback()
    updater = versions()
    with pytest.raises(NotUpdatable):
        updater.update(updater.service.config)


def test_only_the_last_snapshots_and_the_images_they_need_are_kept(
    make: Make, versions, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import opencode_cloud.service.snapshots as module

    ids = iter(["20261101T000000Z", "20261102T000000Z", "20261103T000000Z"])
    monkeypatch.setattr(module, "_now_id", lambda: next(ids))
    stale = image_ref("1.17.0")
    fake.add_image(stale, env=SANDBOX_ENV, labels={LABEL_OPENCODE_VERSION: "1.17.0"})
    _on(make, OLD)
    for version in ("1.18.33", OLD, "1.18.33"):
        updater = versions(
            opencode_version=OLD if version == "1.18.33" else "1.18.33", keep_snapshots=2
        )
        result = updater.update(
            updater.service.config.model_copy(update={"opencode_version": version})
        )
    assert [s.id for s in updater.snapshots()] == ["20261103T000000Z", "20261102T000000Z"]
    assert result.removed_snapshots == ["20261101T000000Z"]
    assert fake.inspect_image(stale) is None  # nothing needs it: gone after the first update
    assert fake.inspect_image(OLD_REF) is not None  # a kept snapshot needs it
    assert fake.inspect_image(NEW_REF) is not None  # the container runs it


def test_start_refuses_a_version_change(make: Make) -> None:
    _on(make, OLD)
    with pytest.raises(VersionChange) as caught:
        make(opencode_version="1.18.33").start()
    assert (caught.value.current, caught.value.wanted) == (OLD_REF, NEW_REF)
