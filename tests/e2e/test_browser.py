"""The web UI in a real browser: Debian's Chromium driven by Playwright, through the edge's
login page."""

from __future__ import annotations

from typing import Any

import pytest

from browser_helpers import ARTIFACTS, sign_in

pytestmark = pytest.mark.e2e


def test_web_ui_renders_behind_auth(browser: Any, service: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        # The app keeps an event stream open, so "networkidle" never comes: wait for
        # the page's own elements instead.
        response = sign_in(page, service.url, service.username, service.password)
        assert response is not None and response.status == 200
        assert page.title() == "OpenCode"
        # The home screen of the OpenCode web app: the project list and session search.
        page.get_by_text("Projects", exact=True).wait_for(timeout=30_000)
        page.get_by_placeholder("Search sessions").wait_for(timeout=30_000)
        page.get_by_text("Add project").wait_for(timeout=30_000)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "web-ui-home.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        context.close()


def test_web_ui_refuses_without_credentials(browser: Any, service: Any) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        # The edge sends a browser to its login page; a wrong password keeps it there.
        page.goto(service.url + "/", wait_until="load", timeout=30_000)
        assert "/__occ/login" in page.url
        page.fill("#username", service.username)
        page.fill("#password", "not-the-password")
        page.click("button[type=submit]")
        page.get_by_text("Wrong user name or password.").wait_for(timeout=30_000)
        assert page.get_by_placeholder("Search sessions").count() == 0
    finally:
        context.close()
