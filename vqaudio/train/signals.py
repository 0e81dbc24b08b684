"""Ctrl-C and SIGTERM during training: a flag checked between steps, so that the loop saves a checkpoint."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any


class StopRequest:
    """Turns the first Ctrl-C / SIGTERM into a flag checked between steps. A second Ctrl-C aborts,
    unless it comes within `GRACE` seconds: torchrun forwards the terminal's Ctrl-C to its workers,
    so each worker sees it twice, and that must still end in a checkpoint."""

    GRACE = 3.0

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._when = 0.0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:
            if signum == signal.SIGINT and time.monotonic() - self._when > self.GRACE:
                raise KeyboardInterrupt
            return
        self.signal_name = signal.Signals(signum).name
        self._when = time.monotonic()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
