"""What the browser tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download cannot work offline; Debian's Chromium with these
# flags runs headless as root in a container or VM.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def sign_in(page: Any, url: str, username: str, password: str) -> Any:
    """Open `url` in a browser page and sign in on the edge's login page; the answer to
    the form (the app's page it leads to)."""
    page.goto(url + "/", wait_until="load", timeout=30_000)
    assert "/__occ/login" in page.url, page.url
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation(wait_until="load", timeout=30_000) as navigation:
        page.click("button[type=submit]")
    return navigation.value
