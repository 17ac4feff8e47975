"""Opening projects in the web UI, in a real browser: Debian's Chromium driven by
Playwright against a service started with `occ` (a subprocess), with a mounted host folder
and a project made inside the projects volume.

The "Open project" dialog lists both without typing, finds the project by its name, opens
it, and a session started there belongs to that folder. Sending the prompt would ask a
model provider, which is out of reach offline (and not what is tested here): the browser
answers that one request itself, after the UI has created the session.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from browser_helpers import ARTIFACTS, sign_in
from occ_helpers import api, run

pytestmark = pytest.mark.e2e

PROJECTS = "/home/opencode/projects"
PROJECT = "webapp"
MOUNTED = "host-notes"
TIMEOUT_MS = 30_000

MAKE_PROJECT = f"""
set -e
mkdir {PROJECTS}/{PROJECT}
cd {PROJECTS}/{PROJECT}
printf '# webapp\\n' > README.md
git init -q
git add README.md
git -c user.name=Ada -c user.email=ada@example.org commit -qm 'First commit'
"""


def wait_for(page: Any, what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll `probe` until it returns something true; return that.

    It waits with the page's own timer, so the browser's events (the route handler
    below) are served meanwhile; `time.sleep` would hold them back.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(300)


def sessions_in(env: dict[str, str], directory: str) -> list[dict[str, Any]]:
    found = api(env, "GET", f"/session?directory={urllib.parse.quote(directory)}")
    assert isinstance(found, list)
    return [s for s in found if s.get("directory") == directory]


def project_of(env: dict[str, str], worktree: str) -> dict[str, Any] | None:
    projects = api(env, "GET", "/project")
    assert isinstance(projects, list)
    return next((p for p in projects if p.get("worktree") == worktree), None)


@pytest.fixture
def started(occ_env, tmp_path: Path) -> dict[str, str]:
    """A running service with a mounted host folder and a git project in the projects
    volume; returns the credentials."""
    folder = tmp_path / MOUNTED
    folder.mkdir()
    (folder / "todo.txt").write_text("open me in the browser\n")
    run(occ_env, "mount", "add", str(folder))
    run(occ_env, "start")
    run(occ_env, "shell", "--", "sh", "-c", MAKE_PROJECT)
    return json.loads(run(occ_env, "--json", "auth", "show").stdout)


def test_open_a_project_and_start_a_session_in_it(browser: Any, occ_env, started) -> None:
    directory = f"{PROJECTS}/{PROJECT}"
    # opencode has not opened it yet (asking for its sessions would open it).
    assert project_of(occ_env, directory) is None

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    prompts: list[str] = []

    def no_model_call(route: Any) -> None:
        # The UI has created the session by now; the prompt would go to a model provider.
        prompts.append(route.request.url)
        route.fulfill(status=204)

    context.route("**/session/*/prompt_async*", no_model_call)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        # The app keeps an event stream open, so "networkidle" never comes: wait for
        # elements instead.
        sign_in(page, started["url"], started["username"], started["password"])
        page.get_by_text("Add project", exact=True).click()
        dialog = page.get_by_role("dialog", name="Open project")
        search = dialog.get_by_placeholder("Search folders")
        search.wait_for()

        def entry(name: str) -> Any:
            # Shown relative to opencode's home, the projects folder: "~/webapp/".
            items = dialog.locator("[data-slot=list-item]")
            return items.filter(has_text=re.compile(rf"^\s*~/\s*{re.escape(name)}\s*/\s*$"))

        # Without typing: the projects folder's content, the mounted folder included.
        entry(MOUNTED).wait_for()
        entry(PROJECT).wait_for()
        page.screenshot(path=str(ARTIFACTS / "open-project-dialog.png"))

        search.fill(PROJECT)
        entry(PROJECT).wait_for()
        entry(MOUNTED).wait_for(state="detached")  # the search leaves it out
        page.screenshot(path=str(ARTIFACTS / "open-project-search.png"))

        entry(PROJECT).click()
        dialog.wait_for(state="hidden")
        projects = page.get_by_role("complementary", name="Projects")
        projects.get_by_text(PROJECT, exact=True).wait_for()
        project = wait_for(
            page, "opencode to open the project", lambda: project_of(occ_env, directory)
        )
        assert project["vcs"] == "git"
        page.screenshot(path=str(ARTIFACTS / "project-opened.png"))

        page.locator("[data-action=home-new-session]").click()
        prompt = page.get_by_role("textbox", name="Prompt")
        prompt.wait_for()
        page.get_by_text(PROJECT, exact=True).first.wait_for()  # the session's folder
        prompt.click()
        page.keyboard.type("Hello from the end-to-end test")
        # Enabled once the app has taken the text in (a click waits for that).
        page.get_by_role("button", name="Send", exact=True).click()

        wait_for(page, "the prompt to be sent", lambda: prompts)
        sessions = sessions_in(occ_env, directory)
        page.screenshot(path=str(ARTIFACTS / "project-session.png"))
    finally:
        context.close()

    assert len(sessions) == 1
    assert sessions[0]["projectID"] == project["id"]
    assert sessions[0]["id"] in prompts[0]  # the prompt went to that session
