"""Seed case 3 as people write it: a three-class spiral classifier whose hidden layer went from
sigmoid to a (leaky, slope 1e-4) ReLU. It keeps the cost it had before, the binary cross-entropy
formula with a small value inside the logs, now on a softmax output, plus L2; large steps; and a
reluGrad that writes 0 and 1 into the array it is given, here z itself. Its bugs are left in; the
recorder lines are the only additions.

    python examples/own-loop/relu_accuracy.py      # then: nnprobe diagnose runs/own-relu-accuracy
"""

import numpy as np

import nnprobe


def relu(arg):
    return 1 * (arg < 0) * 0.0001 * arg + (arg >= 0) * arg


def reluGrad(arg):
    for i in range(arg.shape[0]):
        for j in range(arg.shape[1]):
            if arg[i][j] > 0:
                arg[i][j] = 1
            else:
                arg[i][j] = 0
    return arg


def softmax(x):
    e_x = np.exp(x - np.max(x, axis=1, keepdims=True))
    return e_x / e_x.sum(axis=1, keepdims=True)


def spirals(n_per_class, k, rng):
    X, labels = [], []
    for c in range(k):
        r = np.linspace(0.0, 1, n_per_class)
        t = np.linspace(c * 4, (c + 1) * 4, n_per_class) + rng.normal(size=n_per_class) * 0.2
        X.append(np.c_[r * np.sin(t), r * np.cos(t)])
        labels += [c] * n_per_class
    return np.vstack(X), np.array(labels)


def main(out="runs/own-relu-accuracy", epochs=300):
    rng = np.random.default_rng(0)
    data, labels = spirals(100, 3, rng)
    output = np.eye(3)[labels]
    n = len(data)
    theta1, bias1 = rng.normal(size=(2, 20)), np.zeros(20)
    theta2, bias2 = rng.normal(size=(20, 3)), np.zeros(3)
    alpha, lamb, eps = 5.0, 0.001, 1e-8

    with nnprobe.Recorder(out, loss="bce") as rec:
        rec.data(data, labels)
        for epoch in range(epochs):
            with rec.step() as s:
                z2 = data.dot(theta1) + bias1
                a2 = relu(z2)
                s.layer("hidden", z=z2, a=a2, W=theta1, b=bias1, activation="leaky_relu")
                z3 = a2.dot(theta2) + bias2
                a3 = softmax(z3)
                s.layer("output", z=z3, a=a3, W=theta2, b=bias2, activation="softmax")
                cost = -(output * np.log(a3 + eps) + (1 - output) * np.log(1 - a3 + eps)).sum()
                cost = cost / n + lamb / (2 * n) * ((theta1 ** 2).sum() + (theta2 ** 2).sum())
                s.loss(cost, outputs=a3, targets=output)

                sigma3 = a3 - output
                sigma2 = sigma3.dot(theta2.T) * reluGrad(z2)  # writes into z2
                grad2 = a2.T.dot(sigma3) / n + lamb / n * theta2
                grad1 = data.T.dot(sigma2) / n + lamb / n * theta1
                gb2, gb1 = sigma3.sum(axis=0) / n, sigma2.sum(axis=0) / n
                s.grads("output", gW=grad2, gb=gb2)
                s.grads("hidden", gW=grad1, gb=gb1)

                theta1 = theta1 - alpha * grad1
                theta2 = theta2 - alpha * grad2
                bias1 = bias1 - alpha * gb1
                bias2 = bias2 - alpha * gb2
            if rec.stopped:
                break
    return rec.result


if __name__ == "__main__":
    result = main()
    print(result.status, [f.code for f in result.findings])
