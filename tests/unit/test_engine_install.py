"""Whether and how `occ setup` makes a Docker engine: the decision for each kind of
machine and each way the engine was missed, and the steps carried out (with fakes: the
real engine already runs where the tests run)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from opencode_cloud.docker.errors import (
    DaemonNotRunning,
    DockerNotInstalled,
    DockerPermissionDenied,
    EngineTooOld,
)
from opencode_cloud.doctor.engine_install import (
    EngineInstallFailed,
    Machine,
    _distro_ids,
    carry_out,
    plan_for,
)

SOCKET = "unix:///var/run/docker.sock"
DEBIAN_ROOT = Machine(system="Linux", distro=frozenset({"debian"}), apt=True, root=True)


def test_debian_as_root_without_dockerd_installs_and_starts() -> None:
    plan = plan_for(DockerNotInstalled(SOCKET), DEBIAN_ROOT)
    assert plan is not None and plan.install and plan.start
    assert "docker.io" in plan.describe()


def test_a_stopped_daemon_that_is_installed_is_only_started() -> None:
    machine = Machine(
        system="Linux", distro=frozenset({"ubuntu", "debian"}), apt=True, sudo=True, dockerd=True
    )
    plan = plan_for(DaemonNotRunning(SOCKET), machine)
    assert plan is not None and plan.start and not plan.install


@pytest.mark.parametrize(
    ("machine", "words"),
    [
        (Machine(system="Darwin"), "Docker Desktop"),
        (Machine(system="Windows"), "Docker Desktop"),
        (Machine(system="Linux", distro=frozenset({"fedora"}), root=True), "docs.docker.com"),
        (Machine(system="Linux", distro=frozenset({"debian"}), root=True), "docs.docker.com"),
        (Machine(system="Linux", distro=frozenset({"debian"}), apt=True), "docs.docker.com"),
    ],
    ids=["macos", "windows", "fedora", "debian-without-apt", "debian-without-root-or-sudo"],
)
def test_elsewhere_the_plan_only_says_how(machine: Machine, words: str) -> None:
    plan = plan_for(DockerNotInstalled(SOCKET), machine)
    assert plan is not None and not plan.can_act
    assert words in plan.manual


@pytest.mark.parametrize(
    "error",
    [
        DaemonNotRunning("tcp://10.0.0.9:2375", chosen_by="DOCKER_HOST"),
        DaemonNotRunning(SOCKET, chosen_by="DOCKER_CONTEXT", context="work"),
        DockerPermissionDenied(SOCKET),
        EngineTooOld(SOCKET, "1.30", "1.41"),
    ],
    ids=["docker-host", "context", "permission", "too-old"],
)
def test_an_engine_that_is_not_this_machines_missing_default_gets_no_plan(error) -> None:
    assert plan_for(error, DEBIAN_ROOT) is None


def test_distro_ids_come_from_id_and_id_like(tmp_path: Path) -> None:
    os_release = tmp_path / "os-release"
    os_release.write_text('NAME="Ubuntu"\nID=ubuntu\nID_LIKE="debian"\nVERSION_ID="24.04"\n')
    assert _distro_ids(os_release) == {"ubuntu", "debian"}
    assert _distro_ids(tmp_path / "missing") == frozenset()


@dataclass
class FakeActions:
    """Records what `carry_out` does; the engine answers once dockerd was spawned."""

    codes: dict[str, int] = field(default_factory=dict)
    ran: list[list[str]] = field(default_factory=list)
    spawned: list[list[str]] = field(default_factory=list)
    stale: bool = False
    running: bool = False

    def run(self, argv: Sequence[str]) -> tuple[int, str]:
        self.ran.append(list(argv))
        verb = next((a for a in argv if a in ("update", "install", "start")), "")
        code = self.codes.get(verb, 0)
        if verb == "start" and code == 0:
            self.running = True
        return code, f"output of {verb}\nE: the last line"

    def spawn_dockerd(self, as_root: Sequence[str]) -> None:
        self.spawned.append(list(as_root))
        self.running = True

    def dockerd_runs(self) -> bool:
        return self.running

    def remove_stale_pid_file(self, as_root: Sequence[str]) -> bool:
        return self.stale


def _plan(machine: Machine):
    plan = plan_for(DockerNotInstalled(SOCKET), machine)
    assert plan is not None
    return plan


def test_without_systemd_dockerd_is_started_in_the_background_after_apt() -> None:
    actions = FakeActions(stale=True)
    steps: list[str] = []
    carry_out(_plan(DEBIAN_ROOT), actions, lambda: actions.running, on_step=steps.append)
    assert [argv[argv.index("apt-get") :] for argv in actions.ran] == [
        ["apt-get", "-q", "-y", "update"],
        ["apt-get", "-q", "-y", "install", "docker.io"],
    ]
    assert all("DEBIAN_FRONTEND=noninteractive" in argv for argv in actions.ran)
    assert actions.spawned == [[]]  # as root: no sudo
    assert any("pid" in step for step in steps)


def test_with_systemd_and_sudo_systemctl_starts_it() -> None:
    machine = Machine(
        system="Linux",
        distro=frozenset({"debian"}),
        apt=True,
        sudo=True,
        dockerd=True,
        systemd=True,
    )
    actions = FakeActions()
    carry_out(_plan(machine), actions, lambda: actions.running)
    assert actions.ran == [["sudo", "systemctl", "start", "docker"]]
    assert actions.spawned == []


def test_a_running_daemon_is_not_started_twice() -> None:
    actions = FakeActions(running=True)
    answered = iter([False, True])
    carry_out(
        _plan(replace(DEBIAN_ROOT, dockerd=True)),
        actions,
        lambda: next(answered),
        sleep=lambda _s: None,
    )
    assert actions.spawned == []


def test_a_failed_apt_step_stops_with_its_output() -> None:
    actions = FakeActions(codes={"install": 100})
    with pytest.raises(EngineInstallFailed) as raised:
        carry_out(_plan(DEBIAN_ROOT), actions, lambda: True)
    assert "apt-get install" in raised.value.message
    assert "E: the last line" in raised.value.output
    assert actions.spawned == []


def test_an_engine_that_never_answers_is_an_error() -> None:
    actions = FakeActions()
    with pytest.raises(EngineInstallFailed, match="did not answer"):
        carry_out(_plan(DEBIAN_ROOT), actions, lambda: False, wait=0.0, sleep=lambda _s: None)


def test_real_actions_on_files_of_their_own(tmp_path: Path) -> None:
    """The real side effects, pointed at a pid file of the test's own: a pid file of a
    process that is not dockerd is stale and removed; commands report code and output."""
    import os
    import subprocess

    from opencode_cloud.doctor.engine_install import RealActions

    pid_file = tmp_path / "docker.pid"
    actions = RealActions(log=tmp_path / "dockerd.log", pid_file=pid_file)
    assert not actions.dockerd_runs()
    assert actions.remove_stale_pid_file([]) is False  # none there

    pid_file.write_text(str(os.getpid()))  # alive, but python, not dockerd
    assert not actions.dockerd_runs()
    gone = subprocess.Popen(["true"])
    gone.wait()
    pid_file.write_text(str(gone.pid))
    assert actions.remove_stale_pid_file([]) is True
    assert not pid_file.exists()

    assert actions.run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\nerr\n")
    code, said = actions.run(["/nonexistent/apt-get"])
    assert code == 127 and "nonexistent" in said
