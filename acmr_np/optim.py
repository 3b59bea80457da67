"""Optimisers, written out by hand.

An optimiser is built on a dict of named parameter arrays, ``{name: array}``, and
``step(grads)`` takes a dict with the same names and updates every array IN PLACE.
In place matters: the layers hold the very same array objects in their ``params``,
so there is nothing to copy back, and no parameter-sized temporaries are allocated
per step (the update streams over every parameter once per step; on large models that
memory traffic, not arithmetic, is its cost). Preallocated scratch buffers hold the
intermediate terms.

``state_dict()`` / ``load_state_dict()`` carry the full state (moments and step count)
so that a resumed run continues bit for bit.
"""
import math

import numpy

from .backend import get_array_module, to_device, to_host


# Elements per block of an elementwise update on the CPU. A large parameter is updated
# one block at a time: the blocks of p, g, m and v (256 KiB each in float32) and the
# scratch buffers, which are one block long and reused for every block, stay in the
# core's caches while the update makes its dozen passes over them. So p, g, m and v are
# read from main memory once per step (and p, m, v written once) instead of once per
# pass (19.7 -> 14.3 ms a step for the 11.2 M parameters of the deep setting on a 2-core
# Zen 5; docs/PERFORMANCE.md). The result is the same, bit for bit.
_BLOCK = 1 << 16


def _blockwise(p):
    """Whether p is updated block by block: a C-contiguous NumPy array of more than one
    block. Other arrays (CuPy: one kernel per pass is what a GPU wants; strided views;
    small arrays) are updated whole."""
    return get_array_module(p) is numpy and p.size > _BLOCK and p.flags.c_contiguous


def _scratch(p, n):
    """n scratch buffers for updating p: one block long if p is updated block by block,
    p's shape otherwise."""
    xp = get_array_module(p)
    return tuple(xp.empty((_BLOCK,) if _blockwise(p) else p.shape, p.dtype) for _ in range(n))


def _blocks(arrays, scratch):
    """Pairs (arrays' block, scratch's block), one per block of the parameter:
    arrays = (p, g, *state) are the parameter, its gradient and its same-shaped state
    arrays, scratch the optimiser's buffers for p (cut to the block's length). Views, so
    updating a block updates the array. A parameter updated whole comes back as one pair
    of the whole arrays."""
    if not _blockwise(arrays[0]):
        return [(tuple(arrays), tuple(scratch))]
    p, g, *state = arrays
    # p is C-contiguous (_blockwise) and so are its state arrays (zeros_like(p)), so these
    # reshapes are views; only a strided gradient, which is only read, is copied.
    flat = [p.reshape(-1), numpy.ascontiguousarray(g).reshape(-1)] + [a.reshape(-1) for a in state]
    n = p.size
    return [(tuple(a[i:i + _BLOCK] for a in flat), tuple(s[:min(_BLOCK, n - i)] for s in scratch))
            for i in range(0, n, _BLOCK)]


