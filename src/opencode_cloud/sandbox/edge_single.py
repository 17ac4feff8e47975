"""Single-user mode's records: its sessions file, and what an admin asks of it.

Sessions. `sessions.json` in the edge's state directory maps each session's digest to
`expires` and `generation` (what every edge wrote), and, from this version on, `created`,
`address`, `agent` (the browser's User-Agent, printable characters only) and `seen`
(noted at most every `SEEN_EVERY` seconds). An entry without the newer fields is as valid
as before; a newer field of the wrong kind is dropped, not the entry.

The file is changed by two processes: the login service (sign-in, sign-out, seen) and the
admin tool (`edge.py single-admin FILE`, run by the host with `docker exec` as the edge's
user: revocation). Each change is a read, modify and replace under an exclusive `flock`
of `sessions.lock`, so neither loses the other's. The login service looks at the file's
identity (inode, size, modification time) before every answer and reads it again when it
changed: a session revoked from outside is refused from the next request on.

The sign-in log and the second factor (TOTP, recovery codes, pending sign-ins) are kept in
`single.db` of the same directory, in the tables team mode's database has
(`edge.People`), under the user name `OWNER`: the single user's records survive a change
of their user name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SESSIONS_FILE = "sessions.json"
LOCK_FILE = "sessions.lock"
DB_FILE = "single.db"
OWNER = "owner"  # the single user's name in single.db's tables
MAX_STATE_BYTES = 1 << 20  # a sessions file larger than this was not written here
MAX_AGENT = 200  # characters of a browser's User-Agent kept with its session
MAX_ADDRESS = 64
SEEN_EVERY = 10.0  # seconds between two notes of a session's last use
SESSION_ID_LENGTH = 12  # hex digits of a session's digest that name it to an admin
_SESSION_KEY = re.compile(r"[0-9a-f]{64}")
SESSION_CHOICE = re.compile(f"all|[0-9a-f]{{{SESSION_ID_LENGTH}}}")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")  # a user name of the configuration


# --------------------------------------------------------------------------- state files


def read_small_file(path: Path, limit: int) -> bytes | None:
    """A regular file's content, or None when it is missing, not a regular file (a FIFO
    would block), or longer than `limit` bytes (it was not written here)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        content = handle.read(limit + 1)
    return content if len(content) <= limit else None


def write_private_file(path: Path, content: bytes) -> None:
    """Write `content` to `path` (0600, in a 0700 directory) whole or not at all."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.parent.stat().st_mode) & 0o077:
        path.parent.chmod(0o700)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def printable(text: str, limit: int) -> str:
    """`text` without control characters of any kind (a header's Latin-1 has the one-byte
    ones, 0x80-0x9f, too), cut to `limit`: it is printed on an admin's terminal."""
    return "".join(c for c in text.replace("\t", " ") if c.isprintable())[:limit]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def valid_session(key: Any, entry: Any) -> bool:
    if not (isinstance(key, str) and _SESSION_KEY.fullmatch(key) and isinstance(entry, dict)):
        return False
    generation = entry.get("generation")
    return _number(entry.get("expires")) and isinstance(generation, str) and len(generation) <= 64


def _entry(entry: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a valid entry: its required fields and the newer ones that hold
    what they should."""
    kept: dict[str, Any] = {"expires": float(entry["expires"]), "generation": entry["generation"]}
    for key in ("created", "seen"):
        if _number(entry.get(key)):
            kept[key] = int(entry[key])
    for key, limit in (("address", MAX_ADDRESS), ("agent", MAX_AGENT)):
        if isinstance(entry.get(key), str):
            kept[key] = printable(entry[key], limit)
    return kept


def load_sessions(path: Path) -> dict[str, dict[str, Any]]:
    """The sessions in `path`; whatever in that file is not one is left out (a file too
    large, or not JSON, counts as empty)."""
    content = read_small_file(path, MAX_STATE_BYTES)
    if content is None:
        return {}
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: _entry(entry) for key, entry in data.items() if valid_session(key, entry)}


# --------------------------------------------------------------------------- sessions


class Sessions:
    """The sessions of single-user mode, in `sessions.json` of `state_dir` (in memory only
    without one). Not thread-safe: the guard calls it under its own lock."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / SESSIONS_FILE if state_dir else None
        self.entries: dict[str, dict[str, Any]] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.refresh()

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path) if self.path else None
        except OSError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns) if info else None

    def refresh(self) -> None:
        """Read the file again when another process replaced it (or it went away)."""
        if self.path is None:
            return
        stamp = self._identity()
        if stamp != self._stamp or stamp is None:
            self.entries = load_sessions(self.path)
            self._stamp = stamp

    @contextlib.contextmanager
    def changing(self) -> Iterator[dict[str, Any]]:
        """The entries, as they are in the file now, to change; written back after."""
        if self.path is None:
            yield self.entries
            return
        with _locked(self.path.with_name(LOCK_FILE)):
            self._stamp = None  # read it anew: it may have changed within a second
            self.refresh()
            yield self.entries
            try:
                write_private_file(self.path, json.dumps(self.entries).encode())
            except OSError as exc:  # sessions then last until the next restart only
                print(f"edge: cannot save sessions: {exc}", flush=True)
            self._stamp = self._identity()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:  # no lock to be had (a read-only or odd state directory): go on
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def live(entries: dict[str, dict[str, Any]], generation: str, now: float) -> list[tuple[str, Any]]:
    """The (digest, entry) pairs of sessions still good: not expired, of `generation`."""
    return [
        (key, entry)
        for key, entry in entries.items()
        if entry["expires"] > now and entry["generation"] == generation
    ]


