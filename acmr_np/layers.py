"""Layers with hand-written backward passes.

Every layer has the same small interface:

    out = layer.forward(x)     # keeps what backward needs (the "cache")
    dx = layer.backward(dout)  # dout = dL/d(out); returns dL/dx and fills layer.grads
                               # (a Linear with input_grad=False returns None: its input is data)

``layer.params`` and ``layer.grads`` are dicts with the same keys; layers without
parameters have empty ones. ``backward`` overwrites ``grads`` (it never accumulates),
so each forward is followed by at most one backward.

Shapes: N rows (the mini-batch), D input features, M output features.
The array module ``xp`` (NumPy or CuPy) is taken from the arrays themselves, so the
same lines run on both backends.
"""
import math

import numpy

from .backend import get_array_module, to_device


def _check_2d(x, width, who):
    """Reject an input that is not (N, width): name the layer and both shapes."""
    if x.ndim != 2 or (width is not None and x.shape[1] != width):
        want = f"(N, {width})" if width is not None else "(N, D)"
        raise ValueError(f"{who}: expected input of shape {want}, got {tuple(x.shape)}")


class Standardize:
    """Per-feature standardisation y = (x - mean) / std, with statistics fitted on the
    training set (``fit``), not learnt.   forward: x (N, D) -> y (N, D).

    tanh layers need inputs of unit scale, and raw features rarely have it (the classic
    Wikipedia image features are histograms whose entries are around 1/128). Kept as the
    first layer of each projector, the map travels with the model: training, evaluation
    and new data all go through exactly the same one. ``forward`` also moves its input to
    the layer's backend and dtype, so raw host features of any float dtype can be given.
    Before ``fit`` it is the identity (mean 0, std 1).
    """

    def __init__(self, dim, *, xp=numpy, dtype=numpy.float32):
        self.params, self.grads = {}, {}
        self.dim = int(dim)
        self.mean, self.std = xp.zeros(self.dim, dtype), xp.ones(self.dim, dtype)

    def fit(self, x):
        """Set mean and std from training features x (n, D), computed in float64; a
        constant feature gets std 1 (it is then only shifted to 0)."""
        _check_2d(x, self.dim, f"Standardize({self.dim}).fit")
        xp = get_array_module(self.mean)
        x = to_device(x, xp, numpy.float64)
        std = x.std(axis=0)
        self.mean[...] = x.mean(axis=0)
        self.std[...] = xp.where(std > 1e-12, std, 1.0)

    def forward(self, x):
        _check_2d(x, self.dim, f"Standardize({self.dim})")
        x = to_device(x, get_array_module(self.mean), self.mean.dtype)
        return (x - self.mean) / self.std

    def backward(self, dout):
        # y = (x - mean) / std elementwise, so dy/dx = 1 / std
        return dout / self.std


