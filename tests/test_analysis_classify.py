"""Endpoint classification rules."""

import numpy as np
import pytest

from reluflow.analysis import CLASSES, classify

NAN = np.nan
ROWS = [
    # status, risk, grad_norm, n_negative, expected
    ("critical", 1e-14, 1e-12, 0.0, "global_min"),
    ("budget", 1e-14, 1e-3, NAN, "global_min"),  # risk <= tol is a global minimum whatever the gradient
    ("critical", 0.2, 1e-12, 0.0, "local_min"),
    ("critical", 0.2, 1e-12, 2.0, "saddle"),
    ("budget", 0.2, 1e-12, 1.0, "saddle"),
    ("critical", 0.2, 1e-12, NAN, "unconverged"),  # critical, but curvature unknown
    ("budget", 0.2, 1e-3, 0.0, "unconverged"),  # not critical
    ("budget", 0.2, NAN, 0.0, "unconverged"),
    ("diverged", 1e-14, 1e-12, 0.0, "diverged"),
    ("nonfinite", 0.1, 1e-12, 0.0, "diverged"),
    ("critical", NAN, 1e-12, 0.0, "diverged"),
    ("critical", np.inf, 1e-12, 0.0, "diverged"),
]


def test_rules():
    status, risk, grad, neg, expected = (np.array(c) for c in zip(*ROWS, strict=True))
    out = classify(status, risk.astype(float), grad.astype(float), neg.astype(float), risk_tol=1e-10,
                   grad_tol=1e-8)
    assert out.dtype == object and set(out) <= set(CLASSES)
    assert list(out) == list(expected)


def test_optimal_risk_and_refined():
    status = np.array(["critical", "critical", "budget", "budget"])
    risk = np.array([0.5 + 1e-12, 0.5 + 1e-3, 0.5 + 1e-3, 0.5 + 1e-3])
    grad = np.array([1e-12, 1e-12, 1e-3, 1e-3])
    neg = np.array([0.0, 0.0, 1.0, 0.0])
    refined = np.array([False, False, True, False])
    out = classify(status, risk, grad, neg, risk_tol=1e-10, grad_tol=1e-8, optimal_risk=0.5, refined=refined)
    assert list(out) == ["global_min", "local_min", "saddle", "unconverged"]
    # relative tolerance for a large optimum: |risk - opt| <= risk_tol * max(1, |opt|)
    out = classify(np.array(["critical"]), np.array([1e4 + 1e-7]), np.array([0.0]), np.array([0.0]),
                   risk_tol=1e-10, grad_tol=1e-8, optimal_risk=1e4)
    assert out[0] == "global_min"


def test_shape_errors():
    with pytest.raises(ValueError, match="risk"):
        classify(np.array(["critical"]), np.zeros(2), np.zeros(1), np.zeros(1), risk_tol=1e-10, grad_tol=1e-8)
    with pytest.raises(ValueError, match="refined"):
        classify(np.array(["critical"]), np.zeros(1), np.zeros(1), np.zeros(1), risk_tol=1e-10, grad_tol=1e-8,
                 refined=np.zeros(3, dtype=bool))
