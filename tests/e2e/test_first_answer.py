"""The agent at work, offline: a prompt sent through the service has opencode's agent
change the user's files, end to end with the real image and real opencode.

The model is scripted (`scripted_model`): a small OpenAI-compatible server that runs
inside the sandbox container and listens on its own 127.0.0.1, configured as opencode's
only provider (`@ai-sdk/openai-compatible`, which opencode bundles). Given a command
between backticks it calls the `bash` tool with it, and once the tool's output comes
back it answers "done: <output>". The model's traffic stays on the container's
loopback, and the tests talk to nothing but the service's port on the host's loopback
(and the engine).

- Through the API, the way a user sets it up with `occ`: a host folder mounted with
  `occ mount add`, the model added as a custom OpenAI-compatible provider with `occ
  provider add NAME --base-url URL --model M --key-file F`; then `POST /session` and
  `POST /session/{id}/message`. The file the agent makes appears in the host folder,
  owned by the folder's owner, and the final answer carries what the command printed.
  The model received the stored key as its bearer token, and the key is nowhere in the
  container's environment, its logs or the command line of any process run in it.
- In Chromium, through the login page: the provider added with the library's
  `add_provider`, the session opened in the web UI, a prompt typed in its prompt box,
  the answer shown and the file made; then a line typed in the UI's terminal writes a
  file that the agent reads, and the answer shows what it read.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import scripted_model
from browser_helpers import ARTIFACTS, sign_in
from occ_helpers import run
from opencode_cloud.config.schema import Config
from opencode_cloud.providers.keys import add_provider
from opencode_cloud.service.service import Service as InstanceService

# Not alongside the rest: the web UI's start-up in Chromium is slow on a machine that also
# runs benchmarks, and the browser steps wait on it.
pytestmark = pytest.mark.e2e

PROJECTS = "/home/opencode/projects"
OWNER = 1234  # the host folder's owner: neither root nor the image's own user
MODEL_PORT = 8765  # on the container's loopback
MODEL_LOG = "/tmp/scripted-model.jsonl"
MODEL = {"providerID": scripted_model.PROVIDER_ID, "modelID": scripted_model.MODEL_ID}
BASE_URL = f"http://127.0.0.1:{MODEL_PORT}/v1"
TIMEOUT_MS = 30_000


# --------------------------------------------------------------------------- helpers


def call(
    creds: dict[str, Any], method: str, path: str, body: Any = None, *, timeout: float = 60
) -> tuple[int, Any]:
    """One call of opencode's API through the service, with Basic credentials and no
    proxy in the way; (status, decoded JSON or text)."""
    host, port = creds["url"].split("://", 1)[1].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    token = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    try:
        connection.request(
            method, path, body=None if body is None else json.dumps(body), headers=headers
        )
        answer = connection.getresponse()
        raw = answer.read()
    finally:
        connection.close()
    try:
        return answer.status, json.loads(raw)
    except ValueError:
        return answer.status, raw.decode(errors="replace")


def in_folder(path: str, directory: str) -> str:
    return f"{path}?directory={urllib.parse.quote(directory)}"


def container_exec(container: Any, *command: str, user: str = "1000:1000") -> tuple[int, str]:
    code, output = container.exec_run(list(command), user=user)
    return int(code), bytes(output).decode(errors="replace")


def start_model(container: Any) -> None:
    """The scripted model, inside the container as uid 1000, on its loopback only; back
    once it answers there."""
    source = Path(scripted_model.__file__).read_text()
    container.exec_run(
        ["python3", "-c", source, str(MODEL_PORT), MODEL_LOG], user="1000:1000", detach=True
    )
    url = f"http://127.0.0.1:{MODEL_PORT}/v1/models"
    deadline = time.monotonic() + 15
    while container_exec(container, "curl", "-sf", url)[0] != 0:
        assert time.monotonic() < deadline, "the scripted model did not start"
        time.sleep(0.1)


def model_requests(container: Any) -> list[dict[str, Any]]:
    """What opencode sent the model: one dict a request (its path, Authorization header
    and body)."""
    return [
        json.loads(line) for line in container_exec(container, "cat", MODEL_LOG)[1].splitlines()
    ]


def model_log(container: Any) -> str:
    """What opencode sent the model, a line per request: its messages after the system
    prompt (for failure messages)."""
    lines = []
    for line in container_exec(container, "cat", MODEL_LOG)[1].splitlines():
        try:
            messages = json.loads(line)["body"].get("messages", [])
        except (ValueError, KeyError, AttributeError):
            lines.append(line[:300])
            continue
        turns = [
            f"{m.get('role')}: {str(m.get('content') or m.get('tool_calls'))[:300]}"
            for m in messages
            if m.get("role") != "system"
        ]
        lines.append(" | ".join(turns))
    return "\n".join(lines) or "(no request)"


def shown(page: Any, text: str, container: Any) -> None:
    """Wait for `text` in the page, then (once) in the page loaded again: on a loaded
    machine the UI can miss a part's update on its event stream, and a reload shows
    what the session holds. On failure, a screenshot, and what the model was sent."""
    try:
        page.get_by_text(text, exact=True).wait_for()
        return
    except Exception:
        page.reload(wait_until="load")
    try:
        page.get_by_text(text, exact=True).wait_for()
    except Exception as error:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "first-answer-not-shown.png"))
        raise AssertionError(
            f"{text!r} not shown; the model saw:\n{model_log(container)}"
        ) from error


def providers(creds: dict[str, Any]) -> list[str]:
    status, found = call(creds, "GET", "/config/providers")
    assert status == 200, found
    return [provider["id"] for provider in found["providers"]]


def choose_default_model(creds: dict[str, Any]) -> None:
    """The scripted model as opencode's default, for prompts and titles (what choosing it
    in the web UI's settings does): opencode also offers its own free models, which are
    out of reach offline."""
    model = f"{scripted_model.PROVIDER_ID}/{scripted_model.MODEL_ID}"
    status, saved = call(creds, "PATCH", "/global/config", {"model": model, "small_model": model})
    assert status == 200, saved


def new_session(creds: dict[str, Any], directory: str, title: str) -> str:
    status, session = call(creds, "POST", in_folder("/session", directory), {"title": title})
    assert status == 200, session
    assert session["directory"] == directory
    return str(session["id"])


def texts(parts: list[dict[str, Any]]) -> list[str]:
    return [str(part["text"]) for part in parts if part.get("type") == "text"]


def tool_parts(creds: dict[str, Any], session: str) -> list[dict[str, Any]]:
    """The tool calls of a session, in order."""
    status, messages = call(creds, "GET", f"/session/{session}/message")
    assert status == 200, messages
    return [p for m in messages for p in m["parts"] if p.get("type") == "tool"]


def wait_for(page: Any, what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll `probe` until it returns something true, with the page's own timer (so the
    browser keeps serving its events meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(200)


def watch_terminal(socket: Any, received: list[str]) -> None:
    """Collect what a terminal's websocket (`/pty/{id}/connect`) brings the browser."""
    if "/pty/" in socket.url:

        def frame(payload: str | bytes) -> None:
            text = payload if isinstance(payload, str) else payload.decode(errors="replace")
            received.append(text)

        socket.on("framereceived", frame)


