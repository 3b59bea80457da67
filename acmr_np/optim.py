"""Optimisers, written out by hand.

An optimiser is built on a dict of named parameter arrays, ``{name: array}``, and
``step(grads)`` takes a dict with the same names and updates every array IN PLACE.
In place matters: the layers hold the very same array objects in their ``params``,
so there is nothing to copy back, and no parameter-sized temporaries are allocated
per step (the update streams over every parameter once per step; on large models that
memory traffic, not arithmetic, is its cost). One scratch buffer per parameter holds the
intermediate terms.

``state_dict()`` / ``load_state_dict()`` carry the full state (moments and step count)
so that a resumed run continues bit for bit.
"""
import math

import numpy

from .backend import get_array_module, to_device, to_host


# Elements per block of an elementwise update on the CPU: the five blocks of one
# parameter (p, g, m, v, scratch) take 5 x 256 KiB and stay in a core's L2 cache while
# the update makes its dozen passes over them, instead of streaming every pass from
# main memory (19.7 -> 14.3 ms a step for the 11.2 M parameters of the deep setting on a
# 2-core Zen 5; docs/PERFORMANCE.md). The result is the same, bit for bit.
_BLOCK = 1 << 16


def _blocks(arrays):
    """Matching flat blocks of same-shaped C-contiguous NumPy arrays (views: updating a
    block updates the array). Other arrays (CuPy: one kernel per pass is what a GPU
    wants) and small ones come back whole."""
    if get_array_module(arrays[0]) is not numpy or arrays[0].size <= _BLOCK \
            or not all(a.flags.c_contiguous for a in arrays):
        return [arrays]
    flat = [a.reshape(-1) for a in arrays]
    return [tuple(a[i:i + _BLOCK] for a in flat) for i in range(0, flat[0].size, _BLOCK)]


class _Optimizer:
    slots = ()  # names of the per-parameter state arrays

    def __init__(self, params, lr):
        if not params:
            raise ValueError(f"{type(self).__name__}: no parameters to optimise")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be positive, got {lr}")
        self.params, self.lr, self.t = params, float(lr), 0
        self.state = {s: {k: get_array_module(p).zeros_like(p) for k, p in params.items()}
                      for s in self.slots + ("scratch",)}

    def _check(self, grads):
        if grads.keys() != self.params.keys():
            missing = sorted(set(self.params) - set(grads))
            extra = sorted(set(grads) - set(self.params))
            raise ValueError(f"{type(self).__name__}.step: gradient names differ from the "
                             f"parameters (missing {missing}, unexpected {extra})")

    def state_dict(self):
        """Host copies of the step count and every state array, names 'slot/param'."""
        out = {"t": self.t}
        out.update({f"{s}/{k}": to_host(a) for s in self.slots for k, a in self.state[s].items()})
        return out

    def load_state_dict(self, d):
        self.t = int(d["t"])
        for s in self.slots:
            for k, a in self.state[s].items():
                a[...] = to_device(d[f"{s}/{k}"], get_array_module(a), a.dtype)


class SGD(_Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum.

      v <- momentum * v + g
      p <- p - lr * v
    momentum = 0 gives plain SGD.
    """
    slots = ("velocity",)

    def __init__(self, params, lr=0.01, momentum=0.9):
        super().__init__(params, lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)

    def step(self, grads):
        self._check(grads)
        self.t += 1
        for k, p in self.params.items():
            v, s = self.state["velocity"][k], self.state["scratch"][k]
            v *= self.momentum
            v += grads[k]
            get_array_module(p).multiply(v, self.lr, out=s)
            p -= s


class Adam(_Optimizer):
    """Adam (Kingma & Ba, 2015), in the form of their Algorithm 1 with the bias
    corrections folded into the step size:

      m <- b1 m + (1 - b1) g
      v <- b2 v + (1 - b2) g^2
      p <- p - lr_t m / (sqrt(v) + eps_t),
      lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),   eps_t = eps sqrt(1 - b2^t)

    which equals lr m_hat / (sqrt(v_hat) + eps) with m_hat = m/(1-b1^t),
    v_hat = v/(1-b2^t), at two scalar operations instead of two array passes.
    """
    slots = ("m", "v")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params, lr)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {beta1}, {beta2}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def step(self, grads):
        self._check(grads)
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        corr2 = math.sqrt(1.0 - b2 ** self.t)
        lr_t = self.lr * corr2 / (1.0 - b1 ** self.t)
        eps_t = self.eps * corr2
        for k, param in self.params.items():
            arrays = (param, grads[k], self.state["m"][k], self.state["v"][k], self.state["scratch"][k])
            for p, g, m, v, s in _blocks(arrays):  # views of the arrays, updated in place
                xp = get_array_module(p)
                # m <- b1 m + (1 - b1) g
                xp.multiply(g, 1.0 - b1, out=s)
                m *= b1
                m += s
                # v <- b2 v + (1 - b2) g^2
                xp.multiply(g, g, out=s)
                s *= 1.0 - b2
                v *= b2
                v += s
                # p <- p - lr_t m / (sqrt(v) + eps_t)
                xp.sqrt(v, out=s)
                s += eps_t
                xp.divide(m, s, out=s)
                s *= lr_t
                p -= s
