"""The remote test host as the tests see it (the fixtures are in `tests/remote/conftest.py`)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "remote-host.sh"
STATE_DIR = Path(os.environ.get("OCC_REMOTE_HOST_DIR", "/run/occ-remote-host"))
DATA_DIR = Path(os.environ.get("OCC_REMOTE_HOST_DATA", "/var/lib/occ-remote-host"))
# An image the remote engine keeps between runs (its data survives `down`).
REMOTE_BUSYBOX_IMAGE = "opencode-cloud-test/busybox:remote"


@dataclass(frozen=True)
class SshMaster:
    """A running SSH master connection: its control socket and its log (`ssh -E`)."""

    control: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@dataclass(frozen=True)
class RemoteHost:
    """The remote test host, as the tests see it."""

    state_dir: Path
    data_dir: Path = DATA_DIR
    address: str = "10.203.0.2"
    port: int = 2222
    alias: str = "occ-remote"
    alias_nodock: str = "occ-remote-nodock"
    alias_badauth: str = "occ-remote-badauth"
    alias_changedkey: str = "occ-remote-changedkey"
    alias_unknownkey: str = "occ-remote-unknownkey"
    alias_refused: str = "occ-remote-refused"
    alias_down: str = "occ-remote-down"
    alias_no_docker: str = "occ-remote2"
    nodock_user: str = "occ-nodock"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def docker_socket(self) -> str:
        """The remote engine's socket (the same path here and on `occ-remote`)."""
        return str(self.state_dir / "docker.sock")

    @property
    def engine_data_root(self) -> str:
        """The remote engine's DockerRootDir: tells it apart from any other engine."""
        return str(self.data_dir / "docker")

    @property
    def engine_host(self) -> str:
        return f"unix://{self.docker_socket}"

    @property
    def missing_socket(self) -> str:
        """A socket path with no engine behind it, on both hosts: "no Docker there"."""
        return str(self.state_dir / "none.sock")

    def ssh_command(self, alias: str, *args: str) -> list[str]:
        """`ssh -F <ssh_config> -o BatchMode=yes [args...] ALIAS` (append a command)."""
        return ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", *args, alias]

    def ssh(
        self, alias: str, command: str, *, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on ALIAS; the result whatever its exit status."""
        return subprocess.run(
            [*self.ssh_command(alias), command], capture_output=True, text=True, timeout=timeout
        )

    def remote_docker(
        self, *args: str, input: bytes | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI against the remote engine (directly, not over SSH)."""
        result = subprocess.run(
            ["docker", "-H", self.engine_host, *args],
            input=input,
            capture_output=True,
            timeout=timeout,
        )
        out = subprocess.CompletedProcess(
            result.args,
            result.returncode,
            result.stdout.decode(errors="replace"),
            result.stderr.decode(errors="replace"),
        )
        if check and out.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {out.stderr.strip()}")
        return out

    def run_on_host(
        self, *command: str, host: str = "occ-remote", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on the remote host itself, without SSH (its namespaces)."""
        return subprocess.run(
            [
                "nsenter",
                f"--mount={self.state_dir / 'ns' / f'{host}.mnt'}",
                f"--net=/run/netns/{host}",
                "--",
                *command,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def drop_connections(self, host: str = "occ-remote") -> None:
        """Kill the SSH sessions on HOST, as if the connection dropped mid-command.

        The listening sshd stays: a new connection is accepted at once.
        """
        subprocess.run([str(SCRIPT), "drop-connections", host], check=True, timeout=30)

    @contextlib.contextmanager
    def forward(self, alias: str, *forwards: str) -> Iterator[SshMaster]:
        """An SSH master connection with forwards (`-L SPEC`, ...) for the block.

        ssh leaves a forwarded Unix socket behind when it exits: remove it yourself.
        """
        workdir = Path(tempfile.mkdtemp(prefix="occ-ssh-", dir="/tmp"))  # short: sun_path
        control = workdir / "ctl"
        log = workdir / "ssh.log"
        command = self.ssh_command(
            alias,
            "-o",
            "ExitOnForwardFailure=yes",
            "-E",
            str(log),
            "-f",
            "-N",
            "-M",
            "-S",
            str(control),
            *forwards,
        )
        started = subprocess.run(command, capture_output=True, text=True, timeout=30)
        try:
            if started.returncode != 0:
                raise AssertionError(
                    f"ssh {' '.join(forwards)} {alias} failed: "
                    f"{started.stderr.strip()} {log.read_text() if log.exists() else ''}"
                )
            yield SshMaster(control=control, log=log)
        finally:
            subprocess.run(
                ["ssh", "-F", str(self.ssh_config), "-S", str(control), "-O", "exit", alias],
                capture_output=True,
                timeout=30,
            )
            shutil.rmtree(workdir, ignore_errors=True)


def busybox_tar() -> bytes:
    """A root filesystem holding a static busybox and its applet links."""
    binary = shutil.which("busybox") or "/bin/busybox"
    if not Path(binary).exists():
        raise RuntimeError("busybox is missing: apt-get install busybox-static (scripts/test.sh)")
    data = Path(binary).read_bytes()
    applets = subprocess.run([binary, "--list"], capture_output=True, text=True, check=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("tmp", 0o1777), ("www", 0o755)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in applets.stdout.split():
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
    return buffer.getvalue()
