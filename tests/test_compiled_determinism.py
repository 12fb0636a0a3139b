"""Every compiled kernel gives a trajectory the same bits on every call: whatever else is on the heap, whatever
batch the row is in.

A compiled loop that LLVM vectorizes behind a run-time overlap check runs its scalar copy when the check fails,
and where the arrays lie decides that; with reassociation allowed, the vector and scalar loops add in different
orders. The first gaussian kernel did this at SS2018's k = n = 20 (19 of 400 calls here gave other bits), so
the same trajectory could end with other last digits in two runs of one study. Each case below evaluates the
same rows three times: alone, again after the heap has been churned, and inside a larger batch."""

from __future__ import annotations

import numpy as np
import pytest

from reluflow.problem import Problem

pytest.importorskip("numba")

GAUSSIAN_TEACHER = {"kind": "teacher", "widths": [4], "seed": 0}
CASES = {
    # the shape where the reassociating gaussian kernel differed
    "gaussian k20_n20": ({
        "network": {"input_dim": 20, "widths": [20], "bias": False, "fixed_output": 1.0},
        "measure": {"kind": "gaussian", "dim": 20, "sigma": 1.0},
        "target": {"kind": "teacher", "widths": [20], "bias": False, "fixed_output": 1.0, "seed": 0,
                   "first_layer": "unit_vectors"},
        "risk": {"backend": "gaussian"}}, "numba"),
    "shallow d20 H40": ({
        "network": {"input_dim": 20, "widths": [40]}, "measure": {"kind": "gaussian", "dim": 20, "sigma": 1.0},
        "target": GAUSSIAN_TEACHER, "risk": {"backend": "quadrature", "n_points": 600}}, "mask_numba"),
    "deep 40x24 tanh": ({
        "network": {"input_dim": 3, "widths": [40, 24], "activation": "tanh"},
        "measure": {"kind": "gaussian", "dim": 3, "sigma": 1.0},
        "target": GAUSSIAN_TEACHER, "risk": {"backend": "quadrature", "n_points": 600}}, "backprop_numba"),
    "points1d H64": ({
        "network": {"input_dim": 1, "widths": [64]}, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
        "target": {"kind": "piecewise_affine", "knots": [0.0, 0.5, 1.0], "values": [0.0, 1.0, 0.0]},
        "risk": {"backend": "quadrature", "n_points": 1000}}, "points1d_numba"),
    "exact1d H64": ({
        "network": {"input_dim": 1, "widths": [64]}, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
        "target": {"kind": "piecewise_affine", "knots": [0.0, 0.5, 1.0], "values": [0.0, 1.0, 0.0]},
        "risk": {"backend": "exact1d"}}, "numba"),
}
CALLS = 150


@pytest.mark.parametrize("case", list(CASES))
def test_a_row_gets_the_same_bits_on_every_call_and_in_every_batch(case):
    spec, kernel = CASES[case]
    problem = Problem.from_dict(spec)
    assert problem.backend.describe()["kernel"] == kernel  # the compiled kernel is the one under test
    rng = np.random.default_rng(7)
    heap: list[np.ndarray] = []
    differing = 0
    for _ in range(CALLS):
        T = int(rng.integers(1, 24))
        theta = rng.normal(size=(T, problem.n_params)) / 3
        risk, grad = problem.risk_and_grad(theta)
        heap.append(np.empty(int(rng.integers(1, 20000))))  # other arrays come and go between the calls
        if len(heap) > 40:
            heap.pop(int(rng.integers(0, 40)))
        again, again_grad = problem.risk_and_grad(theta.copy())
        batch = np.concatenate([rng.normal(size=(int(rng.integers(1, 8)), problem.n_params)), theta])
        in_batch, in_batch_grad = problem.risk_and_grad(batch)
        same = (np.array_equal(risk, again) and np.array_equal(grad, again_grad)
                and np.array_equal(risk, in_batch[-T:]) and np.array_equal(grad, in_batch_grad[-T:]))
        differing += not same
    assert differing == 0, f"{differing} of {CALLS} calls gave a row other bits"
