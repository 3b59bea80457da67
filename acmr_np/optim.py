"""Optimisers, written as the textbooks write them.

An optimiser is built on a dict of named parameter arrays, ``{name: array}``, and
``step(grads)`` takes a dict with the same names and updates every array IN PLACE.
In place matters: the layers hold the very same array objects in their ``params``, so
``p -= ...`` changes the model, while ``p = p - ...`` would only rebind a local name and
change nothing.

``state_dict()`` / ``load_state_dict()`` carry the full state (the step count and every
moment array), so a resumed run continues bit for bit.

These are the plain forms. The training loop uses ``acmr_np.fast``, which computes the
same numbers (bit for bit, tests/test_fast.py) in cache-sized blocks on the CPU and in
one fused kernel per parameter on a GPU.
"""
from .backend import get_array_module, to_device, to_host


class Optimizer:
    """What SGD and Adam share: the parameters, the learning rate, the step count ``t``,
    and per-parameter state arrays named in ``slots`` (zeros like each parameter)."""
    slots = ()

    def __init__(self, params, lr):
        if not params:
            raise ValueError(f"{type(self).__name__}: no parameters to optimise")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be positive, got {lr}")
        self.params, self.lr, self.t = params, float(lr), 0
        self.state = {s: {k: get_array_module(p).zeros_like(p) for k, p in params.items()}
                      for s in self.slots}

    def check(self, grads):
        """Refuse gradients whose names or shapes are not the parameters'."""
        if grads.keys() != self.params.keys():
            missing = sorted(set(self.params) - set(grads))
            extra = sorted(set(grads) - set(self.params))
            raise ValueError(f"{type(self).__name__}.step: gradient names differ from the "
                             f"parameters (missing {missing}, unexpected {extra})")
        for k, p in self.params.items():
            if tuple(grads[k].shape) != tuple(p.shape):
                raise ValueError(f"{type(self).__name__}.step: gradient {k} has shape "
                                 f"{tuple(grads[k].shape)}, the parameter {tuple(p.shape)}")

    def state_dict(self):
        """Host copies of the step count and every state array, named 'slot/param'."""
        out = {"t": self.t}
        out.update({f"{s}/{k}": to_host(a) for s in self.slots for k, a in self.state[s].items()})
        return out

    def check_state_dict(self, d):
        """Raise ValueError unless ``d`` has exactly this optimiser's names and shapes."""
        want = {f"{s}/{k}" for s in self.slots for k in self.params} | {"t"}
        if set(d) != want:
            raise ValueError(f"{type(self).__name__}: the saved state does not fit: missing "
                             f"{sorted(want - set(d))[:5]}, unexpected {sorted(set(d) - want)[:5]}")
        for s in self.slots:
            for k, a in self.state[s].items():
                if tuple(d[f"{s}/{k}"].shape) != tuple(a.shape):
                    raise ValueError(f"{type(self).__name__}: the saved {s}/{k} has shape "
                                     f"{tuple(d[f'{s}/{k}'].shape)}, the parameter {tuple(a.shape)}")

    def load_state_dict(self, d):
        """Load what ``state_dict`` returned; a state of other names or shapes is refused
        before anything is changed."""
        self.check_state_dict(d)
        self.t = int(d["t"])
        for s in self.slots:
            for k, a in self.state[s].items():
                a[...] = to_device(d[f"{s}/{k}"], get_array_module(a), a.dtype)


class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum.

    The velocity v is a running sum of past gradients, each one weighted by a further
    factor ``momentum`` per step, and each step moves the parameter by lr times the
    velocity, downhill: steps along a direction the gradients agree on grow up to
    1 / (1 - momentum) times, while gradients that flip sign cancel.
    momentum = 0 gives plain SGD.
    """
    slots = ("velocity",)

    def __init__(self, params, lr=0.01, momentum=0.9):
        super().__init__(params, lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)

    def step(self, grads):
        """Update every parameter in place with its gradient in ``grads``.

        Derivation:
          v <- momentum * v + g
          p <- p - lr * v
        """
        self.check(grads)
        self.t += 1
        for k, p in self.params.items():
            # BEGIN SOLUTION
            v = self.state["velocity"][k]
            v *= self.momentum
            v += grads[k]
            p -= self.lr * v
            # END SOLUTION


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015, Algorithm 1): steps along a moving average of the
    gradient, divided by the square root of a moving average of its square, both
    averages bias-corrected; ``eps`` is added to that square root. Each parameter's step
    is about lr in size, whatever the scale of its gradient.
    """
    slots = ("m", "v")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params, lr)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {beta1}, {beta2}")
        if not eps > 0:
            raise ValueError(f"Adam: eps must be positive, got {eps}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def step(self, grads):
        """Update every parameter in place with its gradient in ``grads``.

        Derivation:
          m <- b1 m + (1 - b1) g              moving average of the gradient
          v <- b2 v + (1 - b2) g^2            moving average of its square
          m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)
          p <- p - lr m_hat / (sqrt(v_hat) + eps)
        m and v start at zero, so after t steps they are averages whose weights sum to
        1 - b1^t and 1 - b2^t, not to 1; dividing by those sums (the bias correction)
        makes m_hat and v_hat unbiased estimates from the first step on.
        """
        self.check(grads)
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        for k, p in self.params.items():
            # BEGIN SOLUTION
            g, m, v = grads[k], self.state["m"][k], self.state["v"][k]
            xp = get_array_module(p)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            m_hat = m / (1 - b1 ** self.t)
            v_hat = v / (1 - b2 ** self.t)
            p -= self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)
            # END SOLUTION
