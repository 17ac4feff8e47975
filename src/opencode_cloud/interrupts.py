"""Signals that end a command: held off while a step must not be cut in half, or made
to act as Ctrl-C so that the command's own cleanup runs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

# What ends a command besides Ctrl-C: `kill`, and a terminal that closes.
TERMINATIONS = (signal.SIGTERM, signal.SIGHUP)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait until the block is done (then they act as usual)."""
    watched = {signal.SIGINT, *TERMINATIONS}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    except (AttributeError, ValueError, OSError):  # pragma: no cover (not POSIX)
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def terminations_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the block, as Ctrl-C does, so what
    undoes the block runs instead of the process ending on the spot."""
    handlers: dict[signal.Signals, Any] = {}
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        for sig in TERMINATIONS:
            handlers[sig] = signal.signal(sig, _raise_interrupt)
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
