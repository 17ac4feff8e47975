"""Add, list and remove provider keys in opencode's own auth store, through its API.

Every change is asked of the running opencode from inside its container
(`Service.call_inside`): the key travels in a request body written into the edge's own
folder, never on a command line, in an environment or a log. opencode keeps it in its
auth store (`opencode.AUTH_FILE`, 0600 in the data volume), so it survives re-creation,
updates and restarts like its sessions do. A custom OpenAI-compatible provider is also an
entry of opencode's global configuration (its base URL and models, no key): opencode
hands the stored key to it as its API key.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opencode_cloud.opencode import (
    AUTH_FILE,
    AUTH_PATH,
    CUSTOM_PROVIDER_PACKAGE,
    DISPOSE_PATH,
    GLOBAL_CONFIG_FILES,
    GLOBAL_CONFIG_PATH,
    KNOWN_PROVIDERS,
    api_key_auth,
    custom_provider,
)
from opencode_cloud.providers.errors import (
    BadProviderInput,
    ProviderNotSet,
    ProviderStoreFailed,
    UnknownProvider,
)

if TYPE_CHECKING:
    from opencode_cloud.service.service import Service

PROVIDER_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# A model id as the provider's API names it (`meta-llama/Llama-3.3-70B` has a slash).
MODEL_ID = re.compile(r"\S{1,200}")
MAX_KEY_LENGTH = 8192


@dataclass(frozen=True)
class ProviderEntry:
    """A provider as `occ provider list` shows it: never its key."""

    id: str
    # How opencode holds its credentials: `api` (a key), `oauth`, ...; None: a custom
    # provider in the configuration without a stored key.
    auth: str | None
    base_url: str | None = None
    models: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = list(self.models)
        return data


def known_providers() -> tuple[str, ...]:
    return tuple(sorted(KNOWN_PROVIDERS))


def check_provider(
    provider_id: str, *, base_url: str | None = None, models: tuple[str, ...] = ()
) -> None:
    """Refuse a provider that cannot be stored, before anything changes.

    Raises:
        UnknownProvider: not a built-in name, and no base URL.
        BadProviderInput: a malformed name, base URL or model.
    """
    if not PROVIDER_ID.fullmatch(provider_id):
        raise BadProviderInput(
            "provider name", f"{provider_id!r} is not lower case letters, digits, '.', '-', '_'"
        )
    if base_url is None:
        if models:
            raise BadProviderInput("models", "only a custom provider (with --base-url) lists them")
        if provider_id not in KNOWN_PROVIDERS:
            raise UnknownProvider(provider_id, known_providers())
        return
    if provider_id in KNOWN_PROVIDERS:
        raise BadProviderInput(
            "provider name", f"{provider_id!r} is built in; give a custom provider its own name"
        )
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadProviderInput("base URL", f"{base_url!r} is not an http:// or https:// URL")
    if not models:
        raise BadProviderInput("models", "a custom provider needs at least one --model")
    for model in models:
        if not MODEL_ID.fullmatch(model):
            raise BadProviderInput("model", f"{model!r} is empty or has spaces")


def check_key(key: str) -> str:
    """The key without the line end a file or a terminal adds.

    Raises:
        BadProviderInput: empty, too long, or more than one line.
    """
    key = key.strip()
    if not key:
        raise BadProviderInput("key", "it is empty")
    if len(key) > MAX_KEY_LENGTH or any(c.isspace() for c in key):
        raise BadProviderInput("key", "it must be one line without spaces")
    return key


def add_provider(
    service: Service,
    provider_id: str,
    key: str,
    *,
    base_url: str | None = None,
    models: tuple[str, ...] | list[str] = (),
) -> ProviderEntry:
    """Store `key` for `provider_id` in opencode's auth store (replacing one stored before);
    with `base_url`, make it a custom OpenAI-compatible provider with `models`. opencode
    uses it from the next prompt on.

    Raises:
        UnknownProvider, BadProviderInput: nothing changed.
        NeverCreated, NotRunning: the service does not run.
        ProviderStoreFailed: opencode refused.
    """
    models = tuple(models)
    check_provider(provider_id, base_url=base_url, models=models)
    key = check_key(key)
    _ask(service, "PUT", f"{AUTH_PATH}/{provider_id}", "store", provider_id, api_key_auth(key), key)
    if base_url is not None:
        config = {"provider": {provider_id: custom_provider(base_url, models, provider_id)}}
        body = json.dumps(config).encode()
        _ask(service, "PATCH", GLOBAL_CONFIG_PATH, "configure", provider_id, body)
    _ask(service, "POST", DISPOSE_PATH, "reload", provider_id)
    return ProviderEntry(provider_id, "api", base_url, models)


def list_providers(service: Service) -> list[ProviderEntry]:
    """The providers with stored credentials, and the custom ones opencode's global
    configuration defines (with their base URL and models); never a key.

    Raises:
        NeverCreated, NotRunning.
    """
    custom = _custom_providers(service)
    stored = _stored(service)
    entries = [
        ProviderEntry(pid, kind, *custom.get(pid, (None, ()))) for pid, kind in stored.items()
    ]
    entries += [ProviderEntry(pid, None, *got) for pid, got in custom.items() if pid not in stored]
    return sorted(entries, key=lambda entry: entry.id)


def remove_provider(service: Service, provider_id: str) -> ProviderEntry:
    """Remove the stored key of `provider_id`, and a custom provider's entry (base URL and
    models) from opencode's global configuration files: opencode reads those once, when
    it starts, so it offers that provider until it restarts (without its key).

    Raises:
        ProviderNotSet: neither a key nor a custom entry is there (nothing changed).
        NeverCreated, NotRunning, ProviderStoreFailed.
    """
    stored = _stored(service)
    base_url, models = _custom_providers(service).get(provider_id, (None, ()))
    if provider_id not in stored and base_url is None:
        raise ProviderNotSet(provider_id, tuple(sorted(stored)))
    try:
        if provider_id in stored:
            _ask(service, "DELETE", f"{AUTH_PATH}/{provider_id}", "remove", provider_id)
        kept = _unconfigure(service, provider_id) if base_url is not None else ""
    except ProviderStoreFailed:
        # What was removed already is let go of at once all the same.
        with contextlib.suppress(ProviderStoreFailed):
            _ask(service, "POST", DISPOSE_PATH, "reload", provider_id)
        raise
    _ask(service, "POST", DISPOSE_PATH, "reload", provider_id)
    if kept:
        raise ProviderStoreFailed(
            "unconfigure", provider_id, f"{kept} is not plain JSON: take it out there"
        )
    return ProviderEntry(provider_id, stored.get(provider_id), base_url, models)


# Run as the runtime user in the container, with the provider id and the files as its
# arguments: the provider's entry taken out of each configuration file that has one.
# A file that is not plain JSON (comments) is left as it is, and named.
UNCONFIGURE_PROGRAM = r"""
import json, os, sys
provider, files, kept = sys.argv[1], sys.argv[2:], []
for path in files:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        continue
    except ValueError:
        kept.append(path)
        continue
    if not isinstance(data, dict) or provider not in (data.get("provider") or {}):
        continue
    del data["provider"][provider]
    temporary = path + ".occ-tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.chmod(temporary, os.stat(path).st_mode & 0o777)
    os.replace(temporary, path)
