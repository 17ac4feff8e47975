"""Edits of a JSON-with-comments file that keep its comments and its layout.

`occ config set` changes a key or two; rewriting the whole file from the parsed values
would drop every comment in it. Instead the file's text is scanned (strings, comments,
brackets) to find where each member of its objects starts and ends, and only the text of
what changed is replaced: a changed value, a removed member, a new member before the
closing brace. The result is parsed again and must give exactly the new data; anything
this scanner does not follow gives None, and the caller falls back to writing the file
anew (keeping the old one beside it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import json5

_PUNCTUATION = "{}[]:,"
_SPACE = " \t\r\n\ufeff\u00a0\u2028\u2029\v\f"


class _Unfollowed(Exception):
    """Text the scanner does not follow; the edit is given up."""


@dataclass(frozen=True)
class _Token:
    kind: str  # one of _PUNCTUATION, "string" or "word" (a number, literal or bare key)
    start: int
    end: int


def _tokens(text: str) -> tuple[list[_Token], list[str]]:
    """The tokens of `text` and its comments, in order.

    Raises:
        _Unfollowed: an unterminated string or comment.
    """
    tokens: list[_Token] = []
    comments: list[str] = []
    index, size = 0, len(text)
    while index < size:
        char = text[index]
        if char in _SPACE:
            index += 1
        elif text.startswith("//", index):
            end = text.find("\n", index)
            end = size if end < 0 else end
            comments.append(text[index:end].rstrip("\r"))
            index = end
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            if end < 0:
                raise _Unfollowed("unterminated comment")
            comments.append(text[index : end + 2])
            index = end + 2
        elif char in _PUNCTUATION:
            tokens.append(_Token(char, index, index + 1))
            index += 1
        elif char in "\"'":
            end = index + 1
            while end < size and text[end] != char:
                end += 2 if text[end] == "\\" else 1
            if end >= size:
                raise _Unfollowed("unterminated string")
            tokens.append(_Token("string", index, end + 1))
            index = end + 1
        else:
            end = index
            while (
                end < size
                and text[end] not in _SPACE
                and text[end] not in _PUNCTUATION
                and text[end] not in "\"'"
                and not text.startswith(("//", "/*"), end)
            ):
                end += 1
            tokens.append(_Token("word", index, end))
            index = end
    return tokens, comments


def comments_of(text: str) -> list[str]:
    """The comments of a JSON-with-comments text (empty when it cannot be scanned)."""
    try:
        return _tokens(text)[1]
    except _Unfollowed:
        return []


@dataclass
class _Member:
    key: str
    key_start: int
    value: list[_Token]  # the value's tokens: one, or a bracketed run
    value_index: int  # index of the value's first token
    comma: _Token | None


@dataclass
class _Object:
    open: _Token
    close: _Token
    members: list[_Member]


def _key(text: str, token: _Token) -> str:
    raw = text[token.start : token.end]
    if token.kind == "string":
        value = json5.loads(raw)
        if not isinstance(value, str):  # pragma: no cover - a string token is a string
            raise _Unfollowed("key")
        return value
    if token.kind == "word":
        return raw
    raise _Unfollowed("not a key")


def _value_end(tokens: list[_Token], index: int) -> int:
    """The index just past the value that starts at `tokens[index]`."""
    first = tokens[index]
    if first.kind in "{[":
        depth = 0
        for position in range(index, len(tokens)):
            kind = tokens[position].kind
            if kind in "{[":
                depth += 1
            elif kind in "}]":
                depth -= 1
                if depth == 0:
                    return position + 1
        raise _Unfollowed("unclosed bracket")
    if first.kind in ("string", "word"):
        return index + 1
    raise _Unfollowed("not a value")


def _object(text: str, tokens: list[_Token], index: int) -> _Object:
    """The object whose `{` is `tokens[index]`."""
    if tokens[index].kind != "{":
        raise _Unfollowed("not an object")
    members: list[_Member] = []
    position = index + 1
    while True:
        if position >= len(tokens):
            raise _Unfollowed("unclosed object")
        if tokens[position].kind == "}":
            return _Object(tokens[index], tokens[position], members)
        key_token = tokens[position]
        if position + 2 >= len(tokens) or tokens[position + 1].kind != ":":
            raise _Unfollowed("no colon")
        start = position + 2
        end = _value_end(tokens, start)
        comma = tokens[end] if end < len(tokens) and tokens[end].kind == "," else None
        members.append(
            _Member(_key(text, key_token), key_token.start, tokens[start:end], start, comma)
        )
        if comma is None and (end >= len(tokens) or tokens[end].kind != "}"):
            raise _Unfollowed("no comma")
        position = end + 1 if comma is not None else end


def _line_start(text: str, position: int) -> int:
    return text.rfind("\n", 0, position) + 1


def _indent_of(text: str, position: int) -> str:
    """The whitespace that starts the line of `position`."""
    start = _line_start(text, position)
    end = start
    while end < position and text[end] in " \t":
        end += 1
    return text[start:end]


def _render(value: Any, indent: str) -> str:
    """`value` as JSON, its later lines indented to sit under a member at `indent`."""
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)


class _Edits:
    """Replacements of spans of the text, applied together at the end."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.spans: list[tuple[int, int, str]] = []

    def replace(self, start: int, end: int, new: str) -> None:
        self.spans.append((start, end, new))

    def result(self) -> str:
        text = self.text
        previous_start = len(text) + 1
        for start, end, new in sorted(
            self.spans, key=lambda span: (span[0], span[1]), reverse=True
        ):
            if end > previous_start:
                raise _Unfollowed("overlapping edits")
            text = text[:start] + new + text[end:]
            previous_start = start
        return text


