"""Seed case 4 as people write it: cross-entropy on a ReLU output. The outputs are not
probabilities: some are exactly 0 (log(0)) and some above 1 (log of a negative number). Its bug
is left in; the recorder lines are the only additions.

    python examples/own-loop/relu_output_ce.py      # then: nnprobe diagnose runs/own-relu-output-ce
"""

import numpy as np

import nnprobe


def relu(z):
    return np.maximum(z, 0)


def moons(n, rng):
    t = rng.uniform(0, np.pi, n)
    upper = np.arange(n) % 2 == 0
    X = np.where(upper[:, None], np.c_[np.cos(t), np.sin(t)], np.c_[1 - np.cos(t), 0.5 - np.sin(t)])
    return X + rng.normal(scale=0.1, size=X.shape), (~upper).astype(float).reshape(-1, 1)


def main(out="runs/own-relu-output-ce", epochs=300):
    rng = np.random.default_rng(0)
    X, y = moons(200, rng)
    n = len(X)
    W1, b1 = rng.normal(size=(2, 8)) * np.sqrt(2 / 2), np.zeros(8)
    W2, b2 = rng.normal(size=(8, 1)) * np.sqrt(2 / 8), np.zeros(1)
    lr = 0.1

    with nnprobe.Recorder(out, loss="bce") as rec:
        rec.data(X, y)
        for epoch in range(epochs):
            with rec.step() as s:
                z1 = X @ W1 + b1
                a1 = relu(z1)
                s.layer("hidden", z=z1, a=a1, W=W1, b=b1, activation="relu")
                z2 = a1 @ W2 + b2
                a2 = relu(z2)
                s.layer("output", z=z2, a=a2, W=W2, b=b2, activation="relu")
                cost = -np.mean(y * np.log(a2) + (1 - y) * np.log(1 - a2))
                s.loss(cost, outputs=a2, targets=y)

                da2 = -(y / a2 - (1 - y) / (1 - a2)) / n
                dz2 = da2 * (z2 > 0)
                dW2, db2 = a1.T @ dz2, dz2.sum(axis=0)
                dz1 = (dz2 @ W2.T) * (z1 > 0)
                dW1, db1 = X.T @ dz1, dz1.sum(axis=0)
                s.grads("output", gW=dW2, gb=db2)
                s.grads("hidden", gW=dW1, gb=db1)

                W1 -= lr * dW1
                b1 -= lr * db1
                W2 -= lr * dW2
                b2 -= lr * db2
            if rec.stopped:
                break
    return rec.result


if __name__ == "__main__":
    result = main()
    print(result.status, [f.code for f in result.findings])
