"""ACMRConfig.lam_at, the lambda schedule, against its closed form (the DANN ramp of
Ganin & Lempitsky 2015, ACMR.md section 4), written out here, not taken from the package."""
import math

import pytest

from acmr_np.config import ACMRConfig


def dann(lam, p):
    return lam * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)


# p = 0.05 .. 0.3 is where the ramp rises fastest; 0.5 and 2/3 tell a ramp that
# saturates early (at p = 2/3, say) from one still rising; 1 is the end of the run
PROGRESS = [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 2 / 3, 0.8, 0.95, 1.0]


@pytest.mark.parametrize("lam", [0.05, 1.3])
def test_dann_ramp_is_the_closed_form(lam):
    cfg = ACMRConfig(lam=lam, lam_schedule="dann")
    for p in PROGRESS:
        assert cfg.lam_at(p) == pytest.approx(dann(lam, p), rel=1e-12, abs=1e-300), p


def test_dann_ramp_by_hand():
    """Values worked out by hand (tanh(5 p) = 2 / (1 + exp(-10 p)) - 1)."""
    cfg = ACMRConfig(lam=2.0, lam_schedule="dann")
    assert cfg.lam_at(0.0) == 0.0
    assert cfg.lam_at(0.1) == pytest.approx(2 * math.tanh(0.5), rel=1e-12)    # 0.924...
    assert cfg.lam_at(0.5) == pytest.approx(2 * math.tanh(2.5), rel=1e-12)    # 1.973...
    assert cfg.lam_at(1.0) == pytest.approx(2 * math.tanh(5.0), rel=1e-12)    # 1.99982
    assert cfg.lam_at(1.0) < 2.0                                              # approaches, never reaches


def test_constant_schedule_ignores_progress():
    cfg = ACMRConfig(lam=0.7, lam_schedule="constant")
    assert [cfg.lam_at(p) for p in PROGRESS] == [0.7] * len(PROGRESS)


def test_zero_lambda_stays_zero():
    assert all(ACMRConfig(lam=0.0).lam_at(p) == 0.0 for p in PROGRESS)
