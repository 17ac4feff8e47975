"""Copying a person's volumes from one node of the swarm to another, through one-shot
services only (`team/oneshot.py`): `occ` talks to the manager, never to either node.

A receiver pinned to the target node mounts the (new, empty) volumes and listens on the
team's overlay; a sender pinned to the source node mounts them read-only and streams
them to it as one tar (owners, modes, times, ACLs and `user.*` extended attributes kept;
symbolic links copied as links, never followed). The overlay is a network nobody should
trust: both ends read a one-time key (a swarm secret only these two services get), prove
to each other that they know it, and every chunk of the stream carries an HMAC-SHA256
over its place in the stream; nothing reaches the receiver's `tar` before its chunk is
checked, and a SHA-256 of the whole stream closes it. The source is only read.

Both run as root only so that owners are kept, with no capabilities but those that
takes (the sender: reading any file; the receiver: setting owners and modes); neither
runs or reads as a program anything in the volumes: GNU tar stores and restores them.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opencode_cloud.docker.errors import DockerError
from opencode_cloud.docker.swarm import SecretFile
from opencode_cloud.instance import LABEL_INSTANCE, LABEL_MANAGED
from opencode_cloud.team.errors import VolumesNotCopied
from opencode_cloud.team.oneshot import TASK_ENDED, OneShot, problem

if TYPE_CHECKING:
    from opencode_cloud.docker.swarm import SwarmEngine
    from opencode_cloud.team.cluster import Cluster

SEND_ROLE = "volume-send"
RECEIVE_ROLE = "volume-receive"
# The receiver's port on the overlay (its own container's: nothing is published).
TRANSFER_PORT = 7717
KEY_FILE = "/run/secrets/transfer-key"
# Where each volume is mounted in both services: VOLUMES_DIR/NAME.
VOLUMES_DIR = "/volumes"
# The receiver's exit status when a target volume is not empty: it wrote nothing.
NOT_EMPTY_EXIT = 3
# ... and when it failed after it found them empty: what they hold is the copy's (as when
# it still runs at the time limit). Any other end (never ran, rejected, died before it
# looked) leaves them alone: they may be the person's own.
WRITTEN_EXIT = 4
# Seconds a copy may take, from the services' creation (a node may first pull the image).
TRANSFER_TIMEOUT = 3600.0
# Seconds a person's instance gets to stop, and to run again on its (new) node.
STOP_TIMEOUT = 120.0
START_TIMEOUT = 300.0
# What both run: `python3 -I -c PROGRAM KEY_FILE send|receive PORT VOLUMES_DIR PEER
# VOLUME...` (fixed; PEER is the receiver's service name, or - for the receiver itself,
# and the volumes' names are checked).
TRANSFER_PROGRAM = r"""
import hashlib, hmac, os, selectors, socket, struct, subprocess, sys, time

KEY = open(sys.argv[1], "rb").read()
ROLE, PORT, PEER, VOLUMES = sys.argv[2], int(sys.argv[3]), sys.argv[5], sys.argv[6:]
CHUNK = 1 << 20
TAR = ["tar", "--file=-", "--numeric-owner", "--acls", "--xattrs", "--xattrs-include=user.*",
       "--directory=" + sys.argv[4]]

def mac(*parts):
    digest = hmac.new(KEY, digestmod=hashlib.sha256)
    for part in parts:
        digest.update(part)
    return digest.digest()

def read(conn, size):
    data = bytearray()
    while len(data) < size:
        piece = conn.recv(min(size - len(data), CHUNK))
        if not piece:
            raise EOFError("the connection closed")
        data += piece
    return bytes(data)

def send(host):
    deadline = time.monotonic() + 600
    while True:
        try:
            conn = socket.create_connection((host, PORT), timeout=30)
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("the receiver does not answer")
            time.sleep(1)
    conn.settimeout(600)
    mine = read(conn, 32)
    theirs = os.urandom(32)
    conn.sendall(theirs + mac(b"sender", mine, theirs))
    if not hmac.compare_digest(read(conn, 32), mac(b"receiver", theirs, mine)):
        sys.exit("the receiver does not know the key")
    tar = subprocess.Popen([*TAR, "--create", "--sparse", "--one-file-system", "--", *VOLUMES],
                           stdout=subprocess.PIPE)
    whole, seq = hashlib.sha256(), 0
    while True:
        data = tar.stdout.read(CHUNK)
        if not data:
            break
        whole.update(data)
        head = struct.pack(">QI", seq, len(data))
        conn.sendall(head + data + mac(mine, theirs, head, data))
        seq += 1
    if tar.wait() != 0:
        sys.exit("tar could not read the volumes")
    head, end = struct.pack(">QI", seq, 0), whole.digest()
    conn.sendall(head + end + mac(mine, theirs, head, end))
    if read(conn, 2) != b"OK":
        sys.exit("the receiver refused the copy")

