"""A wrong user activation: a ReLU derivative that overwrites its own argument.

This is the `reluGrad` loop people write: it sets each entry of the array it was given to
1 or 0 and returns that same array. The returned values are right, but the caller's
pre-activation z is gone: whatever reads z afterwards (nnprobe's probes, or the next line of
a hand-written backward pass) sees 0s and 1s. `nnprobe gradcheck relu-inplace.yaml` says so.
"""

import numpy as np


class ReLU:
    def forward(self, z):
        return np.maximum(z, 0)

    def derivative(self, z):
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                if z[i][j] > 0:
                    z[i][j] = 1  # BUG: writes into the caller's array
                else:
                    z[i][j] = 0
        return z
