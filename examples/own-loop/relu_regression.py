"""Seed case 1 as people write it: a 1-3-1 leaky-ReLU network fitting y = x + 1 on raw integers,
weights and biases from np.random.rand (U[0, 1)), summed squared error, plain gradient descent.
Its bugs are left in; the recorder lines are the only additions.

    python examples/own-loop/relu_regression.py      # then: nnprobe diagnose runs/own-relu-regression
"""

import numpy as np

import nnprobe


def leaky_relu(z):
    return np.where(z > 0, z, 0.01 * z)


def leaky_relu_prime(z):
    return np.where(z > 0, 1.0, 0.01)


def main(out="runs/own-relu-regression", steps=300):
    np.random.seed(0)
    x = np.random.randint(0, 100, size=(100, 1)).astype(float)
    y = x + 1
    W1, b1 = np.random.rand(1, 3), np.random.rand(3)
    W2, b2 = np.random.rand(3, 1), np.random.rand(1)
    lr = 0.001

    with nnprobe.Recorder(out, loss="mse") as rec:
        rec.data(x, y)
        for step in range(steps):
            with rec.step() as s:
                z1 = x.dot(W1) + b1
                a1 = leaky_relu(z1)
                s.layer("hidden", z=z1, a=a1, W=W1, b=b1, activation="leaky_relu")
                yhat = a1.dot(W2) + b2
                s.layer("output", z=yhat, a=yhat, W=W2, b=b2, activation="identity")
                cost = np.sum((yhat - y) ** 2)  # summed, not averaged
                s.loss(cost, outputs=yhat, targets=y)

                d2 = 2 * (yhat - y)
                dW2, db2 = a1.T.dot(d2), d2.sum(axis=0)
                d1 = d2.dot(W2.T) * leaky_relu_prime(z1)
                dW1, db1 = x.T.dot(d1), d1.sum(axis=0)
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
