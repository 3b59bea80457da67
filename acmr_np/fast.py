"""The fast path: the textbook code's numbers, computed with less memory traffic.

Nothing here is new mathematics. Each piece is the textbook code of another module,
rearranged for speed, and tests/test_fast.py checks it against that code: bit for bit for
SGD, the penalised gradient and the ranking; for Adam to rounding (within 1e-6 relative
over a run's first steps, float32), because the fast Adam folds the bias corrections into
two scalars, the ordering Kingma & Ba give for speed, which saves two of its passes. Read
optim.py, trainer.py and metrics.py first; come here only to see how they are made fast.
The measurements behind each choice are in docs/PERFORMANCE.md.

- ``Adam`` / ``SGD``: optim.py's updates, one cache-sized block of a parameter at a time
  on the CPU, with block-long scratch buffers. The plain update makes about a dozen passes
  over p, g, m and v; on a large model each pass streams them from main memory. Block by
  block, each block is read from memory once and the passes run in the core's cache.
  On a GPU (CuPy) the same lines run as ONE fused kernel per parameter (``cupy.fuse``):
  each pass would otherwise be a kernel launch of its own, and at batch 64 the launches,
  not the arithmetic, are what a step costs there (docs/PERFORMANCE.md counts them).
  ``Adam`` can also add weight decay (c/2)||p||^2 to the objective, applying its gradient
  c p in the same pass (in the same kernel on a GPU).
- ``FastTrainer``: trainer.Trainer with those optimisers, and L_reg (Eq. 7) applied as
  the embedding player's weight decay instead of inside ACMR.loss_and_grads: the same
  parameters after every step, without the passes over every weight and gradient that
  the separate L_reg costs.
- ``argsort_desc_float32``: the stable descending order of float32 similarities by
  sorting 64-bit integer keys (metrics.py's ranking rule, several times faster on NumPy).
"""
import math
import types
import weakref

import numpy

from . import optim
from .backend import get_array_module
from .trainer import Trainer

# Elements per block of an elementwise update on the CPU: the blocks of p, g, m and v
# (256 KiB each in float32) and the scratch buffers stay in the core's caches while the
# update makes its passes over them.
BLOCK = 1 << 16


def _blockwise(p):
    """Whether the NumPy array p is updated block by block: C-contiguous and more than one
    block. Other NumPy arrays (strided views, small arrays) are updated whole. (Only the
    CPU path asks; CuPy arrays take the fused kernels, ``_fused``.)"""
    return p.size > BLOCK and p.flags.c_contiguous


def _scratch(p, n):
    """n scratch buffers for p: one block long if p is updated by blocks, p's shape
    otherwise; none on a GPU, where the fused kernel keeps its intermediates in registers."""
    xp = get_array_module(p)
    if xp is not numpy:
        return []
    return [xp.empty((BLOCK,) if _blockwise(p) else p.shape, p.dtype) for _ in range(n)]


# ---- the fused kernels (CuPy) -----------------------------------------------------------
#
# The lines below are the blocked updates' operations, in their order and on operands of
# the parameter's dtype (every constant is passed as a scalar of that dtype, never as a
# Python float that a kernel could take as float64), so each intermediate is rounded as
# NumPy rounds it: on tests/cupy_standin.py, which runs them with NumPy, the fused update
# equals the blocked one bit for bit (tests/test_cupy_path.py). A real GPU compiler may
# contract a * b + c into one fused multiply-add, which can move the last bit.

_KERNELS = weakref.WeakKeyDictionary()  # array module -> its fused kernels, made once


def _fused(xp):
    """The fused update kernels of the array module xp (CuPy). ``cupy.fuse`` compiles a
    kernel on its first call for each set of argument types and keeps it in the object it
    returns, so those objects are made once per module and kept."""
    kernels = _KERNELS.get(xp)
    if kernels is None:
        kernels = _KERNELS[xp] = _make_fused(xp)
    return kernels


def _make_fused(xp):
    # BEGIN SOLUTION
    sqrt = xp.sqrt

    def adam(p, g, m, v, b1, one_minus_b1, b2, one_minus_b2, lr_t, eps_t):
        m *= b1                                   # m <- b1 m + (1 - b1) g
        m += g * one_minus_b1
        v *= b2                                   # v <- b2 v + (1 - b2) g^2
        v += g * g * one_minus_b2
        p -= m / (sqrt(v) + eps_t) * lr_t         # lr_t m / (sqrt(v) + eps_t), as Adam.step

    def adam_decay(p, g, m, v, c, *constants):
        adam(p, p * c + g, m, v, *constants)      # the penalised gradient g + c p, from p before the step

    def sgd(p, g, v, momentum, lr):
        v *= momentum                             # v <- momentum v + g
        v += g
        p -= v * lr

    def penalty(*terms):
        """terms = (h_1, d_1, h_2, d_2, ...) -> h_1 d_1 + h_2 d_2 + ..., added in this order."""
        total = terms[0] * terms[1]
        for i in range(2, len(terms), 2):
            total = total + terms[i] * terms[i + 1]
        return total

    return types.SimpleNamespace(
        adam=xp.fuse(kernel_name="acmr_adam")(adam),
        adam_decay=xp.fuse(kernel_name="acmr_adam_decay")(adam_decay),
        sgd=xp.fuse(kernel_name="acmr_sgd")(sgd),
        penalty=xp.fuse(kernel_name="acmr_penalty")(penalty))
    # END SOLUTION