class Linear:
    """Affine map y = x W + b.

    params: W (D, M), b (M,).   forward: x (N, D) -> y (N, M).

    Initialisation (Glorot & Bengio, 2010, uniform): W ~ U(-a, a) with
    a = sqrt(6 / (D + M)), which keeps the variance of tanh activations roughly
    constant from layer to layer; b = 0. The weights are drawn on the host from
    ``rng`` (a numpy.random.Generator) and then moved to ``xp``, so NumPy and CuPy
    runs start from identical numbers.
    """

    def __init__(self, in_dim, out_dim, *, rng, xp=numpy, dtype=numpy.float32):
        if int(in_dim) < 1 or int(out_dim) < 1:
            raise ValueError(f"Linear: sizes must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        limit = math.sqrt(6.0 / (self.in_dim + self.out_dim))
        W = rng.uniform(-limit, limit, size=(self.in_dim, self.out_dim))
        self.params = {"W": to_device(W, xp, dtype), "b": xp.zeros(self.out_dim, dtype=dtype)}
        self.grads = {k: xp.zeros_like(v) for k, v in self.params.items()}
        self.x = None
        # False where nothing below needs dL/dx (the first layer of a network whose input
        # is data): backward then skips the (N, M) x (M, D) product and returns None.
        self.input_grad = True

    def forward(self, x):
        _check_2d(x, self.in_dim, f"Linear({self.in_dim}, {self.out_dim})")
        # BEGIN SOLUTION
        self.x = x
        y = x @ self.params["W"]
        y += self.params["b"]  # in place: no second (N, M) array
        return y
        # END SOLUTION

    def backward(self, dout):
        """dout (N, M) -> dx (N, D); fills grads["W"] (D, M) and grads["b"] (M,),
        overwriting them. With ``input_grad`` False, dx is not computed and None is
        returned.

        Derivation: y_nm = sum_d x_nd W_dm + b_m, hence
          dL/dW_dm = sum_n x_nd dout_nm   ->  dW = x^T dout      (D, M)
          dL/db_m  = sum_n dout_nm        ->  db = column sums   (M,)
          dL/dx_nd = sum_m dout_nm W_dm   ->  dx = dout W^T      (N, D)
        The products are written into the existing gradient arrays (out=...), so a
        training step allocates no new parameter-sized arrays.
        """
        if dout.shape != (self.x.shape[0], self.out_dim):
            raise ValueError(f"Linear({self.in_dim}, {self.out_dim}).backward: expected dout of shape "
                             f"{(self.x.shape[0], self.out_dim)}, got {tuple(dout.shape)}")
        # BEGIN SOLUTION
        xp = get_array_module(dout)
        xp.matmul(self.x.T, dout, out=self.grads["W"])
        xp.sum(dout, axis=0, out=self.grads["b"])
        return dout @ self.params["W"].T if self.input_grad else None
        # END SOLUTION


class Tanh:
    """y = tanh(x), elementwise.   forward: x (N, D) -> y (N, D)."""

    def __init__(self):
        self.params, self.grads = {}, {}
        self.out = None

    def forward(self, x):
        # BEGIN SOLUTION
        self.out = get_array_module(x).tanh(x)
        return self.out
        # END SOLUTION

    def backward(self, dout):
        # BEGIN SOLUTION
        # d tanh(x)/dx = 1 - tanh(x)^2: reuse the forward output, no second tanh.
        return dout * (1 - self.out * self.out)
        # END SOLUTION


class ReLU:
    """y = max(0, x), elementwise.   forward: x (N, D) -> y (N, D)."""

    def __init__(self):
        self.params, self.grads = {}, {}
        self.mask = None

    def forward(self, x):
        # BEGIN SOLUTION
        self.mask = x > 0
        return x * self.mask
        # END SOLUTION

    def backward(self, dout):
        # BEGIN SOLUTION
        # The derivative is 1 where x > 0 and 0 elsewhere (we take 0 at the kink x = 0).
        return dout * self.mask
        # END SOLUTION


class Softmax:
    """Row-wise softmax p_ij = exp(x_ij) / sum_k exp(x_ik).   x (N, C) -> p (N, C).

    Used on its own where the probabilities themselves are needed (the modality
    classifier's accuracy, a softmax before a separate cross-entropy). For training,
    losses.softmax_cross_entropy fuses the two and is cheaper and more stable.
    """

    def __init__(self):
        self.params, self.grads = {}, {}
        self.out = None

    def forward(self, x):
        _check_2d(x, None, "Softmax")
        # BEGIN SOLUTION
        xp = get_array_module(x)
        # Subtracting the row maximum changes nothing mathematically (it cancels in the
        # ratio) but keeps exp() from overflowing for large logits.
        e = xp.exp(x - x.max(axis=1, keepdims=True))
        self.out = e / e.sum(axis=1, keepdims=True)
        return self.out
        # END SOLUTION

    def backward(self, dout):
        """The Jacobian-vector product, dout (N, C) -> dx (N, C).

        Derivation: dp_ij/dx_ik = p_ij (delta_jk - p_ik), so
          dx_ik = sum_j dout_ij p_ij (delta_jk - p_ik) = p_ik (dout_ik - sum_j dout_ij p_ij).
        """
        # BEGIN SOLUTION
        p = self.out
        return p * (dout - (dout * p).sum(axis=1, keepdims=True))
        # END SOLUTION


class L2Normalize:
    """Row-wise unit length: y_n = x_n / ||x_n||.   x (N, D) -> y (N, D).

    Squared distances between unit vectors are 2 - 2 cos(x, x'), so a triplet loss on
    normalised embeddings works in the same geometry as retrieval by cosine similarity.
    ``eps`` keeps a zero row from dividing by zero.
    """

    def __init__(self, eps=1e-12):
        self.params, self.grads = {}, {}
        self.eps = eps
        self.out = self.norm = None

    def forward(self, x):
        _check_2d(x, None, "L2Normalize")
        # BEGIN SOLUTION
        xp = get_array_module(x)
        self.norm = xp.maximum(xp.sqrt((x * x).sum(axis=1, keepdims=True)), self.eps)
        self.out = x / self.norm
        return self.out
        # END SOLUTION

    def backward(self, dout):
        """dout (N, D) -> dx (N, D).

        Derivation: dy_nj/dx_nk = (delta_jk - y_nj y_nk) / ||x_n||, so
          dx_n = (dout_n - y_n (dout_n . y_n)) / ||x_n||:
        the part of dout along y_n is removed (moving along y_n changes no direction).
        """
        # BEGIN SOLUTION
        y = self.out
        return (dout - y * (dout * y).sum(axis=1, keepdims=True)) / self.norm
        # END SOLUTION


class GradientReversal:
    """The gradient reversal layer (GRL) of Ganin & Lempitsky (2015).

    forward: the identity, x (N, D) -> x (N, D).

    Placed between the projectors and the modality classifier, it makes one ordinary
    backward pass serve both players of the minimax game (ACMR Eqs. 9-10): the
    modality classifier, after the GRL in the forward pass, descends on L_adv, while
    every layer before it (the projectors) ascends on L_adv, with strength ``lam``, and
    learns to fool the classifier.
    ``lam`` is a plain attribute so a schedule can change it between steps.
    """

    def __init__(self, lam=1.0):
        self.params, self.grads = {}, {}
        self.lam = float(lam)

    def forward(self, x):
        # BEGIN SOLUTION
        return x
        # END SOLUTION

    def backward(self, dout):
        """dout (N, D) -> dx (N, D).

        Derivation: backward returns -lam * dout. This is not a derivative of any
        function of the forward pass, which is why it is tested exactly, not numerically.
        """
        # BEGIN SOLUTION
        return -self.lam * dout
        # END SOLUTION
