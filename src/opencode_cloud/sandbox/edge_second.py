"""The second step of a sign-in: pending sign-ins and the factors that end them (for a
person of team mode, or the single user: edge_single.py).

When a person's password proves right on the login form and they have a second factor,
the edge makes no session. It makes a pending sign-in instead: a random token in a cookie
(`occ_second_PORT`, Path=/__occ/, SameSite=Strict, HttpOnly) of which the database keeps
only the SHA-256 digest, bound to the person and the generation of their password, for
`PENDING_SECONDS`, and used once. The page `/__occ/second` then asks for a proof of each
factor the person has (a code of their authenticator app, or one of their recovery codes);
a right one ends the pending sign-in and makes the session. A wrong one counts in the
guessing limits like a wrong password (the edge's `Guard.attempt_step`), and after
`MAX_PENDING_FAILURES` of them the pending sign-in is void: the password is asked again.
A new password, disabling or removing the person voids it too (its generation is gone).
The guessing limits forget a failure after their window, so a factor that can be guessed
(six digits) also counts the wrong proofs of each person in a row: past `MAX_GUESSES` it
refuses every proof, the right one too, until another factor (a recovery code) proves
right or the person is given a new one (`forget_guesses`).

A factor is an object with
- `key`: the value of the `factor` field its form posts (letters and `-`);
- `guessable`: whether its proofs are few enough to guess (then bounded by `MAX_GUESSES`);
- `enrolled(db, name)`: whether `name` has it;
- `fields()`: the HTML of its form's own fields and button (`page` wraps them in a form
  posting to `SECOND_PATH` with `factor`, `csrf` and `next`);
- `check(db, name, form, now)`: whether the form's fields prove it, consuming what they
  used (a code's time step, a recovery code) in the same transaction: nothing proves twice.
`SecondStep` takes a list of them. A factor whose proof is checked elsewhere (a passkey,
edge_passkeys.SecondFactor, whose counter is noted in a transaction of its own) says no in
`check`, and the caller hands `prove` its verdict. Its tables are created with
`CREATE TABLE IF NOT EXISTS` in the people's database (in single user mode, a database of
the same layout whose pending sign-ins are checked against the password's generation now,
`generation_now`).

Recovery codes are made with a person's first factor (`new_recovery_codes`): each is 80
random bits, kept as its SHA-256 digest, and works once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import re
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from typing import Protocol

SECOND_PATH = "/__occ/second"
PENDING_SECONDS = 300
MAX_PENDING_FAILURES = 5  # wrong proofs before a pending sign-in is void
MAX_PENDING_PER_PERSON = 20  # the newest are kept
MAX_FIELD = 256  # a factor's field longer than this is refused unread
RECOVERY_CODES = 10
# Wrong proofs of a guessable factor in a row, per person, before it refuses all: one in
# about 3,300 to guess a six-digit code (three steps are taken) within them.
MAX_GUESSES = 100
_FACTOR_KEY = re.compile(r"[a-z-]{1,32}")
_RECOVERY = re.compile(r"[a-z2-7]{16}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS second_pending (
    token TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    generation TEXT NOT NULL,
    expires INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS second_pending_by_name ON second_pending (name);
CREATE TABLE IF NOT EXISTS second_guesses (
    name TEXT PRIMARY KEY,
    wrong INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS recovery_codes (
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (name, digest)
);
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Factor(Protocol):
    key: str
    guessable: bool

    def enrolled(self, db: sqlite3.Connection, name: str) -> bool: ...

    def fields(self) -> str: ...

    def check(
        self, db: sqlite3.Connection, name: str, form: dict[str, str], now: float
    ) -> bool: ...


# --------------------------------------------------------------------------- recovery codes


def new_recovery_codes(db: sqlite3.Connection, name: str) -> list[str]:
    """Replace `name`'s recovery codes with `RECOVERY_CODES` new ones; the codes, shown
    once (only their digests are kept)."""
    codes = []
    db.execute("DELETE FROM recovery_codes WHERE name = ?", (name,))
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
        db.execute("INSERT INTO recovery_codes VALUES (?, ?)", (name, _digest(raw)))
        codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
    return codes


def recovery_codes_left(db: sqlite3.Connection, name: str) -> int:
    rows = db.execute("SELECT count(*) FROM recovery_codes WHERE name = ?", (name,))
    return int(rows.fetchone()[0])


class RecoveryCode:
    """One of the person's recovery codes, each good once: for a lost phone."""

    key = "recovery"
    guessable = False  # 80 random bits

    def enrolled(self, db: sqlite3.Connection, name: str) -> bool:
        return recovery_codes_left(db, name) > 0

    def fields(self) -> str:
        return (
            '<label for="recovery">Or a recovery code</label>\n'
            '<input id="recovery" name="code" autocomplete="off" spellcheck="false"\n'
            ' maxlength="64" required>\n'
            '<button type="submit">Use a recovery code</button>'
        )

    def check(self, db: sqlite3.Connection, name: str, form: dict[str, str], now: float) -> bool:
        typed = re.sub(r"[\s-]", "", form.get("code", "")).lower()
        if not _RECOVERY.fullmatch(typed):
            return False
        used = db.execute(
            "DELETE FROM recovery_codes WHERE name = ? AND digest = ?", (name, _digest(typed))
        )
        return used.rowcount == 1