class _Optimizer:
    slots = ()  # names of the per-parameter state arrays

    def __init__(self, params, lr):
        if not params:
            raise ValueError(f"{type(self).__name__}: no parameters to optimise")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be positive, got {lr}")
        self.params, self.lr, self.t = params, float(lr), 0
        self.state = {s: {k: get_array_module(p).zeros_like(p) for k, p in params.items()}
                      for s in self.slots}
        self.scratch = {k: _scratch(p, 1) for k, p in params.items()}  # for intermediate terms

    def _check(self, grads):
        if grads.keys() != self.params.keys():
            missing = sorted(set(self.params) - set(grads))
            extra = sorted(set(grads) - set(self.params))
            raise ValueError(f"{type(self).__name__}.step: gradient names differ from the "
                             f"parameters (missing {missing}, unexpected {extra})")
        for k, p in self.params.items():
            if tuple(grads[k].shape) != tuple(p.shape):
                raise ValueError(f"{type(self).__name__}.step: gradient {k} has shape "
                                 f"{tuple(grads[k].shape)}, the parameter {tuple(p.shape)}")

    def _arrays(self, k, grads):
        """The parameter k, its gradient and its state arrays, in slot order."""
        return (self.params[k], grads[k]) + tuple(self.state[s][k] for s in self.slots)

    def state_dict(self):
        """Host copies of the step count and every state array, names 'slot/param'."""
        out = {"t": self.t}
        out.update({f"{s}/{k}": to_host(a) for s in self.slots for k, a in self.state[s].items()})
        return out

    def load_state_dict(self, d):
        want = {f"{s}/{k}" for s in self.slots for k in self.params} | {"t"}
        if set(d) != want:
            raise ValueError(f"{type(self).__name__}: the saved state does not fit: missing "
                             f"{sorted(want - set(d))[:5]}, unexpected {sorted(set(d) - want)[:5]}")
        for s in self.slots:
            for k, a in self.state[s].items():
                if tuple(d[f"{s}/{k}"].shape) != tuple(a.shape):
                    raise ValueError(f"{type(self).__name__}: the saved {s}/{k} has shape "
                                     f"{tuple(d[f'{s}/{k}'].shape)}, the parameter {tuple(a.shape)}")
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
        for k in self.params:
            for (p, g, v), (s,) in _blocks(self._arrays(k, grads), self.scratch[k]):  # views, updated in place
                v *= self.momentum
                v += g
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

    ``weight_decay`` ({name: c}, optional) adds an L2 penalty (c/2) ||p||^2 to the
    objective for those parameters: the update above then uses g + c p, the penalised
    gradient (``grads`` itself is left as it is), and ``step`` returns the penalty's
    value, summed over those parameters, at the weights the gradients belong to (the
    weights before this update). ACMR's L_reg = l2 ||W||^2 (Eq. 7) is this penalty with
    c = 2 l2 (model.Trainer). Done here, it costs a dot product and two passes over
    blocks already in cache; done in the loss, it costs passes over every weight and its
    gradient in main memory (docs/PERFORMANCE.md).
    """
    slots = ("m", "v")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=None):
        super().__init__(params, lr)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {beta1}, {beta2}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.weight_decay = {k: float(c) for k, c in (weight_decay or {}).items()}
        unknown = sorted(set(self.weight_decay) - set(params))
        if unknown:
            raise ValueError(f"Adam: weight_decay names parameters it does not optimise: {unknown}")
        if not all(c >= 0 for c in self.weight_decay.values()):
            raise ValueError(f"Adam: weight decay coefficients must be >= 0, got {self.weight_decay}")
        for k in self.weight_decay:  # a second buffer, for g + c p
            self.scratch[k] += _scratch(params[k], 1)

    def step(self, grads):
        """Update every parameter in place. Returns the weight-decay penalty
        sum_k c_k/2 ||p_k||^2 on the parameters' backend (a zero without weight decay)."""
        self._check(grads)
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        corr2 = math.sqrt(1.0 - b2 ** self.t)
        lr_t = self.lr * corr2 / (1.0 - b1 ** self.t)
        eps_t = self.eps * corr2
        first = next(iter(self.params.values()))
        penalty = get_array_module(first).zeros((), dtype=first.dtype)
        for k in self.params:
            c = self.weight_decay.get(k, 0.0)
            for (p, g, m, v), scratch in _blocks(self._arrays(k, grads), self.scratch[k]):  # views
                xp = get_array_module(p)
                s = scratch[0]
                if c:
                    # The penalty (c/2) ||p||^2, and the penalised gradient g + c p, while p
                    # is in cache. g + c p goes to a scratch buffer and the update below reads
                    # it as g: the caller's gradient array is never written.
                    penalty = penalty + (c / 2) * xp.vdot(p, p)
                    g_pen = scratch[1]
                    xp.multiply(p, c, out=g_pen)
                    g_pen += g
                    g = g_pen
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
        return penalty
