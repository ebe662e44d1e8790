"""SIGINT/SIGTERM during training: finish the step, write it, stop (status `interrupted`)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop finishes the step it is in, writes it, and stops."""

    def __init__(self) -> None:
        self.signal: Optional[str] = None

    def __call__(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name


@contextmanager
def catch_signals(flag: Callable[[int, Any], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to `flag` (a StopFlag, or any handler) in the main thread, then restore."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


