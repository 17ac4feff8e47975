"""A scripted model behind an OpenAI-compatible API, for the tests that let the agent
work offline. A program of its own (standard library only): the tests run it inside the
sandbox container, `python3 -c SOURCE PORT LOG`, where it listens on 127.0.0.1:PORT, and
opencode reaches it as a provider through `@ai-sdk/openai-compatible` (see
`provider_config`).

Its script, per request to `/v1/chat/completions`:
- without tools (a session's title, a summary): a short plain answer;
- when the last message is a tool's result: "done: " and that result, in plain text;
- otherwise, when the last user message holds a command between backticks: a call of
  the `bash` tool with that command;
- otherwise: "no command in the prompt".

It answers as a stream of server-sent events when asked to (`"stream": true`, as opencode
does), else with one JSON body. Every request's body is appended to LOG, one JSON object
a line, so a failing test can show what opencode sent.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROVIDER_ID = "scripted"
MODEL_ID = "scripted-1"
TITLE = "Scripted session"
DONE = "done: "
NO_COMMAND = "no command in the prompt"
COMMAND = re.compile(r"`([^`]+)`")

_calls = itertools.count(1)


def provider_config(port: int) -> dict[str, Any]:
    """The part of opencode's configuration that makes this model its only provider,
    and its model the one for every session and for titles."""
    model = f"{PROVIDER_ID}/{MODEL_ID}"
    return {
        "$schema": "https://opencode.ai/config.json",
        "enabled_providers": [PROVIDER_ID],
        "model": model,
        "small_model": model,
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            PROVIDER_ID: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Scripted",
                "options": {"baseURL": f"http://127.0.0.1:{port}/v1", "apiKey": "offline"},
                "models": {MODEL_ID: {"name": "Scripted model", "tool_call": True}},
            }
        },
    }


def text_of(message: dict[str, Any]) -> str:
    """A message's text: a string, or the text of its parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """The assistant's message for a chat request: {"content": ...} or {"tool_calls": ...}."""
    messages = [m for m in request.get("messages", []) if isinstance(m, dict)]
    if not request.get("tools"):
        return {"content": TITLE}
    if messages and messages[-1].get("role") == "tool":
        return {"content": DONE + text_of(messages[-1]).strip()}
    users = [m for m in messages if m.get("role") == "user"]
    found = COMMAND.search(text_of(users[-1])) if users else None
    if not found:
        return {"content": NO_COMMAND}
    arguments = {"command": found.group(1), "description": "Runs the command it was given"}
    return {
        "tool_calls": [
            {
                "id": f"call_{next(_calls)}",
                "type": "function",
                "function": {"name": "bash", "arguments": json.dumps(arguments)},
            }
        ]
    }


def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
    data = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


class Handler(BaseHTTPRequestHandler):
    log_path = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the log file holds the requests

    def send_json(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self.send_json({"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        with open(self.log_path, "a", encoding="utf-8") as log:
            entry = {"path": self.path, "authorization": self.headers.get("Authorization")}
            log.write(json.dumps({**entry, "body": request}) + "\n")
        message = answer(request)
        finish = "tool_calls" if "tool_calls" in message else "stop"
        if not request.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", **message}}
            self.send_json(
                {
                    "id": "chatcmpl-scripted",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": MODEL_ID,
                    "choices": [{**choice, "finish_reason": finish}],
                    "usage": USAGE,
                }
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        if "tool_calls" in message:
            call = {**message["tool_calls"][0], "index": 0}
            self.wfile.write(chunk({"role": "assistant", "tool_calls": [call]}, None))
        else:
            self.wfile.write(chunk({"role": "assistant", "content": ""}, None))
            # The text in two pieces, as a model streams it.
            text = str(message["content"])
            middle = len(text) // 2
            for piece in (text[:middle], text[middle:]):
                self.wfile.write(chunk({"content": piece}, None))
        self.wfile.write(chunk({}, finish))
        usage = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "choices": []}
        self.wfile.write(b"data: " + json.dumps({**usage, "usage": USAGE}).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def main(port: int, log_path: str) -> None:
    Handler.log_path = log_path
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
