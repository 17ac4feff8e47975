"""The program both ends of a volume copy run (`team/transfer.py`), for real, as two
processes on this machine's loopback: what it copies, and what it refuses (a peer
without the key, a stream changed on the way, a target that is not empty)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencode_cloud.team.transfer import NOT_EMPTY_EXIT, TRANSFER_PROGRAM, WRITTEN_EXIT

VOLUMES = ("vol-a", "vol-b")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    """A receiver a failed test left waiting is ended with it."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
        process.communicate()


def run(key: Path, role: str, port: int, root: Path, peer: str = "-") -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-I", "-c", TRANSFER_PROGRAM, str(key), role, str(port), str(root),
         peer, *VOLUMES],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    STARTED.append(process)
    return process


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    (root / "vol-a" / "sub").mkdir(parents=True)
    (root / "vol-b").mkdir()
    (root / "vol-a" / "sub" / "notes.md").write_text("kept\n")
    (root / "vol-a" / "sub").chmod(0o750)
    (root / "vol-a" / "run.sh").write_text("#!/bin/sh\necho never run\n")
    (root / "vol-a" / "run.sh").chmod(0o4755)
    # A link out of the volume is copied as a link, never followed.
    (root / "vol-a" / "passwd").symlink_to("/etc/passwd")
    (root / "vol-b" / "big").write_bytes(os.urandom(3 * 2**20 + 17))
    return root


def connect(port: int) -> socket.socket:
    """A connection to the receiver, once it listens."""
    for _ in range(100):
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def target(tmp_path: Path) -> Path:
    root = tmp_path / "target"
    for volume in VOLUMES:
        (root / volume).mkdir(parents=True)
    return root


def key(tmp_path: Path, name: str = "key") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(32))
    return path


def test_a_copy_keeps_files_modes_and_links(tmp_path: Path, source: Path) -> None:
    port, secret, to = free_port(), key(tmp_path), target(tmp_path)
    receiver = run(secret, "receive", port, to)
    sender = run(secret, "send", port, source, "127.0.0.1")
    assert sender.wait(60) == 0, sender.communicate()
    assert receiver.wait(60) == 0, receiver.communicate()
    assert (to / "vol-a" / "sub" / "notes.md").read_text() == "kept\n"
    assert (to / "vol-b" / "big").read_bytes() == (source / "vol-b" / "big").read_bytes()
    assert (to / "vol-a" / "sub").stat().st_mode & 0o7777 == 0o750
    assert (to / "vol-a" / "run.sh").stat().st_mode & 0o7777 == 0o4755
    assert os.readlink(to / "vol-a" / "passwd") == "/etc/passwd"
    assert (to / "vol-a" / "passwd").is_symlink()


def test_a_sender_without_the_key_is_refused_and_the_real_one_still_copies(
    tmp_path: Path, source: Path
) -> None:
    port, secret, to = free_port(), key(tmp_path), target(tmp_path)
    receiver = run(secret, "receive", port, to)
    intruder = run(key(tmp_path, "other"), "send", port, source, "127.0.0.1")
    assert intruder.wait(60) != 0  # the receiver hung up on it
    assert list((to / "vol-a").iterdir()) == []
    sender = run(secret, "send", port, source, "127.0.0.1")
    assert sender.wait(60) == 0
    assert receiver.wait(60) == 0
    assert (to / "vol-a" / "sub" / "notes.md").read_text() == "kept\n"


def test_a_stream_changed_on_the_way_is_refused_before_tar_sees_it(
    tmp_path: Path, source: Path
) -> None:
    """A relay between the two flips one byte of the data (after the handshake)."""
    port, relay_port, secret, to = free_port(), free_port(), key(tmp_path), target(tmp_path)
    receiver = run(secret, "receive", port, to)
    listener = socket.create_server(("127.0.0.1", relay_port))

    def relay() -> None:
        inbound, _ = listener.accept()
        outbound = connect(port)
        seen = 0

        def back() -> None:
            with contextlib.suppress(OSError):
                while data := outbound.recv(65536):
                    inbound.sendall(data)

        threading.Thread(target=back, daemon=True).start()
        with contextlib.suppress(OSError):  # the receiver hangs up first
            while data := inbound.recv(65536):
                if seen <= 200 < seen + len(data):  # inside the first chunk's data
                    at = 200 - seen
                    data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
                seen += len(data)
                outbound.sendall(data)

    threading.Thread(target=relay, daemon=True).start()
    sender = run(secret, "send", relay_port, source, "127.0.0.1")
    assert receiver.wait(60) == WRITTEN_EXIT  # what the target holds is the copy's
    assert sender.wait(60) != 0
    listener.close()
    assert "cut short or altered" in receiver.communicate()[1]
    assert list((to / "vol-b").iterdir()) == []


