"""What the browser tests share."""

from __future__ import annotations

import re
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


# Opens a terminal of opencode's (a pty and its websocket) from the signed-in page, types
# `command` and a marker, and resolves with what the terminal printed once the marker's
# value (`marker-42`) came back, or with what went wrong.
TERMINAL_JS = """async ([command, marker]) => {
  const made = await fetch('/pty', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                    body: JSON.stringify({title: 'test terminal'})});
  if (!made.ok) return 'create: ' + made.status;
  const pty = await made.json();
  const token = await fetch(`/pty/${pty.id}/connect-token`, {method: 'POST'});
  let query = '';
  if (token.ok) {
    const body = await token.json();
    const ticket = body.ticket || body.token;
    if (ticket) query = '?ticket=' + encodeURIComponent(ticket);
  }
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return await new Promise((resolve) => {
    const socket = new WebSocket(`${scheme}://${location.host}/pty/${pty.id}/connect${query}`);
    let seen = '';
    const done = (what) => { try { socket.close(); } catch (e) {} resolve(what); };
    socket.onopen = () => socket.send(command + '; echo ' + marker + '-$((6*7))\\r');
    socket.onmessage = async (event) => {
      seen += typeof event.data === 'string' ? event.data : await event.data.text();
      if (seen.includes(marker + '-42')) done('ok\\n' + seen);
    };
    socket.onerror = () => done('error: ' + seen);
    socket.onclose = (e) => done('closed ' + e.code + ': ' + seen);
    setTimeout(() => done('timeout: ' + seen), 20000);
  });
}"""


def run_in_terminal(page: Any, command: str, marker: str = "done") -> str:
    """What opencode's terminal printed for `command`, run from the signed-in `page`."""
    answer = str(page.evaluate(TERMINAL_JS, [command, marker]))
    assert answer.startswith("ok\n"), answer[:2000]
    # Without the terminal's escape sequences (colours, titles, bracketed paste) and
    # carriage returns: lines as a file has them.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", answer.removeprefix("ok\n"))
    return text.replace("\r", "")
