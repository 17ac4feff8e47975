"""A Docker engine for this machine, where the quick start would make one.

`plan_for` decides, without side effects, from the error that reaching the engine gave
and the facts of this machine (`Machine.here()`): on Debian or Ubuntu, with apt-get and
root (or sudo), Debian's `docker.io` is installed when `dockerd` is missing and the daemon
is started (by systemd where it runs, else by hand, as `scripts/engine.sh` does);
elsewhere the plan only says how to get one. `carry_out` runs a plan's steps through
`Actions`, which tests replace.

An engine chosen by a setting (`DOCKER_HOST`, a Docker context), a socket this user may
not use, or an engine too old are not this machine's default engine missing: no plan.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from opencode_cloud.docker.errors import DaemonNotRunning, DockerNotInstalled
from opencode_cloud.errors import OpencodeCloudError

PID_FILE = Path("/var/run/docker.pid")
DOCKERD_LOG = Path("/var/log/opencode-cloud-dockerd.log")
ANSWER_WAIT_SECONDS = 60.0
DOCKER_ENGINE_DOCS = "https://docs.docker.com/engine/install/"
DOCKER_DESKTOP_DOCS = "https://docs.docker.com/desktop/"
APT_ENV = ("DEBIAN_FRONTEND=noninteractive", "DEBCONF_NOWARNINGS=yes", "NEEDRESTART_MODE=a")


class EngineInstallFailed(OpencodeCloudError):
    """A step of installing or starting the engine failed; `output` holds its last lines."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class Machine:
    """What decides whether and how an engine can be installed here.

    Attributes:
        system: `platform.system()`: Linux, Darwin, Windows.
        distro: ID and ID_LIKE of /etc/os-release (`debian`, `ubuntu`, ...).
        apt: apt-get is installed.
        root: running as root.
        sudo: sudo is installed (for a user who is not root).
        dockerd: the engine's daemon is installed.
        systemd: systemd runs this machine (it starts the daemon then).
    """

    system: str
    distro: frozenset[str] = frozenset()
    apt: bool = False
    root: bool = False
    sudo: bool = False
    dockerd: bool = False
    systemd: bool = False

    @classmethod
    def here(cls) -> Machine:
        return cls(
            system=platform.system(),
            distro=_distro_ids(Path("/etc/os-release")),
            apt=shutil.which("apt-get") is not None,
            root=hasattr(os, "geteuid") and os.geteuid() == 0,
            sudo=shutil.which("sudo") is not None,
            dockerd=shutil.which("dockerd") is not None,
            systemd=Path("/run/systemd/system").is_dir(),
        )


def _distro_ids(os_release: Path) -> frozenset[str]:
    try:
        text = os_release.read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    ids: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in ("ID", "ID_LIKE"):
            ids.update(value.strip().strip("\"'").lower().split())
    return frozenset(ids)


@dataclass(frozen=True)
class EnginePlan:
    """What to do about a missing engine.

    Attributes:
        install: install Debian's docker.io first.
        start: start the daemon.
        manual: how to get an engine by hand, when this tool cannot (then nothing to do).
        machine: the machine it was made for.
    """

    machine: Machine
    install: bool = False
    start: bool = False
    manual: str = ""

    @property
    def can_act(self) -> bool:
        return self.install or self.start

    def describe(self) -> str:
        """The plan in words: `install Debian's docker.io and start the Docker engine`."""
        steps = []
        if self.install:
            steps.append("install Debian's docker.io (apt-get)")
        if self.start:
            how = "systemd" if self.machine.systemd else "in the background"
            steps.append(f"start the Docker engine ({how})")
        return " and ".join(steps)


