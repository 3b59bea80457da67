"""The optimisers against independent textbook implementations."""
import numpy as np
import pytest

from acmr_np.optim import SGD, Adam


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    grads_seq = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(5)]
    return params, grads_seq


def test_adam_matches_textbook_form():
    params, grads_seq = _problem()
    ref = {k: v.copy() for k, v in params.items()}
    arrays = dict(params)  # the same array objects: Adam must update them in place
    opt = Adam(params, lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6)
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    v = {k: np.zeros_like(x) for k, x in ref.items()}
    for t, grads in enumerate(grads_seq, start=1):
        opt.step(grads)
        for k in ref:  # Kingma & Ba, Algorithm 1, written the plain way
            m[k] = 0.8 * m[k] + 0.2 * grads[k]
            v[k] = 0.99 * v[k] + 0.01 * grads[k] ** 2
            m_hat, v_hat = m[k] / (1 - 0.8 ** t), v[k] / (1 - 0.99 ** t)
            ref[k] = ref[k] - 0.01 * m_hat / (np.sqrt(v_hat) + 1e-6)
    for k in ref:
        assert params[k] is arrays[k]
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-12, atol=1e-14)
    assert opt.t == 5


def test_sgd_momentum_matches_textbook_form():
    params, grads_seq = _problem(1)
    ref = {k: v.copy() for k, v in params.items()}
    vel = {k: np.zeros_like(v) for k, v in ref.items()}
    opt = SGD(params, lr=0.1, momentum=0.5)
    for grads in grads_seq:
        opt.step(grads)
        for k in ref:
            vel[k] = 0.5 * vel[k] + grads[k]
            ref[k] = ref[k] - 0.1 * vel[k]
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [lambda p: Adam(p, lr=0.1), lambda p: SGD(p, lr=0.05)])
def test_optimisers_minimise_a_quadratic(make):
    target = np.array([1.0, -2.0, 3.0])
    params = {"x": np.zeros(3)}
    opt = make(params)
    for _ in range(300):
        opt.step({"x": 2 * (params["x"] - target)})
    np.testing.assert_allclose(params["x"], target, atol=1e-2)


def test_state_dict_round_trip_continues_bit_for_bit():
    params, grads_seq = _problem(2)
    a = Adam({k: v.copy() for k, v in params.items()}, lr=0.01)
    for g in grads_seq[:2]:
        a.step(g)
    b = Adam({k: v.copy() for k, v in a.params.items()}, lr=0.01)
    b.load_state_dict(a.state_dict())
    for g in grads_seq[2:]:
        a.step(g)
        b.step(g)
    for k in params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_bad_settings_and_names():
    with pytest.raises(ValueError, match="learning rate must be positive, got 0"):
        Adam({"x": np.zeros(2)}, lr=0)
    with pytest.raises(ValueError, match="learning rate must be positive, got -1"):
        SGD({"x": np.zeros(2)}, lr=-1)
    opt = Adam({"x": np.zeros(2)})
    with pytest.raises(ValueError, match=r"missing \['x'\], unexpected \['y'\]"):
        opt.step({"y": np.zeros(2)})
    with pytest.raises(ValueError, match=r"gradient x has shape \(3,\), the parameter \(2,\)"):
        opt.step({"x": np.zeros(3)})
    with pytest.raises(ValueError, match="eps must be positive"):
        Adam({"x": np.zeros(2)}, eps=0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        SGD({"x": np.zeros(2)}, momentum=1.0)
    with pytest.raises(ValueError, match=r"does not fit: missing \['v/x'\], unexpected \['v/y'\]"):
        opt.load_state_dict({"t": 1, "m/x": np.zeros(2), "v/y": np.zeros(2)})
    with pytest.raises(ValueError, match=r"the saved v/x has shape \(3,\), the parameter \(2,\)"):
        opt.load_state_dict({"t": 1, "m/x": np.zeros(2), "v/x": np.zeros(3)})
    assert opt.t == 0  # nothing was loaded


def test_float32_stays_float32():
    params = {"W": np.ones((3, 2), np.float32)}
    for opt in (Adam(params, lr=1e-3), SGD(params, lr=1e-3)):
        opt.step({"W": np.full((3, 2), 0.5, np.float32)})
        assert params["W"].dtype == np.float32
        assert all(a.dtype == np.float32 for s in opt.state.values() for a in s.values())