# --------------------------------------------------------------------------- the API


@pytest.fixture
def owned_folder(tmp_path: Path) -> Path:
    """A user's code checkout on the host, owned by uid/gid 1234."""
    folder = tmp_path / "ada-app"
    folder.mkdir()
    (folder / "README.md").write_text("# Ada's app\n")
    for path in (folder, folder / "README.md"):
        os.chown(path, OWNER, OWNER)
    return folder


def test_a_prompt_through_the_api_has_the_agent_change_a_mounted_folder(
    occ_env: dict[str, str], instance: Any, docker_sdk: Any, owned_folder: Path, tmp_path: Path
) -> None:
    directory = f"{PROJECTS}/{owned_folder.name}"
    run(occ_env, "mount", "add", str(owned_folder))
    run(occ_env, "start")
    # The provider, the way a user adds one: its key from a file, into opencode's key store.
    key = f"sk-scripted-{secrets.token_hex(12)}"
    key_file = tmp_path / "scripted.key"
    key_file.write_text(key + "\n")
    run(
        occ_env, "provider", "add", scripted_model.PROVIDER_ID, "--base-url", BASE_URL,
        "--model", scripted_model.MODEL_ID, "--key-file", str(key_file),
    )  # fmt: skip
    creds = json.loads(run(occ_env, "--json", "auth", "show").stdout)
    container = docker_sdk.containers.get(instance.container_name)
    start_model(container)
    assert scripted_model.PROVIDER_ID in providers(creds)
    choose_default_model(creds)
    listed = json.loads(run(occ_env, "--json", "provider", "list").stdout)
    assert listed == [
        {
            "id": scripted_model.PROVIDER_ID,
            "auth": "api",
            "base_url": BASE_URL,
            "models": [scripted_model.MODEL_ID],
        }
    ]

    session = new_session(creds, directory, "first answer")
    command = "echo agent-$((6*7)) | tee made-by-agent.txt"  # "agent-42" only once run
    status, reply = call(
        creds,
        "POST",
        in_folder(f"/session/{session}/message", directory),
        {"model": MODEL, "parts": [{"type": "text", "text": f"Please run `{command}`"}]},
    )

    assert status == 200, f"{reply}\nthe model saw:\n{model_log(container)}"
    info = reply["info"]
    assert (info["role"], info["providerID"], info["modelID"]) == (
        "assistant",
        scripted_model.PROVIDER_ID,
        scripted_model.MODEL_ID,
    )
    assert "error" not in info, info["error"]
    assert texts(reply["parts"]) == ["done: agent-42"], f"the model saw:\n{model_log(container)}"
    # The agent ran the model's command with the bash tool, in the session's folder.
    (tool,) = tool_parts(creds, session)
    assert (tool["tool"], tool["state"]["status"]) == ("bash", "completed"), tool
    assert tool["state"]["input"]["command"] == command
    assert tool["state"]["output"].strip() == "agent-42"
    # The file is in the user's folder on the host, and theirs.
    made = owned_folder / "made-by-agent.txt"
    assert made.read_text() == "agent-42\n"
    assert (made.stat().st_uid, made.stat().st_gid) == (OWNER, OWNER)
    # The model got the stored key as its API key, on every request.
    assert {r["authorization"] for r in model_requests(container)} == {f"Bearer {key}"}
    assert_key_kept_secret(docker_sdk, container, key)
    # Removed: its key at once, its entry in opencode's configuration once it restarts.
    removed = run(occ_env, "--json", "provider", "remove", scripted_model.PROVIDER_ID)
    assert json.loads(removed.stdout) == {"removed": "scripted", "restart_needed": True}
    assert (
        "/auth.json"
        not in container_exec(
            container, "grep", "-rlF", key, "/home/opencode/.local/share/opencode", user="0"
        )[1]
    )
    run(occ_env, "restart")
    assert json.loads(run(occ_env, "--json", "provider", "list").stdout) == []
    assert scripted_model.PROVIDER_ID not in providers(creds)