def _remove(edits: _Edits, member: _Member) -> None:
    """Take out a member and its comma; its line too when nothing else is on it."""
    text = edits.text
    end = member.comma.end if member.comma else member.value[-1].end
    start = member.key_start
    line_start = _line_start(text, start)
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    if not text[line_start:start].strip() and not text[end:line_end].strip():
        start, end = line_start, min(line_end + 1, len(text))
    edits.replace(start, end, "")


def _add(edits: _Edits, found: _Object, added: dict[str, Any], kept: list[_Member]) -> None:
    """New members at the end of the object, in the layout of its last one (on lines of
    their own when the members are, with a trailing comma when the last one had one)."""
    text = edits.text
    last = kept[-1] if kept else None
    close = found.close.start
    indent = _indent_of(text, last.key_start if last else found.open.start)
    if last is None:
        indent += "  "
    members = [
        f"{json.dumps(key, ensure_ascii=False)}: {_render(value, indent)}"
        for key, value in added.items()
    ]
    own_lines = not text[_line_start(text, close) : close].strip() and (
        last is None or "\n" in text[last.key_start : close]
    )
    if own_lines:
        trailing = "," if last is not None and last.comma is not None else ""
        lines = "".join(f"{indent}{member},\n" for member in members[:-1])
        lines += f"{indent}{members[-1]}{trailing}\n"
        if last is not None and last.comma is None:
            edits.replace(last.value[-1].end, last.value[-1].end, ",")
        if last is None and not text[found.open.end : close].strip():
            edits.replace(found.open.end, close, "\n" + lines + _indent_of(text, close))
        else:
            start = _line_start(text, close)
            edits.replace(start, start, lines)
        return
    inline = ", ".join(members)
    if last is None:
        edits.replace(found.open.end, found.open.end, f" {inline} ")
    elif last.comma is None:
        edits.replace(last.value[-1].end, last.value[-1].end, f", {inline}")
    else:
        edits.replace(last.comma.end, last.comma.end, f" {inline},")


def _edit(
    edits: _Edits, tokens: list[_Token], index: int, old: dict[str, Any], new: dict[str, Any]
) -> None:
    """Turn the object at `tokens[index]`, which holds `old`, into one that holds `new`."""
    text = edits.text
    found = _object(text, tokens, index)
    keys = [member.key for member in found.members]
    if len(set(keys)) != len(keys):
        raise _Unfollowed("duplicate keys")
    kept: list[_Member] = []
    for member in found.members:
        if member.key not in new:
            _remove(edits, member)
            continue
        kept.append(member)
        before, after = old.get(member.key), new[member.key]
        if before == after and type(before) is type(after):
            continue
        if isinstance(before, dict) and isinstance(after, dict) and member.value[0].kind == "{":
            _edit(edits, tokens, member.value_index, before, after)
            continue
        indent = _indent_of(text, member.key_start)
        edits.replace(member.value[0].start, member.value[-1].end, _render(after, indent))
    added = {key: value for key, value in new.items() if key not in keys}
    if added:
        _add(edits, found, added, kept)


def edit_text(text: str, old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """`text` (which holds `old`) changed to hold `new`, its comments and layout kept; None
    when that cannot be done with certainty (then write the file anew)."""
    try:
        tokens, comments = _tokens(text)
        if not tokens:
            return None
        end = _value_end(tokens, 0)
        if end != len(tokens):
            return None
        edits = _Edits(text)
        _edit(edits, tokens, 0, old, new)
        result = edits.result()
        if json5.loads(result, allow_duplicate_keys=False) != new:
            return None
        kept = _tokens(result)[1]
    except (_Unfollowed, ValueError, RecursionError):
        return None
    if any(comment not in kept for comment in comments):
        return None
    return result
