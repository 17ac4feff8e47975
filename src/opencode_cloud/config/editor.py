"""`occ config edit`: the configuration file in the user's editor, on a private copy.

The editor works on a draft in a folder of its own (0700), never on the file itself, so
the file changes only once the whole edited text is valid (`store.replace_config_text`)
and an editor that crashes or writes half a file changes nothing. A refused draft is
kept for `occ config edit --from DRAFT`, so no edit is lost.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from opencode_cloud.config.errors import EditorFailed

# Tried in order when neither $VISUAL nor $EDITOR is set (`editor`: Debian's choice).
FALLBACK_EDITORS = ("editor", "nano", "vi")
DRAFT_NAME = "config.json"
DRAFT_PREFIX = "occ-config-edit-"
# What a draft of a configuration that has no file yet starts as.
EMPTY_CONFIG = "{\n}\n"


def choose_editor(environ: Mapping[str, str] | None = None) -> list[str]:
    """The editor's command line: $VISUAL, else $EDITOR (both may carry options, as in
    `code --wait`), else the first of `FALLBACK_EDITORS` installed.

    Raises:
        EditorFailed: none is set and none is installed.
    """
    env = os.environ if environ is None else environ
    for name in ("VISUAL", "EDITOR"):
        words = shlex.split(env.get(name) or "")
        if words:
            return words
    for program in FALLBACK_EDITORS:
        found = shutil.which(program)
        if found:
            return [found]
    raise EditorFailed(
        "No editor found: $VISUAL and $EDITOR are not set, and none of "
        f"{', '.join(FALLBACK_EDITORS)} is installed.",
        missing=True,
    )


def make_draft(text: str | None) -> Path:
    """A private copy of the configuration's `text` (None: no file yet) to edit."""
    folder = Path(tempfile.mkdtemp(prefix=DRAFT_PREFIX))
    draft = folder / DRAFT_NAME
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(EMPTY_CONFIG if text is None else text)
    return draft


def run_editor(editor: list[str], draft: Path) -> None:
    """Let the user edit `draft` with `editor`, on this terminal.

    Raises:
        EditorFailed: the editor cannot be started, or ends with an error.
    """
    try:
        code = subprocess.run([*editor, str(draft)], check=False).returncode
    except OSError as exc:
        raise EditorFailed(
            f"Cannot start the editor {shlex.join(editor)}: {exc.strerror or exc}."
        ) from None
    if code != 0:
        raise EditorFailed(
            f"The editor {shlex.join(editor)} ended with exit code {code}; nothing was saved."
        )


def is_draft(path: Path) -> bool:
    """Whether `path` is a draft `make_draft` made (and so the tool's to remove)."""
    return path.name == DRAFT_NAME and path.parent.name.startswith(DRAFT_PREFIX)


def discard_draft(draft: Path) -> None:
    """Remove a draft and its folder (it was saved, or the edit was given up)."""
    shutil.rmtree(draft.parent, ignore_errors=True)