print(" ".join(kept))
"""


def _unconfigure(service: Service, provider_id: str) -> str:
    """Take a custom provider out of opencode's configuration files; the files it had to
    leave as they were (not plain JSON), if any."""
    output, exit_code = service.run_command(
        ["python3", "-c", UNCONFIGURE_PROGRAM, provider_id, *GLOBAL_CONFIG_FILES]
    )
    said = b"".join(output).decode(errors="replace").strip()
    if exit_code() != 0:
        raise ProviderStoreFailed("unconfigure", provider_id, said[-300:] or "no answer")
    return said


def _ask(
    service: Service,
    method: str,
    path: str,
    action: str,
    provider_id: str,
    body: bytes | None = None,
    secret: str | None = None,
) -> bytes:
    status, answer = service.call_inside(method, path, body)
    if status != 200:
        said = answer.decode(errors="replace").strip()[:300] or "no answer"
        if secret:
            said = said.replace(secret, "***")
        raise ProviderStoreFailed(action, provider_id, f"HTTP {status or '-'}: {said}")
    return answer


def _stored(service: Service) -> dict[str, str]:
    """The provider ids in opencode's auth store and how each is held (`api`, `oauth`);
    the keys are read and dropped here."""
    service.shell_target()
    raw = service.read_file(AUTH_FILE)
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(pid): str(entry.get("type", "?")) if isinstance(entry, dict) else "?"
        for pid, entry in data.items()
    }


def _custom_providers(service: Service) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """The OpenAI-compatible providers of opencode's global configuration: their base URL
    and models."""
    status, answer = service.call_inside("GET", GLOBAL_CONFIG_PATH)
    try:
        config = json.loads(answer) if status == 200 else {}
    except ValueError:
        config = {}
    found: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    providers = config.get("provider") if isinstance(config, dict) else None
    for pid, entry in (providers or {}).items():
        if isinstance(entry, dict) and entry.get("npm") == CUSTOM_PROVIDER_PACKAGE:
            options = entry.get("options") or {}
            base_url = options.get("baseURL") if isinstance(options, dict) else None
            models = tuple(sorted(entry.get("models") or {}))
            found[str(pid)] = (str(base_url) if base_url else None, models)
    return found
