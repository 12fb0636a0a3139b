"""Tail fits of risk curves: L_inf, exponential rate, polynomial exponent, and the better model."""

import numpy as np
import pytest

from reluflow.analysis import rate_fits

T_LIN = np.linspace(0.0, 40.0, 81)
T_LOG = np.concatenate([[0.0], np.logspace(-2, 3, 60)])


def fit(t, curves, bounded=True, valid=None, **kw):
    curves = np.atleast_2d(curves)
    t = np.broadcast_to(t, curves.shape)
    valid = np.ones(curves.shape, bool) if valid is None else valid
    return rate_fits(t, curves, valid, bounded=np.full(len(curves), bounded), **kw)


# (t, L_inf, C, model, rate): the rate is recovered to RATE_RTOL relative, L_inf to LINF_RTOL times the last
# gap L(t_end) - L_inf (the limit is only determined relative to how close the curve gets to it)
CASES = [
    (T_LIN, 0.1, 2.0, "exponential", 0.3),
    (T_LIN, 0.0, 2.0, "exponential", 0.3),
    (T_LIN, 0.25, 0.5, "exponential", 0.05),
    (T_LOG, 0.02, 0.5, "exponential", 0.01),
    (T_LIN, 0.1, 2.0, "polynomial", 1.5),
    (T_LIN, 0.0, 1.0, "polynomial", 1.0),
    (T_LOG, 0.02, 0.5, "polynomial", 1.0),
    (T_LOG, 0.0, 0.3, "polynomial", 2.0),
]
RATE_RTOL = 1e-5
LINF_RTOL = 1e-5


def curve(t, l_inf, c, model, rate):
    return l_inf + c * (np.exp(-rate * t) if model == "exponential" else (1.0 + t) ** -rate)


@pytest.mark.parametrize(("t", "l_inf", "c", "model", "rate"), CASES)
def test_recovers_known_tails(t, l_inf, c, model, rate):
    L = curve(t, l_inf, c, model, rate)
    out = fit(t, L)
    key = "exp" if model == "exponential" else "poly"
    other = "poly" if key == "exp" else "exp"
    assert out["rate_best"][0] == model
    np.testing.assert_allclose(out[f"rate_{key}"][0], rate, rtol=RATE_RTOL)
    np.testing.assert_allclose(out["risk_inf"][0], l_inf, atol=LINF_RTOL * (L[-1] - l_inf))
    assert out[f"r2_{key}"][0] > 1 - 1e-10
    assert out[f"r2_{other}"][0] < out[f"r2_{key}"][0]


def test_batch_of_mixed_curves_and_padding():
    # rows of different lengths (padding marked invalid) and shuffled column order give the same fits
    rows = [curve(T_LIN, 0.1, 2.0, "exponential", 0.3), curve(T_LIN, 0.0, 1.0, "polynomial", 1.0)]
    single = [fit(T_LIN, r) for r in rows]
    t = np.stack([T_LIN, T_LIN])
    L = np.stack(rows)
    t_pad = np.concatenate([t, np.full((2, 7), np.nan)], axis=1)
    L_pad = np.concatenate([L, np.full((2, 7), 5.0)], axis=1)
    valid = np.isfinite(t_pad)
    perm = np.random.default_rng(0).permutation(t_pad.shape[1])
    out = rate_fits(t_pad[:, perm], L_pad[:, perm], valid[:, perm], bounded=np.array([True, True]))
    for i in range(2):
        for key in out:
            if out[key].dtype == object:
                assert out[key][i] == single[i][key][0]
            else:
                # summation order differs with the padding: agreement to round-off of the fits
                np.testing.assert_allclose(out[key][i], single[i][key][0], rtol=1e-7, atol=1e-12)


def test_unbounded_runs_use_zero_limit():
    L = curve(T_LIN, 0.0, 1.0, "polynomial", 0.5)
    out = fit(T_LIN, L, bounded=False)
    assert out["risk_inf"][0] == 0.0 and out["rate_best"][0] == "polynomial"
    np.testing.assert_allclose(out["rate_poly"][0], 0.5, rtol=1e-12)
    # an unbounded run whose risk tends to a positive value is not refitted: L_inf stays 0
    out = fit(T_LIN, curve(T_LIN, 0.1, 2.0, "exponential", 0.3), bounded=False)
    assert out["risk_inf"][0] == 0.0


def test_tail_fraction_selects_the_tail():
    # early transient of a different rate, then a clean exponential: a short tail sees only the latter
    t = T_LIN
    L = np.where(t < 20, 1.0 + np.exp(-0.05 * t), 0.0) + 0.0
    L[t >= 20] = (1.0 + np.exp(-0.05 * 20)) * np.exp(-0.2 * (t[t >= 20] - 20))
    out = fit(t, L, bounded=False, tail_fraction=0.4)
    np.testing.assert_allclose(out["rate_exp"][0], 0.2, rtol=1e-10)


def test_degenerate_rows():
    t = np.array([[0.0, 1, 2, 3, 4], [0.0, 1, 2, 3, 4], [0.0, 1, 2, 3, 4], [0.0, 1, 2, 3, 4]])
    L = np.array([
        [1.0, 0.5, np.nan, np.nan, np.nan],  # two usable points: no fit
        [0.2, 0.2, 0.2, 0.2, 0.2],  # flat at the floor: converged, L_inf = its value, no rate
        [1.0, 0.5, 0.3, 0.0, 0.0],  # reached exactly zero: L_inf = 0, zeros dropped
        [0.1, 0.2, 0.4, 0.8, 1.6],  # growing: no positive rate, no model
    ])
    out = fit(t, L, valid=np.isfinite(L))
    assert list(out["rate_best"]) == ["none", "none", "none", "none"]
    assert np.isnan(out["risk_inf"][0]) and np.isnan(out["rate_exp"][0])
    assert out["risk_inf"][1] == 0.2
    assert out["risk_inf"][2] == 0.0
    assert out["rate_exp"][3] < 0 and out["rate_poly"][3] < 0


def test_three_point_fallback_is_aitken():
    # exactly three tail points, equally spaced: Aitken's extrapolation is exact for an exponential
    t = np.array([[1.0, 2.0, 3.0]])
    L = 0.1 + np.exp(-t)
    out = rate_fits(t, L, np.ones_like(L, bool), bounded=np.array([True]))
    np.testing.assert_allclose(out["risk_inf"][0], 0.1, atol=1e-14)
    np.testing.assert_allclose(out["rate_exp"][0], 1.0, rtol=1e-10)


def test_argument_checks():
    with pytest.raises(ValueError, match="same shape"):
        rate_fits(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3), bool), bounded=np.ones(2, bool))
    with pytest.raises(ValueError, match="bounded"):
        rate_fits(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3), bool), bounded=np.ones(3, bool))
    with pytest.raises(ValueError, match="tail_fraction"):
        rate_fits(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3), bool), bounded=np.ones(2, bool),
                  tail_fraction=0.0)
