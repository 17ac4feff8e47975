"""Where benchmarks write their tables: a marked section of a markdown file."""

from __future__ import annotations

import time
from pathlib import Path


def replace_section(path: Path, name: str, how: str, table: str, heading: str = "") -> None:
    """Put `table` between `<!-- name -->` and `<!-- /name -->` in `path`, under a line
    saying how and when it was measured. A file without the markers gets them at its end,
    under `heading` when one is given.
    """
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = path.read_text()
    if begin not in text:
        text = text.rstrip("\n") + (f"\n\n{heading}" if heading else "") + f"\n\n{begin}\n{end}\n"
    start = text.index(begin) + len(begin)
    stop = text.index(end)
    block = f"\nMeasured with {how}, {time.strftime('%Y-%m-%d')}.\n\n{table}\n"
    path.write_text(text[:start] + block + text[stop:])
