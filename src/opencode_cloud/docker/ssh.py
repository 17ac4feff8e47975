"""Engines on other machines, reached over SSH with the system `ssh` client.

One `ssh` process per command (a control master) forwards a private local unix socket to
the remote engine's socket. Every transport in `transport.py` then works unchanged, at
the speed of a local socket once the connection is up. The same master forwards local
TCP ports to the service on demand: the tool's probes and `occ tunnel` reach the remote
host's loopback through it, never this machine's.

The system client means `~/.ssh/config` (Port, User, IdentityFile, ProxyJump), agents
and known_hosts behave as they do for `ssh` itself. BatchMode: a command never stops at
a prompt; a refusal becomes one of the errors below, named from what `ssh` said.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from opencode_cloud.docker.errors import DockerError, EngineUnavailable

DEFAULT_REMOTE_SOCKET = "/var/run/docker.sock"
# Seconds to wait for the TCP connection and the login; an unreachable host fails in
# this time rather than the system's minutes.
CONNECT_TIMEOUT = 10
# A dead link is noticed after this many seconds of silence (3 keep-alives, 5 s apart).
KEEPALIVE = ("ServerAliveInterval=5", "ServerAliveCountMax=3")
# Seconds ssh gets, after a request through it failed, to say why or to exit.
FAILURE_SETTLE_SECONDS = 1.0


class SshError(EngineUnavailable):
    """The remote host could not be used; `host` is its ssh address, `detail` what ssh said."""

    def __init__(self, message: str, host: str, detail: str = "") -> None:
        super().__init__(message, host)
        self.detail = detail


class HostUnreachable(SshError):
    """No SSH connection could be made: name unknown, refused, timed out, no route."""

    def __init__(self, host: str, detail: str = "") -> None:
        reason = _last_line(detail) or "no answer"
        super().__init__(f"Cannot reach {host} over SSH: {reason}.", host, detail)


class AuthenticationRefused(SshError):
    """The host refused every key (or password) ssh offered."""

    def __init__(self, host: str, detail: str = "") -> None:
        super().__init__(f"{host} refused the SSH login.", host, detail)


class HostKeyChanged(SshError):
    """The host's key differs from the one in known_hosts: possibly someone in between."""

    def __init__(self, host: str, detail: str = "") -> None:
        super().__init__(
            f"The SSH host key of {host} has changed since it was last seen; not connecting.",
            host,
            detail,
        )


class HostKeyUnknown(SshError):
    """The host's key is not in known_hosts yet, and ssh may not ask here."""

    def __init__(self, host: str, detail: str = "") -> None:
        super().__init__(f"The SSH host key of {host} is not known yet.", host, detail)


class NoRemoteEngine(SshError):
    """The login works, but no Docker engine listens at the socket on that host."""

    def __init__(self, host: str, socket_path: str, detail: str = "") -> None:
        super().__init__(f"No Docker engine answers at {socket_path} on {host}.", host, detail)
        self.socket_path = socket_path


class RemoteSocketDenied(SshError):
    """The login works, but that user may not use the engine's socket there."""

    def __init__(self, host: str, socket_path: str, user: str, detail: str = "") -> None:
        who = f"user {user!r}" if user else "the login user"
        super().__init__(
            f"Permission denied on the Docker socket {socket_path} of {host} for {who}.",
            host,
            detail,
        )
        self.socket_path = socket_path
        self.user = user


class RemoteEngineSilent(SshError):
    """The engine's socket is there and may be used, but a request through it failed:
    the engine is busy, restarting, or took longer than the command waits."""

    def __init__(self, host: str, cause: str, detail: str = "") -> None:
        super().__init__(f"The Docker engine on {host} did not answer: {cause}.", host, detail)
        self.cause = cause


class ConnectionDropped(SshError):
    """The SSH connection ended in the middle of a command."""

    def __init__(self, host: str, detail: str = "") -> None:
        super().__init__(f"The SSH connection to {host} dropped.", host, detail)


class SshNotInstalled(SshError):
    """No `ssh` client on this machine."""

    def __init__(self, host: str) -> None:
        super().__init__("The ssh client is not installed.", host)


class ForwardFailed(DockerError):
    """ssh would not forward a local port to the service."""


