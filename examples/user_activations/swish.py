"""A correct user activation: Swish (SiLU), a = z * sigmoid(z).

`nnprobe gradcheck swish.yaml` passes: derivative(z) is the derivative of forward(z).
"""

import numpy as np


def _sigmoid(z):
    # exp of a non-positive number only: no overflow for large |z|
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


class Swish:
    """a = z * s(z);  a' = s(z) + z * s(z) * (1 - s(z)),  s = sigmoid"""

    def forward(self, z):
        return z * _sigmoid(z)

    def derivative(self, z):
        s = _sigmoid(z)
        return s + z * s * (1 - s)
