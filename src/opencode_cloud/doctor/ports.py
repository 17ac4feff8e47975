"""Who holds a port on this machine: the programs listening on it, read from /proc.

`port_holders` reads the kernel's socket tables (`/proc/net/tcp` and `tcp6`) for the
sockets listening on a port, and each process's open descriptors for who holds them:
their pid and command line when this user may look (root, or the same user), else only
the socket's owner. `try_bind` binds the port for a moment, as the engine's port proxy
would, and `free_port_near` finds one nearby that nothing holds. Which containers publish
a port is the engine's to say (`docker.container.containers_publishing`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from opencode_cloud.docker.models import addresses_overlap

PROC = Path("/proc")
# How far `free_port_near` looks for a free port.
PORT_SEARCH = 20
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
_COMMAND_CHARS = 120


@dataclass(frozen=True)
class PortHolder:
    """A program listening on a port: its pid and command line when they can be read."""

    uid: int
    pid: int | None = None
    command: str = ""

    def describe(self) -> str:
        if self.pid is None:
            return f"another program (of user {user_name(self.uid)})"
        return f"pid {self.pid} ({self.command or '?'})"


def _decode_address(text: str) -> str:
    """An address of /proc/net/tcp (hex, each 32-bit word in host byte order) in words."""
    import ipaddress

    raw = b"".join(
        int(text[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(text), 8)
    )
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _listeners(port: int, address: str, proc: Path) -> dict[int, int]:
    """The sockets listening on `port` at an address that conflicts with `address`, as
    socket inode -> owner uid."""
    found: dict[int, int] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            hex_address, _, hex_port = fields[1].partition(":")
            try:
                if int(hex_port, 16) != port:
                    continue
                listening = _decode_address(hex_address)
                if addresses_overlap(listening, address):
                    found[int(fields[9])] = int(fields[7])
            except ValueError:
                continue
    return found


def _command_line(pid_dir: Path) -> str:
    try:
        raw = (pid_dir / "cmdline").read_bytes()
    except OSError:
        return ""
    text = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return text if len(text) <= _COMMAND_CHARS else text[: _COMMAND_CHARS - 3] + "..."


def port_holders(port: int, address: str, proc: Path = PROC) -> list[PortHolder]:
    """Who listens on `port` (at an address conflicting with `address`), from /proc: the
    pid and command line of each process holding the socket when this user may look
    (root, or the same user), else only the socket's owner."""
    sockets = _listeners(port, address, proc)
    if not sockets:
        return []
    wanted = {f"socket:[{inode}]": inode for inode in sockets}
    holders: dict[int, list[PortHolder]] = {}
    with contextlib.suppress(OSError):
        for pid_dir in proc.iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                descriptors = list((pid_dir / "fd").iterdir())
            except OSError:
                continue  # another user's process, or it ended
            for descriptor in descriptors:
                try:
                    target = os.readlink(descriptor)
                except OSError:
                    continue
                inode = wanted.get(target)
                if inode is not None:
                    holder = PortHolder(sockets[inode], int(pid_dir.name), _command_line(pid_dir))
                    if holder not in holders.setdefault(inode, []):
                        holders[inode].append(holder)
    result: list[PortHolder] = []
    for inode, uid in sockets.items():
        for holder in holders.get(inode) or [PortHolder(uid)]:
            if holder not in result:
                result.append(holder)
    return result


def try_bind(address: str, port: int) -> OSError | None:
    """Bind `address:port` for a moment, as the engine's port proxy would; the error
    when that fails."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As Docker's proxy does: connections of an earlier listener that linger in
            # TIME_WAIT do not hold the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address or "0.0.0.0", port))
    except OSError as exc:
        return exc
    return None


def free_port_near(address: str, port: int) -> int | None:
    for candidate in range(port + 1, min(port + PORT_SEARCH, 65535) + 1):
        if try_bind(address, candidate) is None:
            return candidate
    return None


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