def assert_key_kept_secret(docker_sdk: Any, container: Any, key: str) -> None:
    """The key is in opencode's key store (0600, the runtime user's) and nowhere else the
    engine shows: not in the container's configuration (its environment), its logs, nor
    the command line of any process run in it; no request file is left in the edge's
    folder."""
    container.reload()
    assert key not in json.dumps(container.attrs)
    assert key.encode() not in container.logs()
    exec_ids = container.attrs.get("ExecIDs") or []
    assert exec_ids  # the key was sent by a process run in the container
    for exec_id in exec_ids:
        assert key not in json.dumps(docker_sdk.api.exec_inspect(exec_id))
    code, owner = container_exec(
        container, "stat", "-c", "%a %U", "/home/opencode/.local/share/opencode/auth.json", user="0"
    )
    assert (code, owner.strip()) == (0, "600 opencode")
    # (The scripted model's own log holds the headers it got: not a place of the service.)
    code, found = container_exec(
        container, "grep", "-rlF", f"--exclude={Path(MODEL_LOG).name}", key, "/run", "/tmp",
        user="0",
    )  # fmt: skip
    assert code == 1, found


# --------------------------------------------------------------------------- the web UI


def test_a_prompt_and_the_terminal_in_the_web_ui(
    browser: Any, service: Any, docker_sdk: Any, docker_client: Any, instance: Any
) -> None:
    creds = {"url": service.url, "username": service.username, "password": service.password}
    directory = f"{PROJECTS}/webapp"
    assert service.exec("mkdir", "-p", directory)[0] == 0
    container = docker_sdk.containers.get(service.name)
    start_model(container)
    # The provider through the library, as `occ provider add` does it.
    key = f"sk-scripted-{secrets.token_hex(12)}"
    add_provider(
        InstanceService(docker_client, Config, instance),
        scripted_model.PROVIDER_ID,
        key,
        base_url=BASE_URL,
        models=[scripted_model.MODEL_ID],
    )
    assert scripted_model.PROVIDER_ID in providers(creds)
    choose_default_model(creds)
    session = new_session(creds, directory, "from the browser")
    folder = base64.urlsafe_b64encode(directory.encode()).decode().rstrip("=")

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        sign_in(page, service.url, service.username, service.password)
        page.goto(f"{service.url}/{folder}/session/{session}", wait_until="load")
        prompt = page.get_by_role("textbox", name="Prompt")
        prompt.wait_for()
        # The scripted model is the one the prompt box will use.
        page.locator("[data-action=prompt-model]").get_by_text(scripted_model.MODEL_ID).wait_for()

        # A prompt typed in the UI: the agent makes the file, the answer is shown.
        prompt.click()
        page.keyboard.type("Make a file: `echo from-the-ui-$((6*7)) | tee made-in-the-ui.txt`")
        page.get_by_role("button", name="Send", exact=True).click()
        shown(page, "done: from-the-ui-42", container)
        code, made = service.exec("cat", f"{directory}/made-in-the-ui.txt")
        assert (code, made) == (0, "from-the-ui-42\n"), model_log(container)
        page.screenshot(path=str(ARTIFACTS / "first-answer-ui.png"))

        # The UI's terminal (Ctrl+`), in the session's folder: a line typed there writes
        # a file; the agent reads it and answers with what it found.
        token = f"typed-{secrets.token_hex(4)}"
        shell_output: list[str] = []
        page.on("websocket", lambda socket: watch_terminal(socket, shell_output))
        page.keyboard.press("Control+Backquote")
        # Keys typed before the terminal's websocket is open are lost: wait for the
        # shell's prompt to come through it.
        wait_for(page, "the terminal's shell prompt", lambda: "$ " in "".join(shell_output))
        page.locator("[data-component=terminal]").click()
        page.keyboard.type(f"echo {token} > from-the-terminal.txt")
        page.keyboard.press("Enter")
        wait_for(
            page,
            "the terminal to write its file",
            lambda: service.exec("cat", f"{directory}/from-the-terminal.txt")[1] == f"{token}\n",
        )
        prompt.click()
        page.keyboard.type("What did the terminal write? `cat from-the-terminal.txt`")
        page.get_by_role("button", name="Send", exact=True).click()
        shown(page, f"done: {token}", container)
        page.screenshot(path=str(ARTIFACTS / "first-answer-terminal.png"))
    finally:
        context.close()

    commands = [part["state"]["input"]["command"] for part in tool_parts(creds, session)]
    assert commands == [
        "echo from-the-ui-$((6*7)) | tee made-in-the-ui.txt",
        "cat from-the-terminal.txt",
    ]
    assert {r["authorization"] for r in model_requests(container)} == {f"Bearer {key}"}
    assert_key_kept_secret(docker_sdk, container, key)
