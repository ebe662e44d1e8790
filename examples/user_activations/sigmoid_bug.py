"""A wrong user activation, as hand-written code often has it: sigmoid' written as 1 - s.

The derivative of s(z) = 1 / (1 + exp(-z)) is s * (1 - s), not 1 - s. The network still
trains a little (the sign is right), which is why this bug survives; `nnprobe gradcheck
sigmoid-bug.yaml` measures the error and `nnprobe train sigmoid-bug.yaml` refuses to start.
"""

import numpy as np


class Sigmoid:
    def forward(self, z):
        return 1 / (1 + np.exp(-z))

    def derivative(self, z):
        return 1 - self.forward(z)  # BUG: should be s * (1 - s)