# --------------------------------------------------------------------------- the step


class SecondStep:
    """Pending sign-ins and the factors that end them, in the people's database.

    `transaction` opens one write transaction on it (the edge's `People._transaction`),
    `reading` the connection for reads (asked on every Basic request), `clock` gives the
    time (a fake one in tests)."""

    def __init__(
        self,
        transaction: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]],
        reading: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]],
        clock: Callable[[], float],
        factors: Sequence[Factor],
        generation_now: Callable[[str], str] | None = None,
    ) -> None:
        self._db = transaction
        self._reading = reading
        self.clock = clock
        self.factors = list(factors)
        # Single-user mode has no people table: the generation of its password now.
        self._generation_now = generation_now

    def enrolled(self, name: str) -> list[Factor]:
        """The factors `name` has (none: their password alone signs them in)."""
        with self._reading() as db:
            return [f for f in self.factors if f.enrolled(db, name)]

    def begin(self, name: str, generation: str) -> str:
        """A pending sign-in of `name` whose password (of `generation`) proved right: its
        token, for the browser's cookie."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._db() as db:
            db.execute("DELETE FROM second_pending WHERE expires <= ?", (int(now),))
            db.execute(
                "DELETE FROM second_pending WHERE name = ? AND token NOT IN (SELECT token FROM "
                "second_pending WHERE name = ? ORDER BY expires DESC LIMIT ?)",
                (name, name, MAX_PENDING_PER_PERSON - 1),
            )
            db.execute(
                "INSERT INTO second_pending VALUES (?, ?, ?, ?, 0)",
                (_digest(token), name, generation, int(now + PENDING_SECONDS)),
            )
        return token

    def _live(self, db: sqlite3.Connection, token: str, now: float) -> tuple[str, str] | None:
        if self._generation_now is not None:
            rows = db.execute(
                "SELECT name, generation FROM second_pending "
                "WHERE token = ? AND expires > ? AND failures < ?",
                (_digest(token), int(now), MAX_PENDING_FAILURES),
            ).fetchall()
            if rows and rows[0][1] == self._generation_now(rows[0][0]):
                return rows[0][0], rows[0][1]
            return None
        rows = db.execute(
            "SELECT s.name, s.generation FROM second_pending s JOIN people p ON p.name = s.name "
            "WHERE s.token = ? AND s.expires > ? AND s.failures < ? "
            "AND s.generation = p.generation AND p.disabled = 0",
            (_digest(token), int(now), MAX_PENDING_FAILURES),
        ).fetchall()
        return (rows[0][0], rows[0][1]) if rows else None

    def pending(self, token: str) -> tuple[str, list[Factor]] | None:
        """The person a live pending sign-in is of, and their factors; None for any other
        token."""
        with self._reading() as db:
            found = self._live(db, token, self.clock())
            if found is None:
                return None
            return found[0], [f for f in self.factors if f.enrolled(db, found[0])]

    def prove(
        self, token: str, form: dict[str, str], verified: bool | None = None
    ) -> tuple[str, str, str, str] | None:
        """Check the form against the pending sign-in of `token`: None when there is no
        such live sign-in; else its outcome (`ok`, `wrong`, `blocked` when the factor
        refuses every proof of this person (`MAX_GUESSES`), or `void` when that wrong
        proof was the pending sign-in's last), the person, the generation and the
        factor's key. A right proof ends the pending sign-in (one session per password
        typed); a wrong one counts in it. `verified`: the caller's own
        check of the proof, made before this transaction (a passkey's), instead of the
        factor's `check`."""
        key = form.get("factor", "")
        with self._db() as db:
            now = self.clock()
            found = self._live(db, token, now)
            if found is None:
                return None
            name, generation = found
            factor = next((f for f in self.factors if f.key == key), None)
            fields_ok = verified is not None or all(len(v) <= MAX_FIELD for v in form.values())
            guessed = factor is not None and factor.guessable
            rows = db.execute("SELECT wrong FROM second_guesses WHERE name = ?", (name,))
            blocked = guessed and (rows.fetchone() or (0,))[0] >= MAX_GUESSES
            ok = (
                bool(_FACTOR_KEY.fullmatch(key))
                and not blocked
                and factor is not None
                and fields_ok
                and factor.enrolled(db, name)
                and (factor.check(db, name, form, now) if verified is None else verified)
            )
            digest = _digest(token)
            if ok:
                forget_guesses(db, name)
                db.execute("DELETE FROM second_pending WHERE token = ?", (digest,))
                return "ok", name, generation, key
            if blocked:  # no guess: the pending sign-in stays for a recovery code
                return "blocked", name, generation, key
            if guessed:
                db.execute(
                    "INSERT INTO second_guesses VALUES (?, 1) "
                    "ON CONFLICT (name) DO UPDATE SET wrong = wrong + 1",
                    (name,),
                )
            db.execute(
                "UPDATE second_pending SET failures = failures + 1 WHERE token = ?", (digest,)
            )
            failures = db.execute(
                "SELECT failures FROM second_pending WHERE token = ?", (digest,)
            ).fetchone()[0]
            if failures >= MAX_PENDING_FAILURES:
                db.execute("DELETE FROM second_pending WHERE token = ?", (digest,))
                return "void", name, generation, key if factor else ""
            return "wrong", name, generation, key if factor else ""

    def end(self, token: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM second_pending WHERE token = ?", (_digest(token),))


def forget_guesses(db: sqlite3.Connection, name: str) -> None:
    """`name`'s wrong proofs in a row: none (a right proof, or a new factor)."""
    db.execute("DELETE FROM second_guesses WHERE name = ?", (name,))


def forget(db: sqlite3.Connection, name: str) -> None:
    """Everything of this module's about `name` (who is removed)."""
    db.execute("DELETE FROM second_pending WHERE name = ?", (name,))
    db.execute("DELETE FROM recovery_codes WHERE name = ?", (name,))
    forget_guesses(db, name)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Second step - opencode-cloud</title>
{style}</head><body><main>
<h1>opencode</h1>
{message}
{forms}
</main></body></html>
"""


def page(style: str, message: str, factors: Sequence[Factor], csrf: str, target: str) -> str:
    """The second step's page: a form for each of the person's factors, in the order of
    `SecondStep.factors`."""
    hidden = (
        f'<input type="hidden" name="csrf" value="{html.escape(csrf, quote=True)}">\n'
        f'<input type="hidden" name="next" value="{html.escape(target, quote=True)}">\n'
    )
    forms = "\n".join(
        f'<form method="post" action="{SECOND_PATH}">\n'
        f'<input type="hidden" name="factor" value="{html.escape(f.key, quote=True)}">\n'
        f"{hidden}{f.fields()}\n</form>"
        for f in factors
    )
    shown = f'<p class="msg">{html.escape(message)}</p>' if message else ""
    return PAGE.format(style=style, message=shown, forms=forms)