def public(entries: dict[str, dict[str, Any]], generation: str, now: float) -> list[dict[str, Any]]:
    """The live sessions, newest first, each under its public id (the start of the digest
    of its token: it names the session, and reveals nothing of the token)."""
    found = live(entries, generation, now)
    found.sort(key=lambda item: (-item[1].get("created", 0), item[0]))
    return [
        {
            "id": key[:SESSION_ID_LENGTH],
            "created": entry.get("created"),
            "expires": int(entry["expires"]),
            "seen": entry.get("seen"),
            "address": entry.get("address", ""),
            "agent": entry.get("agent", ""),
        }
        for key, entry in found
    ]


def revoke(entries: dict[str, dict[str, Any]], which: str) -> int:
    """End the session with the public id `which`, or all (`all`); how many ended."""
    chosen = [key for key in entries if which == "all" or key[:SESSION_ID_LENGTH] == which]
    for key in chosen:
        del entries[key]
    return len(chosen)


# --------------------------------------------------------------------------- admin


class SingleAdminError(Exception):
    """A request of `edge.py single-admin` that is not applied: its message is the answer."""


def apply_admin(
    request: dict[str, Any],
    *,
    sessions: Sessions,
    generation: str,
    records: Any,
    now: float,
    max_lines: int = 10000,
) -> dict[str, Any]:
    """Apply one request of the host (docs/security.md) to single-user mode's records:
    `sessions`; `revoke` (`session`: an id or `all`); `log` (`limit`); `totp` (`issuer`,
    `label`: the user name the authenticator app shows), which ends every session;
    `totp-off`; `totp-state`. `records` is the single user's `edge.People`."""
    import edge_second  # type: ignore[import-not-found]  # beside this file
    import edge_totp  # type: ignore[import-not-found]

    op = request.get("op")
    if op == "sessions":
        return {"ok": True, "sessions": public(sessions.entries, generation, now)}
    if op == "revoke":
        which = request.get("session")
        if not isinstance(which, str) or not SESSION_CHOICE.fullmatch(which):
            raise SingleAdminError("session: a session's id (12 hex digits), or all")
        if which != "all" and not any(
            item["id"] == which for item in public(sessions.entries, generation, now)
        ):
            raise SingleAdminError(f"no such session: {which}")
        with sessions.changing() as entries:
            ended = revoke(entries, which)
        records.log(now, OWNER, "revoked-all" if which == "all" else "revoked", "admin")
        return {"ok": True, "revoked": ended}
    if op == "log":
        limit = request.get("limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= max_lines:
            raise SingleAdminError(f"limit: not a whole number from 1 to {max_lines}")
        return {"ok": True, "log": records.log_lines(None, limit)}
    if op == "totp-state":
        with records._reading() as db:
            state = edge_totp.states(db).get(OWNER)
        return {"ok": True, "totp": state}
    if op == "totp-off":
        with records._transaction() as db:
            edge_second.forget(db, OWNER)
            if not edge_totp.remove(db, OWNER):
                raise SingleAdminError("TOTP is not on")
        records.log(now, OWNER, "totp-off", "admin")
        return {"ok": True, "totp": None}
    if op == "totp":
        issuer, label = request.get("issuer", "opencode-cloud"), request.get("label", OWNER)
        if not edge_totp.valid_issuer(issuer):
            raise SingleAdminError("issuer: letters, digits, spaces and ._- (up to 64)")
        if not (isinstance(label, str) and _LABEL.fullmatch(label)):
            raise SingleAdminError("label: a user name (letters, digits and ._@-, up to 64)")
        with records._transaction() as db:
            edge_second.forget(db, OWNER)
            answer = {
                "ok": True,
                "totp": "pending",
                **edge_totp.enrol(db, OWNER, issuer, now, label),
            }
        # From now on a code is asked: the browsers signed in with the password alone
        # are signed out.
        with sessions.changing() as entries:
            revoke(entries, "all")
        records.log(now, OWNER, "totp-on", "admin")
        return answer
    raise SingleAdminError(f"unknown op: {op!r}"[:200])
