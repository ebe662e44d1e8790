"""Every random stream of a run, derived from the config's `seed` in this one place.

The seed's SeedSequence is split into independent children: the data (generated points and the
validation split), the initial weights, and the batch order. `train`, the static checks (which
build the start record without training), gradcheck and the bench all take their streams from
here, so a config sees the same data and the same initial network whichever of them runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: mixed into the seed for gradcheck's sample of entries to perturb (a stream apart from the run's)
_GRADCHECK = 0x6763


@dataclass(frozen=True)
class RunSeeds:
    """The independent seed sequences of one run; `rng(...)` makes a fresh generator from one."""

    data: np.random.SeedSequence
    init: np.random.SeedSequence
    shuffle: np.random.SeedSequence


def run_seeds(seed: int) -> RunSeeds:
    data, init, shuffle = np.random.SeedSequence(seed).spawn(3)
    return RunSeeds(data, init, shuffle)


def data_rng(seed: int) -> np.random.Generator:
    """The generator `load_dataset` draws a run's examples and validation split from."""
    return np.random.default_rng(run_seeds(seed).data)


def gradcheck_rng(seed: int) -> np.random.Generator:
    """The generator gradcheck samples its batch and its entries from."""
    return np.random.default_rng(np.random.SeedSequence([seed, _GRADCHECK]))
