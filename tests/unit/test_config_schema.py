"""The shipped JSON Schema matches the model, and the config modules stay light to import."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest

from opencode_cloud import defaults
from opencode_cloud.config import schema
from opencode_cloud.config.schema import (
    KEYS,
    RULES,
    SCHEMA_FILE,
    Config,
    generate_schema,
    render_schema,
    size_in_bytes,
)
from opencode_cloud.config.store import parse_config_text, validate_config
from opencode_cloud.docker import image
from opencode_cloud.docker.spec import DefaultSettings


def test_schema_file_is_in_sync_with_the_model() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render_schema(), (
        "config.schema.json is stale: run python -m opencode_cloud.config.schema"
    )


def test_generator_check_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert schema.main(["--check"]) == 0


def test_schema_is_a_valid_json_schema_with_every_key() -> None:
    generated = generate_schema()
    jsonschema.Draft202012Validator.check_schema(generated)
    assert set(KEYS) <= set(generated["properties"])
    assert set(RULES) == set(KEYS)


def test_defaults_are_the_shared_ones() -> None:
    config = Config()
    assert config.port == defaults.DEFAULT_PORT
    assert config.bind_address == defaults.DEFAULT_BIND_ADDRESS
    assert config.username == defaults.DEFAULT_USERNAME
    assert config.restart_retries == defaults.DEFAULT_RESTART_RETRIES
    assert config.stop_timeout == defaults.DEFAULT_STOP_TIMEOUT
    assert config.start_timeout == defaults.DEFAULT_START_TIMEOUT
    assert config.opencode_version == defaults.DEFAULT_OPENCODE_VERSION
    assert image.image_ref(defaults.DEFAULT_OPENCODE_VERSION) == image.DEFAULT_IMAGE
    assert image.image_ref("1.2.3") == f"{defaults.IMAGE_NAME}:1.2.3"


def test_engine_defaults_match_a_default_configuration() -> None:
    """A caller without a configuration (`DefaultSettings`) gets the container a default
    configuration file asks for."""
    config, default = Config(), DefaultSettings()

    def plain(value: object) -> object:
        if hasattr(value, "pids"):  # the limits, compared by what the engine reads
            return (value.memory_bytes, value.cpus, value.pids)  # type: ignore[attr-defined]
        return tuple(value) if isinstance(value, (list, tuple)) else value

    for name in DefaultSettings.__dataclass_fields__:
        assert plain(getattr(config, name)) == plain(getattr(default, name)), name
    assert size_in_bytes(defaults.DEFAULT_MEMORY_LIMIT) == defaults.DEFAULT_MEMORY_BYTES


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"port": 8080, "env": {"A": "1"}, "registries": ["ghcr.io/acme"]},
        {"image": "ghcr.io/acme/sandbox:1", "bind_address": "::1", "$schema": "x.json"},
        {"unknown": True},
    ],
)
def test_valid_documents_pass_both(document: dict[str, object]) -> None:
    jsonschema.validate(document, generate_schema(), format_checker=jsonschema.FormatChecker())
    config = Config.model_validate(document)
    # The model holds what the file says, and nothing else than the defaults; keys it does
    # not know (a newer release's) are kept, so saving the file again does not drop them.
    assert config.model_dump(mode="json", exclude_defaults=True) == document


@pytest.mark.parametrize(
    "document",
    [
        {"port": 0},
        {"port": "3000"},
        {"bind_address": "localhost"},
        {"env": {"A=B": "1"}},
        {"env": {"A": 1}},
        {"restart_retries": -1},
        {"start_timeout": 0},
        {"registries": ["https://ghcr.io"]},
        {"opencode_version": "latest"},
    ],
)
def test_invalid_documents_fail_both(document: dict[str, object]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, generate_schema(), format_checker=jsonschema.FormatChecker())
    with pytest.raises(ValueError):
        Config.model_validate(document)


@pytest.mark.parametrize("package", ["config", "docker"])
def test_packages_re_export_nothing(package: str) -> None:
    """Names are imported from the module that defines them: a package `__init__` holds
    its docstring and nothing else, so importing one module loads no other."""
    init = Path(schema.__file__).parents[1] / package / "__init__.py"
    body = ast.parse(init.read_text(encoding="utf-8")).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{init} holds more than a docstring"
    assert isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)


def test_config_modules_import_no_docker_rich_or_click() -> None:
    code = (
        "import sys\n"
        "import opencode_cloud.config.paths\n"
        "assert 'pydantic' not in sys.modules, 'paths pulls in pydantic'\n"
        "import opencode_cloud.config.store, opencode_cloud.config.edit\n"
        "import opencode_cloud.locking\n"
        "heavy = sorted(m for m in ('docker', 'requests', 'rich', 'click') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_schema_generator_runs_as_a_module(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "opencode_cloud.config.schema", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(SCHEMA_FILE.read_text())["title"] == "opencode-cloud configuration"


DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_describe_every_key_and_their_example_is_valid() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for key in KEYS:
        assert f"| `{key}` |" in text, f"docs/configuration.md does not describe {key}"
    example = re.search(r"```jsonc\n(.*?)```", text, re.DOTALL)
    assert example is not None
    validate_config(parse_config_text(example.group(1)))


@pytest.mark.parametrize(
    ("address", "exposed"),
    [("127.0.0.1", False), ("::1", False), ("127.0.0.2", False), ("0.0.0.0", True), ("::", True)],
)
def test_exposed_means_not_loopback(address: str, exposed: bool) -> None:
    assert Config.model_validate({"bind_address": address}).exposed is exposed