def plan_for(error: OpencodeCloudError, machine: Machine) -> EnginePlan | None:
    """The plan for the engine that reaching it raised `error`; None when the error is
    not this machine's default engine missing or stopped (the error itself says what to
    do then)."""
    if isinstance(error, DaemonNotRunning) and error.chosen_by is not None:
        return None  # an engine named by a setting is not ours to start
    if not isinstance(error, (DockerNotInstalled, DaemonNotRunning)):
        return None
    if machine.system != "Linux":
        return EnginePlan(
            machine,
            manual=(
                f"Install and start Docker Desktop ({DOCKER_DESKTOP_DOCS}), then run this again."
            ),
        )
    debian_like = bool(machine.distro & {"debian", "ubuntu"})
    if not (debian_like and machine.apt and (machine.root or machine.sudo)):
        return EnginePlan(
            machine,
            manual=(
                f"Install Docker Engine ({DOCKER_ENGINE_DOCS}) and start it "
                "(`sudo systemctl start docker`), then run this again."
            ),
        )
    return EnginePlan(machine, install=not machine.dockerd, start=True)


class Actions(Protocol):
    """The side effects of `carry_out`."""

    def run(self, argv: Sequence[str]) -> tuple[int, str]:
        """Run a command to its end; its exit code and output."""
        ...

    def spawn_dockerd(self, as_root: Sequence[str]) -> None:
        """Start dockerd in the background, detached from this process."""
        ...

    def dockerd_runs(self) -> bool:
        """The daemon named by /var/run/docker.pid is alive."""
        ...

    def remove_stale_pid_file(self, as_root: Sequence[str]) -> bool:
        """Remove a pid file left by a daemon that no longer runs; True if one was."""
        ...


@dataclass
class RealActions:
    """`Actions` on this machine."""

    log: Path = DOCKERD_LOG
    pid_file: Path = PID_FILE
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def run(self, argv: Sequence[str]) -> tuple[int, str]:
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, env=self.environ, check=False
            )
        except OSError as exc:
            return 127, str(exc)
        return done.returncode, (done.stdout + done.stderr)

    def spawn_dockerd(self, as_root: Sequence[str]) -> None:
        # nohup through a shell, as scripts/engine.sh does: the daemon outlives this
        # command, and its own log tells why it would not start.
        script = f"nohup dockerd >>'{self.log}' 2>&1 </dev/null &"
        subprocess.run([*as_root, "sh", "-c", script], check=False, env=self.environ)

    def dockerd_runs(self) -> bool:
        try:
            pid = self.pid_file.read_text(encoding="utf-8").strip()
            comm = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip()
        except OSError:
            return False
        return comm == "dockerd"

    def remove_stale_pid_file(self, as_root: Sequence[str]) -> bool:
        if not self.pid_file.exists() or self.dockerd_runs():
            return False
        subprocess.run([*as_root, "rm", "-f", str(self.pid_file)], check=False)
        return True


def _as_root(machine: Machine) -> list[str]:
    return [] if machine.root else ["sudo"]


def _last_lines(text: str, count: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-count:])


def carry_out(
    plan: EnginePlan,
    actions: Actions,
    answers: Callable[[], bool],
    *,
    on_step: Callable[[str], None] = lambda _msg: None,
    wait: float = ANSWER_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Install and start the engine as `plan` says, until `answers()` is true.

    Raises:
        EngineInstallFailed: a step failed, or the engine did not answer within `wait`.
    """
    root = _as_root(plan.machine)
    apt = [*root, "env", *APT_ENV, "apt-get", "-q", "-y"]
    if plan.install:
        on_step("Installing Debian's docker.io (dockerd, containerd, runc) ...")
        for step in (["update"], ["install", "docker.io"]):
            code, output = actions.run([*apt, *step])
            if code != 0:
                raise EngineInstallFailed(
                    f"`apt-get {step[0]}` failed (exit code {code}).", _last_lines(output)
                )
    if plan.start:
        on_step("Starting the Docker engine ...")
        if plan.machine.systemd:
            code, output = actions.run([*root, "systemctl", "start", "docker"])
            if code != 0:
                raise EngineInstallFailed(
                    f"`systemctl start docker` failed (exit code {code}).", _last_lines(output)
                )
        else:
            if actions.remove_stale_pid_file(root):
                on_step(f"Removed {PID_FILE}, left by a daemon that no longer runs.")
            if not actions.dockerd_runs():
                actions.spawn_dockerd(root)
    deadline = time.monotonic() + wait
    while not answers():
        if time.monotonic() >= deadline:
            raise EngineInstallFailed(
                f"The Docker engine did not answer within {wait:.0f} s of its start."
            )
        sleep(0.5)