def _timed_out(cause: BaseException | None) -> bool:
    return cause is not None and (
        isinstance(cause, TimeoutError) or "timed out" in str(cause).lower()
    )


def _describe(cause: BaseException | None) -> str:
    """A request's failure in a few words, for one line of error."""
    if cause is None:
        return "its socket is there, but the request failed"
    if _timed_out(cause):
        return "no answer in time (busy or restarting?)"
    return _last_line(str(cause))[:120] or type(cause).__name__


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("ssh: ").rstrip(".") if lines else ""


@dataclass(frozen=True)
class SshTarget:
    """An engine behind SSH: `ssh://[user@]host[:port]` and the socket path there.

    `host` may be an alias of `~/.ssh/config`; whatever the URL leaves out comes from
    there, as with `ssh` itself.
    """

    host: str
    user: str | None = None
    port: int | None = None
    socket_path: str = DEFAULT_REMOTE_SOCKET
    # An ssh_config file used instead of ~/.ssh/config (the environment's OCC_SSH_CONFIG).
    config_file: str | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, url: str, socket_path: str | None = None) -> SshTarget:
        """Read `ssh://[user@]host[:port]`.

        Raises:
            ValueError: not such a URL, in words for the user.
        """
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError(f"{url!r} is not an ssh://[user@]host[:port] address")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{url!r}: an ssh address has no path; give the socket apart")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number from 1 to 65535") from None
        return cls(
            host=parts.hostname,
            user=parts.username,
            port=port,
            socket_path=socket_path or DEFAULT_REMOTE_SOCKET,
            config_file=os.environ.get("OCC_SSH_CONFIG") or None,
        )

    @property
    def url(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{self.host}{port}"

    def command(self, *options: str) -> list[str]:
        """An `ssh` command line to this host: never prompting, bounded connect time."""
        args = ["ssh"]
        if self.config_file:
            args += ["-F", self.config_file]
        args += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
        if self.user:
            args += ["-l", self.user]
        if self.port:
            args += ["-p", str(self.port)]
        return [*args, *options]

    def settings(self) -> dict[str, str]:
        """What ssh resolves for this host from its configuration (`ssh -G`): hostname,
        user, port, ... (empty when ssh is missing). Asked once per process."""
        return _resolved_settings(self)


@functools.cache
def _resolved_settings(target: SshTarget) -> dict[str, str]:
    try:
        proc = subprocess.run(
            [*target.command("-G"), "--", target.host],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    resolved: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        resolved.setdefault(key, value)
    return resolved


def classify(output: str, target: SshTarget) -> SshError:
    """The error that names why ssh could not log in, from what it printed. (What fails
    after the login, a socket or the link, `SshTunnel.failure` tells.)"""
    host = target.url
    lowered = output.lower()
    if "remote host identification has changed" in lowered:
        return HostKeyChanged(host, output)
    if "host key verification failed" in lowered or "no matching host key" in lowered:
        return HostKeyUnknown(host, output)
    if "permission denied (" in lowered or "too many authentication failures" in lowered:
        return AuthenticationRefused(host, output)
    return HostUnreachable(host, output)


def _die_with_parent() -> None:  # pragma: no cover (runs in the child)
    """Run in the ssh child: end it when this process dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def local_port_free(port: int) -> bool:
    """Whether nothing listens on `port` of this machine's loopback right now."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_local_port() -> int:
    """A TCP port on this machine's loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SshTunnel:
    """One SSH connection that carries the engine's socket and forwarded ports.

    Start it, use `engine_socket` as a local unix socket, ask `forward` for local ports,
    `close` it at the end. The ssh process has its own session, so Ctrl-C reaches the
    tool (which may still need the engine to clean up) and not ssh.
    """

    def __init__(self, target: SshTarget, *, timeout: float = CONNECT_TIMEOUT + 5) -> None:
        if shutil.which("ssh") is None:
            raise SshNotInstalled(target.url)
        self.target = target
        self._dir = Path(tempfile.mkdtemp(prefix="occ-ssh-"))
        self.engine_socket = str(self._dir / "engine.sock")
        self._control = str(self._dir / "control")
        self._log_path = self._dir / "ssh.log"
        self._forwards: dict[tuple[str, int], int] = {}
        options = [
            "-N",
            "-M",
            "-S",
            self._control,
            "-o",
            "ControlPersist=no",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "StreamLocalBindUnlink=yes",
            "-o",
            f"{KEEPALIVE[0]}",
            "-o",
            f"{KEEPALIVE[1]}",
            "-L",
            f"{self.engine_socket}:{target.socket_path}",
        ]
        with open(self._log_path, "wb") as log:
            self._process = subprocess.Popen(
                [*target.command(*options), "--", target.host],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._was_ready = False
        while not os.path.exists(self.engine_socket):
            ended = self._process.poll() is not None
            if ended or time.monotonic() > deadline:
                # Still trying to log in at the deadline: the host did not answer (there
                # is no connection yet to look at its socket over).
                error = self.failure() if ended else classify(self.output, self.target)
                self.close()
                raise error
            time.sleep(0.01)
        self._was_ready = True

    @property
    def output(self) -> str:
        """What ssh has printed so far (its errors and warnings)."""
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def failure(self, cause: BaseException | None = None) -> SshError:
        """Why requests through the tunnel fail (`cause`, when a request did): ssh could
        not reach the engine's socket on the far side, the engine there did not answer,
        the connection ended, or it never came up."""
        output = self.output
        # ssh closes the forwarded connection first and logs why (or exits, when the
        # link itself went) just after. A request that timed out was connected: nothing
        # more will come.
        deadline = time.monotonic() + (0 if _timed_out(cause) else FAILURE_SETTLE_SECONDS)
        while self.alive and "open failed" not in output and time.monotonic() < deadline:
            time.sleep(0.02)
            output = self.output
        if self.alive:
            # ssh says only "open failed" (and that line may be about a port forward to
            # the service); a look on the host tells why.
            return self._socket_problem(output, cause)
        if self._was_ready:
            return ConnectionDropped(self.target.url, output)
        return classify(output, self.target)

    def _socket_problem(self, output: str, cause: BaseException | None) -> SshError:
        """A look at the engine's socket on the host itself (over the same connection):
        missing, refused to this user, or there and usable, when the engine itself did
        not answer."""
        quoted = shlex.quote(self.target.socket_path)
        check = f"test -S {quoted} || exit 3; id -un; test -r {quoted} -a -w {quoted} || exit 4"
        try:
            proc = subprocess.run(
                [*self.target.command("-S", self._control), "--", self.target.host, check],
                capture_output=True,
                text=True,
                timeout=CONNECT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return RemoteEngineSilent(self.target.url, "the host did not answer either", output)
        if proc.returncode == 3:
            return NoRemoteEngine(self.target.url, self.target.socket_path, output)
        if proc.returncode == 4:
            user = proc.stdout.strip() or self.target.user or ""
            return RemoteSocketDenied(self.target.url, self.target.socket_path, user, output)
        if proc.returncode != 0:
            return ConnectionDropped(self.target.url, output + proc.stderr)
        return RemoteEngineSilent(self.target.url, _describe(cause), output)

    def forward(self, address: str, port: int, local_port: int | None = None) -> int:
        """A local loopback port that reaches `address:port` as seen from the remote host.

        Raises:
            ForwardFailed: ssh refused (the local port is taken, say).
            ConnectionDropped: the connection is gone.
        """
        key = (address, port)
        if key in self._forwards and local_port in (None, self._forwards[key]):
            return self._forwards[key]
        if not self.alive:
            raise self.failure()
        chosen = local_port or free_local_port()
        target = f"[{address}]" if ":" in address else address
        proc = subprocess.run(
            [
                *self.target.command("-S", self._control, "-O", "forward"),
                "-L",
                f"127.0.0.1:{chosen}:{target}:{port}",
                "--",
                self.target.host,
            ],
            capture_output=True,
            text=True,
            timeout=CONNECT_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            if not self.alive:
                raise self.failure()
            raise ForwardFailed(
                f"Could not forward 127.0.0.1:{chosen} to {address}:{port} on "
                f"{self.target.url}: {_last_line(proc.stderr) or 'refused'}."
            )
        self._forwards[key] = chosen
        return chosen

    def wait(self) -> None:
        """Block until the connection ends."""
        self._process.wait()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