def _blocks(arrays, scratch):
    """Pairs (the arrays' block, the scratch buffers cut to it), one per block.

    arrays = (p, g, *state): the parameter, its gradient and its state arrays (all of p's
    shape). Views, so updating a block updates the array. A parameter updated whole comes
    back as one pair of the whole arrays."""
    if not _blockwise(arrays[0]):
        return [(tuple(arrays), tuple(scratch))]
    p, g, *state = arrays
    # p is C-contiguous (_blockwise) and so are its state arrays (zeros_like(p)), so these
    # reshapes are views; only a strided gradient, which is only read, is copied.
    flat = [p.reshape(-1), numpy.ascontiguousarray(g).reshape(-1)] + [a.reshape(-1) for a in state]
    n = p.size
    return [(tuple(a[i:i + BLOCK] for a in flat), tuple(s[:min(BLOCK, n - i)] for s in scratch))
            for i in range(0, n, BLOCK)]


class SGD(optim.SGD):
    """optim.SGD, block by block (one fused kernel per parameter on CuPy): the same numbers."""

    def __init__(self, params, lr=0.01, momentum=0.9):
        super().__init__(params, lr, momentum)
        self.scratch = {k: _scratch(p, 1) for k, p in params.items()}

    def step(self, grads):
        # BEGIN SOLUTION
        self.check(grads)
        self.t += 1
        xp = get_array_module(next(iter(self.params.values())))
        if xp is not numpy:
            fused = _fused(xp)
            for k, p in self.params.items():
                dt = p.dtype.type
                fused.sgd(p, grads[k], self.state["velocity"][k], dt(self.momentum), dt(self.lr))
            return
        for k in self.params:
            arrays = (self.params[k], grads[k], self.state["velocity"][k])
            for (p, g, v), (s,) in _blocks(arrays, self.scratch[k]):   # xp is NumPy here
                v *= self.momentum
                v += g
                xp.multiply(v, self.lr, out=s)   # lr * v
                p -= s
        # END SOLUTION


