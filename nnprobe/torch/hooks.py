"""The probe's hooks: every one registered here is removed in one place, and none can raise into training."""

from __future__ import annotations

import traceback
from typing import Any, Callable, Optional


class HookErrors:
    """Exceptions raised inside the probe's own hooks: counted, the first kept, never re-raised."""

    def __init__(self) -> None:
        self.count = 0
        self.first: Optional[str] = None
        self.step_count = 0  # in the step being recorded

    def add(self, exc: BaseException) -> None:
        self.count += 1
        self.step_count += 1
        if self.first is None:
            frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
            where = f" ({frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno})" if frame else ""
            self.first = f"{type(exc).__name__}: {exc}{where}"

    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` as a hook that returns None instead of raising (the model's tensors are left untouched)."""
        def hook(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # the probe must never break the training it watches
                self.add(exc)
            return None
        return hook


class HookSet:
    """Handles of registered hooks, removed together (on close, on leaving the `with`, on an exception)."""

    def __init__(self) -> None:
        self._handles: list[Any] = []

    def add(self, handle: Any) -> None:
        self._handles.append(handle)

    def remove(self) -> None:
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __len__(self) -> int:
        return len(self._handles)
