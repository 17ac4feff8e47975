"""One request of the tool to an edge's login service, inside its container.

The request goes into a file of the edge's user, written through the engine's archive API
(never in argv or the environment, which `docker inspect` shows: it may hold a hash), and
`edge.py admin FILE` (a team's front door) or `edge.py single-admin FILE` (a single-user
service) applies it with `docker exec` as the edge's user, answering one JSON line.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opencode_cloud.defaults import EDGE_DIR, EDGE_PROGRAM, EDGE_UID
from opencode_cloud.docker.models import ContainerFile

EDGE_USER = f"{EDGE_UID}:{EDGE_UID}"

PutFiles = Callable[[Mapping[str, ContainerFile]], None]
Run = Callable[[list[str]], tuple[Iterator[bytes], Callable[[], int | None]]]


class EdgeRefused(Exception):
    """The login service refused the request, or gave no answer: its words."""


def ask(put_files: PutFiles, run: Run, command: str, request: dict[str, Any]) -> dict[str, Any]:
    """The answer of the container's login service to `request` (`command`: `admin` or
    `single-admin`). `put_files` writes files into the container, `run` runs a command
    in it as `EDGE_USER` from `/`.

    Raises:
        EdgeRefused: its answer is an error, or none.
    """
    path = f"{EDGE_DIR}/admin-{secrets.token_hex(8)}.json"
    put_files({path: ContainerFile(json.dumps(request).encode(), 0o600, EDGE_UID)})
    output, exit_code = run(["/usr/bin/python3", "-I", EDGE_PROGRAM, command, path])
    text = b"".join(output).decode(errors="replace").strip()
    code = exit_code()
    answer = _last_json(text)
    if code != 0 or answer is None or "error" in answer:
        message = (answer or {}).get("error") or text.splitlines()[-1:] or ["no answer"]
        raise EdgeRefused(message if isinstance(message, str) else message[0])
    return answer


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None