class Adam(optim.Adam):
    """optim.Adam, block by block (one fused kernel per parameter on CuPy), with the bias
    corrections folded into the step size and optional weight decay: optim.Adam's
    numbers up to rounding.

    weight_decay ({name: c}, optional) adds (c/2)||p||^2 to the objective for those
    parameters: their update uses g + c p (``grads`` itself is left as it is), exactly the
    gradient that objective has. ``step`` returns the penalty's value, summed over those
    parameters at the weights before the update (a 0-d array; zero without decay).
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=None):
        super().__init__(params, lr, beta1, beta2, eps)
        self.weight_decay = {k: float(c) for k, c in (weight_decay or {}).items()}
        unknown = sorted(set(self.weight_decay) - set(params))
        if unknown:
            raise ValueError(f"Adam: weight_decay names parameters it does not optimise: {unknown}")
        if not all(c >= 0 for c in self.weight_decay.values()):
            raise ValueError(f"Adam: weight decay coefficients must be >= 0, got {self.weight_decay}")
        # a buffer for the update's intermediate terms, a second for g + c p
        self.scratch = {k: _scratch(p, 2 if k in self.weight_decay else 1) for k, p in params.items()}

    def step(self, grads):
        # BEGIN SOLUTION
        self.check(grads)
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        corr2 = math.sqrt(1 - b2 ** self.t)
        lr_t, eps_t = self.lr * corr2 / (1 - b1 ** self.t), self.eps * corr2
        first = next(iter(self.params.values()))
        if get_array_module(first) is not numpy:
            return self._fused_step(grads, lr_t, eps_t)
        xp = numpy  # the CPU path: device arrays took the fused kernels above
        penalty = xp.zeros((), dtype=first.dtype)
        for k in self.params:
            c = self.weight_decay.get(k, 0.0)
            arrays = (self.params[k], grads[k], self.state["m"][k], self.state["v"][k])
            for (p, g, m, v), scratch in _blocks(arrays, self.scratch[k]):
                s1 = scratch[0]
                if c:
                    # (c/2)||p||^2 and the penalised gradient g + c p, while p is in cache
                    penalty = penalty + (c / 2) * xp.vdot(p, p)
                    g_pen = scratch[1]
                    xp.multiply(p, c, out=g_pen)
                    g_pen += g
                    g = g_pen
                # optim.Adam.step's update with the bias corrections folded into two
                # scalars (Kingma & Ba's own efficient ordering, Section 2):
                #   lr m_hat / (sqrt(v_hat) + eps) = lr_t m / (sqrt(v) + eps_t),
                #   lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),  eps_t = eps sqrt(1 - b2^t):
                # the same value, two passes fewer, equal to the textbook's up to rounding.
                xp.multiply(g, 1 - b1, out=s1)   # m <- b1 m + (1 - b1) g
                m *= b1
                m += s1
                xp.multiply(g, g, out=s1)        # v <- b2 v + (1 - b2) g^2
                s1 *= 1 - b2
                v *= b2
                v += s1
                xp.sqrt(v, out=s1)               # lr_t m / (sqrt(v) + eps_t)
                s1 += eps_t
                xp.divide(m, s1, out=s1)
                s1 *= lr_t
                p -= s1
        return penalty
        # END SOLUTION

    def _fused_step(self, grads, lr_t, eps_t):
        """``step`` on CuPy: one kernel per parameter (the weight decay's penalised gradient
        inside it), one dot product per decayed parameter and one kernel adding the
        penalty's terms up. The updates are the blocked path's, bit for bit; the penalty
        (only logged) is summed per parameter, where the CPU sums it per block: the same
        value up to rounding for parameters longer than a block."""
        # BEGIN SOLUTION
        first = next(iter(self.params.values()))
        xp = get_array_module(first)
        fused = _fused(xp)
        b1, b2 = self.beta1, self.beta2
        terms = []
        for k, p in self.params.items():
            dt = p.dtype.type
            constants = (dt(b1), dt(1 - b1), dt(b2), dt(1 - b2), dt(lr_t), dt(eps_t))
            c = self.weight_decay.get(k, 0.0)
            if c:
                terms += [dt(c / 2), xp.vdot(p, p)]   # (c/2)||p||^2 at p before the update
                fused.adam_decay(p, grads[k], self.state["m"][k], self.state["v"][k], dt(c), *constants)
            else:
                fused.adam(p, grads[k], self.state["m"][k], self.state["v"][k], *constants)
        return fused.penalty(*terms) if terms else xp.zeros((), dtype=first.dtype)
        # END SOLUTION


class FastTrainer(Trainer):
    """trainer.Trainer on the fast optimisers, with L_reg (Eq. 7) as weight decay.

    l2 ||W||^2 is the penalty (c/2)||W||^2 with c = 2 l2, so the embedding player's fast
    Adam gets weight decay 2 l2 on the weights L_reg penalises, and the step asks
    loss_and_grads for every other term (l_reg=False). The gradient Adam uses is then
    g + 2 l2 W, bit for bit the one loss_and_grads would have returned, and the
    parameters after each step are the textbook Trainer's up to the rounding of the
    folded Adam (tests/test_model.py). The logged L_reg is Adam's sum of dot products
    instead of l2_penalty's sum of squares: equal up to rounding.
    """

    def make_optimizers(self):
        # BEGIN SOLUTION
        m, c = self.model, self.model.config
        decay = {name: 2.0 * c.l2 for name in m.l_reg_weights()} if c.l2 else None
        self.opt_emb = Adam(m.named("params", m.EMBEDDING_PARTS), lr=c.lr, weight_decay=decay)
        self.opt_adv = Adam(m.named("params", m.ADVERSARY_PARTS), lr=c.lr_adv or c.lr)
        # END SOLUTION

    def train_step(self, img, txt, labels, noise, progress):
        # BEGIN SOLUTION
        m = self.model
        lam = m.config.lam_at(progress)
        terms = m.loss_and_grads(img, txt, labels, noise, lam, l_reg=False)
        terms["L_reg"] = self.opt_emb.step(m.named("grads", m.EMBEDDING_PARTS))
        if self.step_count % m.config.k == 0:
            self.opt_adv.step(m.named("grads", m.ADVERSARY_PARTS))
        self.step_count += 1
        return terms, lam
        # END SOLUTION


def argsort_desc_float32(sim):
    """The stable descending order of each row of a float32 NumPy sim (c, ng), by
    sorting integers: NumPy's plain sort of 64-bit integers is several times faster than
    its stable argsort (it uses SIMD sorting networks where the CPU has them).

    Each entry becomes one 64-bit key: the high 32 bits are the similarity, as an
    integer that grows as the similarity falls, the low 32 bits its gallery index.
    (IEEE float bits, read as a signed integer, order non-negative floats like their
    values and negative ones in reverse; XOR-ing the low 31 bits of the non-negative
    ones turns that into one descending order, with every non-negative key below
    every negative one.) The keys are distinct, so their order is unique: by
    similarity, highest first, equal similarities by index, ascending, exactly as the
    stable sort. Adding 0.0 first turns -0.0 into 0.0: equal values, equal keys.
    Temporaries are updated in place: at this size (c x ng) memory is the cost.
    """
    bits = (sim + numpy.float32(0.0)).view(numpy.int32)
    flip = ~bits
    flip >>= 31                        # -1 (all ones) where sim >= 0, else 0
    flip &= 0x7FFFFFFF
    flip ^= bits                       # the descending key, as a 32-bit pattern
    key = flip.view(numpy.uint32).astype(numpy.uint64)
    key <<= numpy.uint64(32)
    key |= numpy.arange(sim.shape[1], dtype=numpy.uint64)
    key.sort(axis=1)
    key &= numpy.uint64(0xFFFFFFFF)    # keep the indices (< 2**32, so int64 reads them)
    return key.view(numpy.int64)
