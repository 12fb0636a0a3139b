"""Endpoint classification rules: the class says what the endpoint is."""

import numpy as np
import pytest

from reluflow.analysis import CLASSES, at_optimum, classify, critical_class

NAN = np.nan
T, F = True, False
ROWS = [
    # status, endpoint risk, a critical point describes it, its n_negative, its risk, expected
    ("critical", 1e-14, T, 0.0, 1e-14, "global_min"),
    ("budget", 1e-14, F, NAN, NAN, "global_min"),  # risk <= tol is a global minimum whatever the gradient
    ("critical", 0.2, T, 0.0, 0.2, "local_min"),
    ("critical", 0.2, T, 2.0, 0.2, "saddle"),
    ("budget", 0.2, T, 1.0, 0.19, "saddle"),  # a local refinement to a saddle below the endpoint
    ("critical", 0.2, T, NAN, 0.2, "unconverged"),  # critical, but curvature unknown
    ("budget", 0.2, F, 0.0, 0.1, "unconverged"),  # a critical point was found, but it does not describe the end
    ("budget", 0.2, F, NAN, NAN, "unconverged"),
    # on its way to a global minimum, not there: never global_min with an endpoint risk above the tolerance
    ("budget", 1e-6, T, 0.0, 1e-20, "unconverged"),
    ("diverged", 1e-14, T, 0.0, 1e-14, "diverged"),
    ("nonfinite", 0.1, T, 0.0, 0.1, "diverged"),
    ("critical", NAN, T, 0.0, NAN, "diverged"),
    ("critical", np.inf, T, 0.0, np.inf, "diverged"),
]


def test_rules():
    status, risk, crit, neg, crit_risk, expected = (np.array(c) for c in zip(*ROWS, strict=True))
    out = classify(status, risk.astype(float), crit.astype(bool), neg.astype(float), risk_tol=1e-10,
                   critical_risk=crit_risk.astype(float))
    assert out.dtype == object and set(out) <= set(CLASSES)
    assert list(out) == list(expected)
    # a global_min row never has an endpoint risk above the tolerance
    assert np.all(risk.astype(float)[out == "global_min"] <= 1e-10)


def test_optimal_risk():
    """f = x^2 with one unit: the best risk 4/3645 is a global minimum once it is stated; unstated, it is
    a local minimum (nothing proves it global)."""
    opt = 4 / 3645
    status = np.array(["critical"] * 3)
    risk = np.array([opt + 1e-15, 1 / 180, 4 / 45])
    crit = np.ones(3, dtype=bool)
    neg = np.zeros(3)
    assert list(classify(status, risk, crit, neg, risk_tol=1e-12, optimal_risk=opt)) == [
        "global_min", "local_min", "local_min"]
    assert list(classify(status, risk, crit, neg, risk_tol=1e-12)) == ["local_min"] * 3
    # relative tolerance for a large optimum: risk <= opt + risk_tol * max(1, opt)
    assert at_optimum(np.array([1e4 + 1e-7, 1e4 + 1e-5]), risk_tol=1e-10, optimal_risk=1e4).tolist() == [T, F]
    # below a stated optimum counts as at it (the statement was wrong, the point is no worse)
    assert at_optimum(np.array([0.5]), risk_tol=1e-10, optimal_risk=1.0).tolist() == [T]


def test_critical_class():
    out = critical_class(np.array([1e-20, 0.3, 0.3, 0.3, NAN]), np.array([NAN, 0.0, 2.0, NAN, 0.0]),
                         risk_tol=1e-12)
    assert list(out) == ["global_min", "local_min", "saddle", "none", "none"]


def test_shape_errors():
    with pytest.raises(ValueError, match="risk"):
        classify(np.array(["critical"]), np.zeros(2), np.ones(1, bool), np.zeros(1), risk_tol=1e-10)
    with pytest.raises(ValueError, match="critical has shape"):
        classify(np.array(["critical"]), np.zeros(1), np.ones(3, bool), np.zeros(1), risk_tol=1e-10)
    with pytest.raises(ValueError, match="critical_risk"):
        classify(np.array(["critical"]), np.zeros(1), np.ones(1, bool), np.zeros(1), risk_tol=1e-10,
                 critical_risk=np.zeros(2))