def hello(server):
    # Everyone who connects is answered side by side: one who says nothing, or too
    # little, holds up nobody and is hung up on after 10 s (the oldest first when too
    # many wait); one without the key at once.
    chooser, waiting = selectors.DefaultSelector(), {}
    chooser.register(server, selectors.EVENT_READ)
    end = time.monotonic() + 900
    while time.monotonic() < end:
        for ready, _ in chooser.select(1):
            conn = ready.fileobj
            if conn is server:
                conn, _ = server.accept()
                conn.settimeout(10)
                mine = os.urandom(32)
                try:
                    conn.sendall(mine)
                except OSError:
                    conn.close()
                    continue
                waiting[conn] = (mine, bytearray(), time.monotonic() + 10)
                chooser.register(conn, selectors.EVENT_READ)
                continue
            mine, got, _ = waiting[conn]
            try:
                piece = conn.recv(64 - len(got))
            except OSError:
                piece = b""
            got += piece
            if piece and len(got) < 64:
                continue
            if len(got) == 64 and hmac.compare_digest(got[32:], mac(b"sender", mine, got[:32])):
                for other in waiting:
                    if other is not conn:
                        other.close()
                chooser.close()
                server.close()
                return conn, mine, bytes(got[:32])
            chooser.unregister(conn)
            del waiting[conn]
            conn.close()
        now = time.monotonic()
        stale = {c for c, (_, _, until) in waiting.items() if until < now}
        for conn in stale.union(list(waiting)[:-1000]):
            chooser.unregister(conn)
            del waiting[conn]
            conn.close()
    raise OSError("the sender did not come")

def receive():
    for volume in VOLUMES:
        if os.listdir(os.path.join(sys.argv[4], volume)):
            print(f"{volume} is not empty on this node", file=sys.stderr)
            sys.exit(3)
    # The volumes were empty: from here on, a failure exits 4 (what is there is the copy's).
    try:
        ok = copy_in()
    except Exception as error:
        ok = False
        print(f"the copy failed: {error}", file=sys.stderr)
    if not ok:
        print("the copy was cut short or altered", file=sys.stderr)
        sys.exit(4)

def copy_in():
    conn, mine, theirs = hello(socket.create_server(("", PORT)))
    conn.settimeout(600)
    conn.sendall(mac(b"receiver", theirs, mine))
    tar = subprocess.Popen([*TAR, "--extract", "--same-owner", "--same-permissions"],
                           stdin=subprocess.PIPE)
    whole, seq, ok = hashlib.sha256(), 0, False
    try:
        while True:
            head = read(conn, 12)
            got_seq, size = struct.unpack(">QI", head)
            if got_seq != seq or size > CHUNK:
                break
            data = read(conn, size or 32)
            if not hmac.compare_digest(read(conn, 32), mac(mine, theirs, head, data)):
                break
            if size == 0:
                ok = hmac.compare_digest(data, whole.digest())
                break
            whole.update(data)
            tar.stdin.write(data)
            seq += 1
    except (OSError, EOFError):
        pass
    try:
        tar.stdin.close()
    except OSError:
        pass
    ok = tar.wait() == 0 and ok
    conn.sendall(b"OK" if ok else b"NO")
    return ok

try:
    send(PEER) if ROLE == "send" else receive()
except (OSError, EOFError) as error:
    sys.exit(f"the copy failed: {error}")
"""
# A volume name the copy accepts: Docker's own rule.
_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def volume_mounts(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The named volumes a service's spec mounts (what its person keeps)."""
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return [dict(m) for m in container.get("Mounts") or [] if m.get("Type") == "volume"]


def _mounts(mounts: Sequence[Mapping[str, Any]], *, read_only: bool) -> list[dict[str, Any]]:
    """The volumes at VOLUMES_DIR/NAME, made (if new) with the labels the person's own
    mounts give them."""
    made = []
    for mount in mounts:
        name = str(mount["Source"])
        if not _VOLUME_NAME.match(name):
            raise ValueError(f"not a volume name: {name!r}")
        options = dict(mount.get("VolumeOptions") or {})
        options["NoCopy"] = True
        made.append(
            {
                "Type": "volume",
                "Source": name,
                "Target": f"{VOLUMES_DIR}/{name}",
                "ReadOnly": read_only,
                "VolumeOptions": options,
            }
        )
    return made


