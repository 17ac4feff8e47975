"""Provider keys (`occ provider`): kept in opencode's own auth store, never in the
container's environment, `docker inspect`, its logs or a command line.

The library API (`providers.keys`):

    add_provider(service, provider_id, key, *, base_url=None, models=()) -> ProviderEntry
    list_providers(service) -> list[ProviderEntry]
    remove_provider(service, provider_id) -> ProviderEntry
    check_provider(provider_id, *, base_url=None, models=()) -> None

`service` is a running `service.Service` (a person's in team mode too). A custom
OpenAI-compatible provider is any name with a `base_url` (and its `models`).
`migrate.env_keys`, `migrate.without_env_keys` and `migrate.store_env_keys` move keys set
with `occ config env` into the store (`occ start` orders the steps).
"""
