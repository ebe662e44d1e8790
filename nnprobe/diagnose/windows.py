"""Units dead over a window of batches: the one definition the dead-relu detector and the digest share.

A unit is dead when its pre-activation is <= 0 for every example it sees, and one batch is not
enough examples to say so (at batch size 1 it is one example, where most ReLU units are 0 in a
healthy net). Consecutive full records are gathered into windows of at least `examples` examples
(the training set, when it is smaller); the units dead over a window are those dead in every one
of its batches: the bitwise AND of the records' `a.dead_units` masks. A record without a mask
(a log from before masks, or a producer that writes only counts) leaves a window of several
batches with only an upper bound, the fewest dead units of any of its batches, marked not exact:
counts cannot tell units that stay dead from units that take turns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

#: examples a window must cover, unless the training set is smaller
WINDOW_EXAMPLES = 256


@dataclass(frozen=True)
class DeadWindow:
    """One closed window: its steps, how many batches and examples, and the units dead in all of them."""

    first: int
    last: int
    records: int
    examples: int
    dead: int
    exact: bool  # False: `dead` is an upper bound (some record had a count but no mask)


def window_examples(batch: Optional[int], n_train: Optional[int], examples: float = WINDOW_EXAMPLES) -> int:
    """Examples a window covers: `examples`, or the whole training set when that is smaller."""
    want = max(1, int(examples))
    return min(want, n_train) if isinstance(n_train, int) and n_train > 0 else want


def _mask(a: dict) -> Optional[int]:
    """The dead-unit mask of a record's `a` object: 0 when no unit is dead, None when only a count is there."""
    dead = a.get("dead")
    if dead == 0:
        return 0
    text = a.get("dead_units")
    if type(text) is str:
        try:
            return int(text, 16)
        except ValueError:
            return None
    return None


class DeadUnitWindow:
    """Feeds one layer's full records; returns a DeadWindow each time one closes."""

    __slots__ = ("batch", "examples", "first", "last", "records", "seen", "mask", "fewest")

    def __init__(self, batch: Optional[int], examples: int) -> None:
        self.batch = max(1, batch or examples)  # unknown: each batch a window of its own
        self.examples = max(1, examples)
        self._reset()

    def _reset(self) -> None:
        self.first: Optional[int] = None
        self.last: Optional[int] = None
        self.records = 0
        self.seen = 0
        self.mask: Optional[int] = -1  # all ones: the AND of no masks; None once a record had no mask
        self.fewest: Optional[int] = None

    def add(self, step: int, a: object) -> Optional[DeadWindow]:
        """One full record's `a` object (None or malformed: skipped)."""
        if type(a) is not dict:
            return None
        dead = a.get("dead")
        if isinstance(dead, bool) or not isinstance(dead, (int, float)) or dead != dead:
            return None
        dead = int(dead)
        if self.first is None:
            self.first = step
        self.last = step
        self.records += 1
        self.seen += self.batch
        self.fewest = dead if self.fewest is None else min(self.fewest, dead)
        mask = _mask(a)
        self.mask = None if mask is None or self.mask is None else self.mask & mask
        if self.seen < self.examples:
            return None
        exact = self.mask is not None or self.records == 1  # one batch's count is exact on its own
        count = bin(self.mask).count("1") if self.mask is not None and self.mask >= 0 else self.fewest
        done = DeadWindow(self.first, self.last, self.records, self.seen, min(count, self.fewest), exact)
        self._reset()
        return done


def batch_of(start: dict) -> Optional[int]:
    """Examples per step of a run, from its start record (None when the record does not say: a loop of
    someone else's may not tell; each step is then judged on its own, as before windows existed)."""
    n_train = (start.get("data") or {}).get("n_train")
    batch = start.get("batch_size") or n_train
    if not isinstance(batch, int) or isinstance(batch, bool) or batch <= 0:
        return None
    return min(batch, n_train) if isinstance(n_train, int) and n_train > 0 else batch


def one_batch_windows(batch: Optional[int], examples: int) -> bool:
    """Whether every batch fills a window on its own (or the batch size is unknown)."""
    return batch is None or batch >= examples


class ExampleMeans:
    """Consecutive step losses averaged until they hold at least `examples` examples.

    The loss of a batch of one or two examples says how that example went, not how training
    goes; the mean of a few consecutive steps does. Batches of `examples` or more pass through.
    """

    __slots__ = ("size", "total", "n", "first")

    def __init__(self, batch: Optional[int], examples: float) -> None:
        self.size = 1 if batch is None else max(1, math.ceil(examples / max(1, batch)))
        self.total = 0.0
        self.n = 0
        self.first: Optional[int] = None

    def add(self, step: int, loss: float) -> Optional[tuple[int, float]]:
        """(first step, mean) when this loss completes a group, else None."""
        if self.n == 0:
            self.first = step
        self.total += loss
        self.n += 1
        if self.n < self.size:
            return None
        done = (self.first, self.total / self.n)
        self.total, self.n = 0.0, 0
        return done
