"""TOTP (the six-digit codes of an authenticator app, RFC 6238) as a second factor.

`enrol` gives a person a new seed (160 random bits) and new recovery codes, replacing
what they had; the admin tool shows them once (`occ user totp NAME`). The seed is kept in
the people's database (0600, the edge's user) in clear: a code is computed from it. It
never leaves the door but in the answer to that admin request.

A code is checked against the time steps of 30 seconds now, one before and one after
(clock skew), and is taken only for a step later than the last one the person used: a
code used once (seen over a shoulder, or sent twice) is refused, and so is any code of an
earlier step. An enrolment is `pending` until its first code is proven, then `on`; it is
required from the start either way (a window in which the password alone signs in would
be no second factor).
"""

from __future__ import annotations

import hmac
import re
import sqlite3

import edge_second  # type: ignore[import-not-found]  # beside this file

STEP_SECONDS = 30
SKEW_STEPS = 1
_CODE = re.compile(r"[0-9]{6}")
_ISSUER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS totp (
    name TEXT PRIMARY KEY,
    seed TEXT NOT NULL,
    last_step INTEGER NOT NULL DEFAULT 0,
    confirmed INTEGER,
    created INTEGER NOT NULL
);
"""


def valid_issuer(value: object) -> bool:
    return isinstance(value, str) and bool(_ISSUER.fullmatch(value))


def enrol(
    db: sqlite3.Connection, name: str, issuer: str, now: float, label: str = ""
) -> dict[str, object]:
    """A new seed and new recovery codes for `name` (in the caller's transaction): the
    seed, its `otpauth://` URI (naming `label`, or else `name`) and the codes."""
    import pyotp  # Debian's python3-pyotp

    seed = pyotp.random_base32(32)
    db.execute("INSERT OR REPLACE INTO totp VALUES (?, ?, 0, NULL, ?)", (name, seed, int(now)))
    codes = edge_second.new_recovery_codes(db, name)
    edge_second.forget_guesses(db, name)
    uri = pyotp.TOTP(seed).provisioning_uri(name=label or name, issuer_name=issuer)
    return {"secret": seed, "uri": uri, "recovery_codes": codes}


def remove(db: sqlite3.Connection, name: str) -> bool:
    """Take `name`'s TOTP and recovery codes away; whether they had TOTP."""
    had = db.execute("DELETE FROM totp WHERE name = ?", (name,)).rowcount > 0
    db.execute("DELETE FROM recovery_codes WHERE name = ?", (name,))
    edge_second.forget_guesses(db, name)
    return had


def states(db: sqlite3.Connection) -> dict[str, str]:
    """Each enrolled person's TOTP: `pending` (no code proven yet) or `on`."""
    rows = db.execute("SELECT name, confirmed FROM totp").fetchall()
    return {name: "pending" if confirmed is None else "on" for name, confirmed in rows}


def code_at(seed: str, step: int) -> str:
    import pyotp  # Debian's python3-pyotp

    return str(pyotp.TOTP(seed).generate_otp(step))


class Totp:
    """The factor: a code of the person's authenticator app."""

    key = "totp"
    guessable = True  # a million codes, three of them taken at a time

    def enrolled(self, db: sqlite3.Connection, name: str) -> bool:
        return bool(db.execute("SELECT 1 FROM totp WHERE name = ?", (name,)).fetchall())

    def fields(self) -> str:
        return (
            '<label for="code">Code from your authenticator app</label>\n'
            '<input id="code" name="code" inputmode="numeric" pattern="[0-9]{6}"\n'
            ' autocomplete="one-time-code" maxlength="6" required autofocus>\n'
            '<button type="submit">Sign in</button>'
        )

    def check(self, db: sqlite3.Connection, name: str, form: dict[str, str], now: float) -> bool:
        typed = form.get("code", "").replace(" ", "")
        rows = db.execute("SELECT seed, last_step FROM totp WHERE name = ?", (name,)).fetchall()
        if not rows or not _CODE.fullmatch(typed):
            return False
        seed, last_step = rows[0]
        current = int(now // STEP_SECONDS)
        found = None
        for step in range(current - SKEW_STEPS, current + SKEW_STEPS + 1):
            # Every step is compared (no early exit): the time does not tell which matched.
            if hmac.compare_digest(code_at(seed, step).encode(), typed.encode()):
                found = step
        if found is None or found <= last_step:
            return False
        db.execute(
            "UPDATE totp SET last_step = ?, confirmed = coalesce(confirmed, ?) WHERE name = ?",
            (found, int(now), name),
        )
        return True
