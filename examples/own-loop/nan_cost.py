"""Seed case 2 as people write it: a two-class classifier with a sigmoid output and the textbook
cross-entropy, -mean(y log p + (1 - y) log(1 - p)), in float32. The cost falls for hundreds of
epochs, then turns into NaN. Its bug is left in; the recorder lines are the only additions.

    python examples/own-loop/nan_cost.py      # then: nnprobe diagnose runs/own-nan-cost
"""

import numpy as np

import nnprobe


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def main(out="runs/own-nan-cost", epochs=600):
    rng = np.random.default_rng(0)
    n = 200
    y = (np.arange(n) % 2).astype(np.float32).reshape(-1, 1)
    centres = np.array([[-4.0, 0.0], [4.0, 0.0]])
    X = (centres[y[:, 0].astype(int)] + rng.normal(size=(n, 2))).astype(np.float32)
    W1 = (rng.normal(size=(2, 16)) * np.sqrt(2 / 2)).astype(np.float32)
    b1 = np.zeros(16, dtype=np.float32)
    W2 = (rng.normal(size=(16, 1)) * np.sqrt(2 / 16)).astype(np.float32)
    b2 = np.zeros(1, dtype=np.float32)
    lr = np.float32(0.1)

    with nnprobe.Recorder(out, loss="bce") as rec:
        rec.data(X, y)
        for epoch in range(epochs):
            with rec.step() as s:
                z1 = X @ W1 + b1
                a1 = np.maximum(z1, 0)
                s.layer("hidden", z=z1, a=a1, W=W1, b=b1, activation="relu")
                z2 = a1 @ W2 + b2
                p = sigmoid(z2)
                s.layer("output", z=z2, a=p, W=W2, b=b2, activation="sigmoid")
                cost = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
                s.loss(cost, outputs=p, targets=y)

                dz2 = (p - y) / n
                dW2, db2 = a1.T @ dz2, dz2.sum(axis=0)
                dz1 = (dz2 @ W2.T) * (z1 > 0)
                dW1, db1 = X.T @ dz1, dz1.sum(axis=0)
                s.grads("hidden", gW=dW1, gb=db1)
                s.grads("output", gW=dW2, gb=db2)

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
