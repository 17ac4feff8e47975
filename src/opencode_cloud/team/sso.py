"""Single sign-on with OpenID Connect for a team (docs/team.md, "Single sign-on").

The settings and the client secret live in the door's records, beside the people: the tool
sends them through `door.admin` (a file written through the engine's archive API, never
argv or the environment), and the door's login service (sandbox/edge_oidc.py) reads them
at each sign-in. People the door made at their first sign-in get their instance from the
starter, from the template `Team.start` hands it (sandbox/starter.py), or from `sync`, the
admin's explicit way (for one whose volumes are left from before, say).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opencode_cloud.team.errors import SsoSettingsError

if TYPE_CHECKING:
    from opencode_cloud.team.team import Team

CALLBACK_PATH = "/__occ/oidc/callback"
MAX_SECRET_BYTES = 1024


@dataclass(frozen=True)
class SsoSettings:
    issuer: str
    client_id: str
    provider_name: str = "single sign-on"
    allowed_emails: list[str] = field(default_factory=list)
    allowed_domains: list[str] = field(default_factory=list)
    allowed_groups: list[str] = field(default_factory=list)
    create_people: bool = False
    sso_only: bool = False
    allow_http: bool = False

    def check(self) -> None:
        """Raises SsoSettingsError: an issuer that is not https (or http on a loopback or
        private address with allow_http), or nobody allowed."""
        parts = urlsplit(self.issuer)
        if parts.scheme == "http" and self.allow_http:
            try:
                private = ipaddress.ip_address(parts.hostname or "").is_private
            except ValueError:
                private = False
            if not private:
                raise SsoSettingsError(
                    f"--allow-http takes an issuer on a loopback or private address, not "
                    f"{self.issuer}"
                )
        elif parts.scheme != "https" or not parts.hostname:
            raise SsoSettingsError(f"the issuer must be an https:// URL, not {self.issuer!r}")
        if not (self.allowed_emails or self.allowed_domains or self.allowed_groups):
            raise SsoSettingsError(
                "nobody is allowed: give --allow-email, --allow-domain or --allow-group"
            )


def read_secret(path: Path) -> str:
    """The client secret: the first line of `path`.

    Raises:
        SsoSettingsError: unreadable, empty, more than one line or too long.
    """
    try:
        data = path.read_bytes()[: MAX_SECRET_BYTES + 2]
    except OSError as exc:
        raise SsoSettingsError(
            f"cannot read the client secret file {path}: {exc.strerror}"
        ) from None
    text = data.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")
    if not text or len(text) > MAX_SECRET_BYTES or not text.isprintable():
        raise SsoSettingsError(
            f"{path} must hold the client secret on one line (1 to {MAX_SECRET_BYTES} characters)"
        )
    return text


def redirect_uri(team: Team) -> str:
    """What the provider must allow as the client's redirect URI."""
    return team.url + CALLBACK_PATH


def set_up(team: Team, settings: SsoSettings, secret: str) -> dict[str, Any]:
    """Send the settings and the secret to the door; what it keeps (never the secret)."""
    settings.check()
    request = {"op": "oidc-set", **settings.__dict__, "client_secret": secret}
    return dict(team.admin(request).get("settings") or {})


def show(team: Team) -> dict[str, Any]:
    """The settings (never the secret) and who is linked to the provider."""
    answer = team.admin({"op": "oidc-show"})
    return {"settings": answer.get("settings"), "links": answer.get("links") or []}


def turn_off(team: Team) -> None:
    team.admin({"op": "oidc-off"})


@dataclass(frozen=True)
class SyncResult:
    made: list[str]  # people whose instance was made now
    refused: list[str]  # people whose name has a removed person's volumes: none made


def sync(team: Team) -> SyncResult:
    """An instance for everyone the door knows who has none (people made by their first
    sign-in). Never on volumes someone left (`occ user remove` without `--volumes`): the
    name of a person made at sign-in is the provider's user name, and their files would
    be another's."""
    from opencode_cloud.team.people import INTERNAL_PASSWORD_BYTES

    made, refused = [], []
    records = team.admin({"op": "list"}).get("people") or []
    for person in sorted(str(record["name"]) for record in records):
        if team.placement.has_instance(person):
            continue
        if team.placement.volumes_left(person):
            refused.append(person)
            continue
        internal = secrets.token_hex(INTERNAL_PASSWORD_BYTES)
        upstream = team.placement.add_person(person, team._limits(None, None), internal)
        team.admin(
            {
                "op": "oidc-instance",
                "name": person,
                "internal_password": internal,
                "upstream": upstream,
            },
        )
        made.append(person)
    return SyncResult(made, refused)