def test_a_target_that_is_not_empty_is_left_alone(tmp_path: Path) -> None:
    to = target(tmp_path)
    (to / "vol-b" / "old").write_text("someone's\n")
    receiver = run(key(tmp_path), "receive", free_port(), to)
    assert receiver.wait(60) == NOT_EMPTY_EXIT
    assert "vol-b is not empty" in receiver.communicate()[1]
    assert (to / "vol-b" / "old").read_text() == "someone's\n"


def test_someone_who_connects_first_and_says_nothing_does_not_hold_up_the_sender(
    tmp_path: Path, source: Path
) -> None:
    """Anyone on the overlay can open a connection to the receiver and stay silent; the
    sender, connecting just after, still copies at once."""
    port, secret, to = free_port(), key(tmp_path), target(tmp_path)
    receiver = run(secret, "receive", port, to)
    silent = [connect(port) for _ in range(3)]
    sender = run(secret, "send", port, source, "127.0.0.1")
    try:
        assert sender.wait(30) == 0, sender.communicate()
        assert receiver.wait(30) == 0, receiver.communicate()
    finally:
        for conn in silent:
            conn.close()
    assert (to / "vol-a" / "sub" / "notes.md").read_text() == "kept\n"


def send_as(
    port: int, secret: bytes, stream: bytes, seqs: tuple[int, ...] = (0,), end: bool = True
) -> bytes:
    """Be the sender (with the key, as a hostile source node would be): send `stream` as
    the tar, once as each chunk number of `seqs`, then (with `end`) the stream's end; what
    the receiver answers."""
    import hashlib
    import hmac
    import struct

    def mac(*parts: bytes) -> bytes:
        return hmac.new(secret, b"".join(parts), hashlib.sha256).digest()

    def read(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            piece = conn.recv(size - len(data))
            assert piece, "the receiver hung up"
            data += piece
        return data

    with connect(port) as conn:
        mine, theirs = read(conn, 32), os.urandom(32)
        conn.sendall(theirs + mac(b"sender", mine, theirs))
        assert read(conn, 32) == mac(b"receiver", theirs, mine)
        for seq in seqs:
            head = struct.pack(">QI", seq, len(stream))
            conn.sendall(head + stream + mac(mine, theirs, head, stream))
        if not end:
            conn.shutdown(socket.SHUT_WR)  # the sender stops half-way
            return read(conn, 2)
        head = struct.pack(">QI", len(seqs), 0)
        whole = hashlib.sha256(stream * len(seqs)).digest()
        conn.sendall(head + whole + mac(mine, theirs, head, whole))
        return read(conn, 2)


@pytest.mark.parametrize(
    "members",
    [
        [("vol-a/../../escaped", "file", "")],
        [("vol-a/out", "symlink", "{outside}"), ("vol-a/out/escaped", "file", "")],
        [("vol-a/up", "symlink", "../.."), ("vol-a/up/escaped", "file", "")],
        [("vol-a/link", "hardlink", "{outside}/victim"), ("vol-a/link", "file", "")],
    ],
)
def test_a_stream_with_the_key_still_writes_nothing_outside_the_volumes(
    tmp_path: Path, members: list[tuple[str, str, str]]
) -> None:
    """Names with `..`, and writes through links the stream made, are tar's to refuse."""
    import io
    import tarfile

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("mine\n")
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type = {"file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}.get(
                kind, tarfile.LNKTYPE
            )
            info.linkname = link.format(outside=outside)
            data = b"written\n" if kind == "file" else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    port, secret, to = free_port(), os.urandom(32), target(tmp_path / "in")
    (tmp_path / "key").write_bytes(secret)
    receiver = run(tmp_path / "key", "receive", port, to)
    assert send_as(port, secret, stream.getvalue()) == b"NO"
    assert receiver.wait(60) == WRITTEN_EXIT
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "mine\n"
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "in" / "escaped").exists()


@pytest.mark.parametrize(
    ("seqs", "end"),
    [((0,), False), ((0, 0), True), ((1, 0), True)],
    ids=["stops half-way", "a chunk replayed", "chunks reordered"],
)
def test_a_stream_cut_short_replayed_or_reordered_is_refused(
    tmp_path: Path, source: Path, seqs: tuple[int, ...], end: bool
) -> None:
    """Even from a sender with the key: the receiver fails (its target holds only what it
    wrote, which occ deletes) and says NO."""
    import io
    import tarfile

    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(source / "vol-a" / "sub", arcname="vol-a/sub")
    data = stream.getvalue()  # a whole archive: only the framing is wrong
    port, secret, to = free_port(), os.urandom(32), target(tmp_path)
    (tmp_path / "key").write_bytes(secret)
    receiver = run(tmp_path / "key", "receive", port, to)
    assert send_as(port, secret, data, seqs, end) == b"NO"
    assert receiver.wait(60) == WRITTEN_EXIT