def copy_volumes(
    cluster: Cluster,
    mounts: Sequence[Mapping[str, Any]],
    source: str,
    target: str,
    timeout: float = TRANSFER_TIMEOUT,
) -> None:
    """Copy the volumes `mounts` name from node `source` to node `target` (node IDs),
    where they must not exist yet or be empty. Their services and the one-time key are
    removed whatever happens.

    Raises:
        VolumesNotCopied: `written` says whether the target's volumes may hold part of
        the copy (they are new: the caller deletes them); the source is as it was.
    """
    names = [str(m["Source"]) for m in mounts]
    client = cluster.client
    labels = {LABEL_MANAGED: "true", LABEL_INSTANCE: cluster.instance.name}
    key_name = f"{cluster.layout.prefix}-transfer-key-{secrets.token_hex(4)}"
    key_id = client.create_secret(key_name, secrets.token_bytes(32), labels)
    key = [SecretFile(key_id, key_name, KEY_FILE)]
    runner = cluster.one_shots()
    network = cluster.layout.cluster_network
    started: list[str] = []
    try:
        receiver = runner.start(
            OneShot(
                RECEIVE_ROLE,
                _command("receive", names),
                cap_add=["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"],
                mounts=_mounts(mounts, read_only=False),
                network=network,
                secrets=key,
                memory_bytes=256 * 2**20,
            ),
            target,
        )
        started.append(receiver)
        sender = runner.start(
            OneShot(
                SEND_ROLE,
                _command("send", names, peer=receiver),
                cap_add=["DAC_READ_SEARCH"],
                mounts=_mounts(mounts, read_only=True),
                network=network,
                secrets=key,
                memory_bytes=256 * 2**20,
            ),
            source,
        )
        started.append(sender)
        received = runner.wait(receiver, timeout)
        received_problem = problem(received, timeout)
        if received_problem is not None:
            # Still running at the time limit: it found them empty (it ends at once else).
            running = received is None and any(
                t.state == "running" for t in client.swarm_tasks(service=receiver, ended=True)
            )
            written = running or f"({WRITTEN_EXIT})" in received_problem
            if f"({NOT_EMPTY_EXIT})" in received_problem:
                received_problem = "its volumes are on the target node already, not empty"
            raise VolumesNotCopied(names, source, target, received_problem, written=written)
        sent_problem = problem(runner.wait(sender, 60), 60)
        if sent_problem is not None:
            raise VolumesNotCopied(names, source, target, sent_problem, written=True)
    finally:
        for name in started:
            client.remove_service(name)
        # A key that outlives its copy opens nothing: never let it hide what failed.
        with contextlib.suppress(DockerError):
            cluster.remove_secret_when_free(key_name)


def _command(role: str, volumes: Sequence[str], peer: str = "-") -> list[str]:
    return [
        "python3", "-I", "-c", TRANSFER_PROGRAM,
        KEY_FILE, role, str(TRANSFER_PORT), VOLUMES_DIR, peer, *volumes,
    ]  # fmt: skip


def pin(
    client: SwarmEngine, service: str, node_id: str, *, replicas: int, wait: bool = True
) -> None:
    """Pin `service` (a person's) to `node_id` with `replicas` (0 or 1), and wait until
    its task stopped, or runs there (not with `wait`: its node may be gone).

    Raises:
        DockerError: it did not, in time.
    """
    found = client.service_spec(service)
    if found is None:
        raise DockerError(f"{service} is not a service")
    version, spec = found
    task = spec.setdefault("TaskTemplate", {})
    task.setdefault("Placement", {})["Constraints"] = [f"node.id=={node_id}"]
    spec["Mode"] = {"Replicated": {"Replicas": replicas}}
    client.update_service(service, version, spec)
    timeout = START_TIMEOUT if replicas else STOP_TIMEOUT
    deadline = time.monotonic() + timeout
    while wait:
        tasks = client.swarm_tasks(service=service, ended=True)
        if replicas and any(
            t.node_id == node_id and t.state == "running" and t.desired_state == "running"
            for t in tasks
        ):
            return
        if not replicas and all(t.state in TASK_ENDED for t in tasks):
            return
        if time.monotonic() > deadline:
            states = ", ".join(sorted({t.state for t in tasks})) or "no task"
            what = "run" if replicas else "stop"
            raise DockerError(f"{service} did not {what} in {timeout:.0f} s ({states})")
        time.sleep(0.5)
