"""People's passkeys, as the front door keeps them (docs/team.md): who has which, a reset
for a lost device, and the host name passkeys are made for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opencode_cloud.team.team import Team


def listing(team: Team, name: str) -> list[dict[str, Any]]:
    """`name`'s passkeys: each one's ID, label and times (`created`, `last_used`, Unix
    seconds). No key: the door keeps public keys only."""
    team.require(name)
    answer = team.admin({"op": "passkeys", "name": name})
    return list(answer.get("passkeys") or [])


def reset(team: Team, name: str) -> int:
    """Forget all of `name`'s passkeys (a lost or stolen device): they sign in with their
    password again, and can add new passkeys. How many were removed."""
    team.require(name)
    answer = team.admin({"op": "passkey-reset", "name": name})
    return int(answer.get("removed") or 0)


def host(team: Team, change: bool = False, value: str | None = None) -> str | None:
    """The host name passkeys are made for (their relying party ID); with `change`, set it
    to `value` first (None: whatever host each browser asks for)."""
    request: dict[str, Any] = {"op": "passkey-host"}
    if change:
        request["host"] = value
    answer = team.admin(request)
    found = answer.get("host")
    return found if isinstance(found, str) else None
