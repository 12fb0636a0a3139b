"""Certified critical points of the gaussian risk (SS2018's student-teacher setting; docs/analysis.md).

The closed-form G and H against the backend and finite differences; the ball enclosures against float values at
sampled points of a box (a collinear pair included, where the quotient p p^T / sin(phi) is replaced by its bound);
the global minimum, a spurious minimum found by GD and Newton, an isolated saddle on a cyclic-symmetric subspace;
refusals (coinciding students, a non-critical point, a zero row, a trained output layer).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import reluflow
from reluflow.analysis import CERTIFY_COLUMNS, CERTIFY_REASONS, certify_critical_points

flint = pytest.importorskip("flint")

from reluflow.analysis._certify_gaussian import GaussianModel  # noqa: E402  (after the importorskip)


def ss_problem(k, n, *, sigma=1.0, fixed_output=1.0, first_layer="unit_vectors", output_dim=1, teacher_output=1.0):
    return reluflow.Problem.from_dict({
        "network": {"input_dim": k, "widths": [n], "bias": False, "fixed_output": fixed_output,
                    "output_dim": output_dim},
        "measure": {"kind": "gaussian", "dim": k, "sigma": sigma},
        "target": {"kind": "teacher", "widths": [k], "bias": False, "fixed_output": teacher_output, "seed": 3,
                   "first_layer": first_layer, "output_dim": output_dim},
        "risk": {"backend": "gaussian"}})


def certify(p, theta, **kw):
    out = certify_critical_points(p, np.atleast_2d(theta), **kw)
    assert set(out) == set(CERTIFY_COLUMNS)
    assert set(out["certified_reason"]) <= set(CERTIFY_REASONS) | {""}
    return out


def newton(model, x, iters=8):
    for _ in range(iters):
        _, g, h = model.float_all(x)
        x = x - np.linalg.solve(h, g)
    return x


CASES = {
    "ss_k4_n5": dict(k=4, n=5),
    "scaled": dict(k=3, n=2, sigma=1.7, fixed_output=0.7, first_layer="normal", teacher_output=-1.3),
    "two_outputs": dict(k=3, n=4, output_dim=2, first_layer="normal"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_float_closed_form_matches_backend_and_finite_differences(name, rng):
    p = ss_problem(**CASES[name])
    model = GaussianModel(p)
    theta = rng.standard_normal((3, p.n_params)) / 2
    # a collinear student pair (phi = 0) and an opposite one (phi = pi): the quotient's limit 0 is used there
    w = model.rows(theta[1]).copy()
    w[1] = 2.5 * w[0]
    theta[1, model.wslice] = w.reshape(-1)
    if p.architecture.widths[0] > 2:
        w[2] = -0.4 * w[0]
        theta[2, model.wslice] = w.reshape(-1)
    risk, grad = p.risk_and_grad(theta)
    eps = 1e-6
    for i, row in enumerate(theta):
        L, G, H = model.float_all(row)
        assert abs(L - risk[i]) <= 1e-12 * max(1.0, abs(risk[i]))
        np.testing.assert_allclose(G, grad[i], rtol=0, atol=1e-12 * np.abs(grad[i]).max())
        # central differences of the backend's gradient: O(eps^2) off collinear pairs; at them H is only Lipschitz
        # (the risk is C^2 but not C^3 there), so the central difference is only O(eps) accurate
        basis = np.eye(p.n_params)
        fd = np.array([(p.risk_and_grad((row + eps * e)[None])[1][0] - p.risk_and_grad((row - eps * e)[None])[1][0])
                       / (2 * eps) for e in basis])
        assert np.abs(H - H.T).max() <= 1e-13 * np.abs(H).max()
        assert np.abs(H - fd).max() <= (1e-8 if i == 0 else 1e-5) * np.abs(H).max()


def test_ball_enclosures_hold_over_a_box(rng):
    """G and H enclosed over a box (radius 1e-3) contain the float values at points sampled in it, including a box
    around a collinear pair (sin(phi) not bounded away from 0: the bound replaces the quotient); L at a point."""
    from flint import arb, arb_mat, ctx

    p = ss_problem(3, 4)
    model = GaussianModel(p)
    centers = rng.standard_normal((2, p.n_params)) / 2
    w = model.rows(centers[1]).copy()
    w[3] = 0.5 * w[1]
    centers[1, model.wslice] = w.reshape(-1)
    old, ctx.prec = ctx.prec, 128
    try:
        model.balls(arb, arb_mat)
        for c in centers:
            L, G, H = model.float_all(c)
            risk, g, _ = model.ball_all([arb(float(x)) for x in c], need_hess=False, need_risk=True)
            assert risk.contains(arb(L)) or abs(float(risk.mid()) - L) < 1e-14
            r = 1e-3
            _, gX, HX = model.ball_all([arb(float(x), r) for x in c])
            assert all(x.rad() < 0.1 for x in gX)  # the enclosure is useful, not just valid
            for _ in range(20):
                y = c + rng.uniform(-r, r, p.n_params)
                _, Gy, Hy = model.float_all(y)
                assert all(gX[a].contains(arb(float(Gy[a]))) for a in range(p.n_params))
                assert all(HX[a, b].contains(arb(float(Hy[a, b]))) for a in range(p.n_params)
                           for b in range(p.n_params))
    finally:
        ctx.prec = old


@pytest.mark.parametrize("k", [3, 5])
def test_global_minimum_is_certified(k):
    """W = the teacher, rows permuted: a certified minimum with the critical point exactly there; the smallest
    Hessian eigenvalue there is 1/2 - 1/pi (observed for k = 3 .. 20; the enclosure must contain it)."""
    p = ss_problem(k, k)
    theta = np.eye(k)[np.random.default_rng(k).permutation(k)].reshape(1, -1)
    assert p.risk(theta)[0] < 1e-15
    out = certify(p, theta)
    assert out["certified_class"][0] == "min", out["certified_detail"][0]
    assert 0 <= out["certified_radius"][0] < 1e-15
    assert out["certified_eig_low"][0] <= 0.5 - 1 / np.pi <= out["certified_eig_high"][0]
    assert out["certified_n_free"][0] == k * k
    # a nearby point: certified, and the exact teacher lies in the certified box about it
    near = theta + 1e-9 * np.random.default_rng(1).standard_normal(theta.shape)
    out = certify(p, near)
    assert out["certified_class"][0] == "min"
    rad = Fraction(out["certified_radius"][0])
    assert max(abs(Fraction(float(a)) - Fraction(float(b))) for a, b in zip(near[0], theta[0], strict=True)) <= rad


@pytest.fixture(scope="module")
def spurious_minimum():
    """n = k = 8: GD (step 0.05, 2000 steps) from a seed that lands in the spurious family L = 0.0430 of the
    SS2018 table, refined by Newton: ``(problem, model, the Newton point)``."""
    p = ss_problem(8, 8)
    p_ss = reluflow.Problem.from_dict({**p.to_dict(), "target": {**p.to_dict()["target"], "seed": 0}})
    model = GaussianModel(p_ss)
    theta = np.random.default_rng(8).standard_normal((100, 64))[3:4] / np.sqrt(8)
    for _ in range(2000):
        theta = theta - 0.05 * p_ss.risk_and_grad(theta)[1]
    return p_ss, model, newton(model, theta[0])


def test_spurious_minimum_found_by_gradient_descent(spurious_minimum):
    """The spurious minimum GD and Newton found: a certified minimum with the family's risk, not the global one."""
    p_ss, _, x = spurious_minimum
    out = certify(p_ss, x)
    assert out["certified_class"][0] == "min", out["certified_detail"][0]
    assert out["certified_radius"][0] < 1e-12
    assert 0.040 < out["certified_eig_low"][0] <= out["certified_eig_high"][0] < 0.045
    assert abs(p_ss.risk(x[None])[0] - 0.0430) < 5e-5


def test_certificate_about_the_newton_limit_of_an_endpoint(spurious_minimum):
    """An endpoint 1e-5 from the spurious minimum above (where GD with a looser tolerance stops): the box about the
    endpoint itself is too wide for the eigenvalue bound (or for Krawczyk), the certificate about the endpoint's
    Newton limit proves the minimum, and its radius is measured from the endpoint: the critical point (here its
    float Newton approximation, within ~1e-15 of it) lies within it, and it exceeds their distance by less than
    1e-12."""
    from flint import arb, arb_mat, ctx

    from reluflow.analysis._certify_gaussian import certify_row

    p_ss, model, crit = spurious_minimum
    end = crit + 1e-5 * np.random.default_rng(2).standard_normal(64)
    old = ctx.prec
    ctx.prec = 192
    try:
        model.balls(arb, arb_mat)
        about_end, _ = certify_row(model, end, None, 1e-4, arb, arb_mat)
    finally:
        ctx.prec = old
    assert about_end["certified_class"] == "none", about_end["certified_detail"]
    out = certify(p_ss, end)
    assert out["certified_class"][0] == "min", out["certified_detail"][0]
    assert 0.040 < out["certified_eig_low"][0] <= out["certified_eig_high"][0] < 0.045
    assert "Newton limit" in out["certified_detail"][0]
    dist = max(abs(Fraction(float(a)) - Fraction(float(b))) for a, b in zip(end, crit, strict=True))
    rad = Fraction(out["certified_radius"][0])
    assert dist - Fraction(1, 10**14) <= rad < dist + Fraction(1, 10**12)


def test_isolated_saddle_on_a_cyclic_subspace():
    """n = k = 3 with rows the cyclic shifts of (a, b, b): a critical point at L = 0.0482 with one negative
    Hessian eigenvalue (-0.089) and no zero one; found by Newton on the invariant subspace, certified a saddle."""
    p = ss_problem(3, 3)
    model = GaussianModel(p)
    E = np.stack([np.concatenate([np.roll(np.eye(3)[j], i) for i in range(3)]) for j in range(3)], axis=1)
    abc = np.array([-0.32, 0.66, 0.66])
    for _ in range(20):
        _, g, h = model.float_all(E @ abc)
        abc = abc - np.linalg.solve(E.T @ h @ E, E.T @ g)
    x = E @ abc
    out = certify(p, x)
    assert out["certified_class"][0] == "saddle", out["certified_detail"][0]
    assert out["certified_eig_high"][0] < -0.08
    assert abs(p.risk(x[None])[0] - 0.0482) < 1e-4


def test_refusals():
    p = ss_problem(2, 2)
    model = GaussianModel(p)
    # two coinciding students on the diagonal: a critical point with a flat direction (norm exchange): singular
    x = np.full(4, 0.3)
    for _ in range(30):
        _, g, h = model.float_all(x)
        x = x - (g.sum() / h.sum()) * np.ones(4)
    assert np.abs(model.float_all(x)[1]).max() < 1e-12
    out = certify(p, x)
    assert out["certified_class"][0] == "none" and out["certified_reason"][0] == "singular"
    # not critical: the teacher moved by 1e-3
    teacher = np.eye(2).reshape(-1)
    out = certify(p, teacher + np.array([1e-3, 0, 0, 0]))
    assert out["certified_class"][0] == "none" and out["certified_reason"][0] == "not_critical"
    # a stated box that cannot hold the critical point: Krawczyk fails and G != 0 is proven on it
    out = certify(p, teacher + np.array([1e-3, 0, 0, 0]), radius=1e-5)
    assert out["certified_reason"][0] == "not_critical" and "excluded" in out["certified_detail"][0]
    # a zero row, and a box that reaches w = 0
    assert certify(p, np.array([0.0, 0, 0, 1]))["certified_reason"][0] == "nonsmooth"
    out = certify(p, np.array([1e-6, 0, 0, 1]), radius=1e-5)
    assert out["certified_reason"][0] == "nonsmooth"
    # trained output weights: a rescaling symmetry not quotiented here
    q = reluflow.Problem.from_dict({**p.to_dict(), "network": {**p.to_dict()["network"], "fixed_output": None}})
    out = certify(q, np.zeros((1, q.n_params)) + 0.5)
    assert out["certified_reason"][0] == "unsupported_backend" and "fixed output" in out["certified_detail"][0]


# ------------------------------------------------------------------------------------ certified GD limits
def test_certified_gd_limit_agrees_with_the_run_to_convergence():
    """n = k = 8, the spurious run above: before GD gets close, the limit is not certified (with a reason); from
    some point on it is, with contraction < 1; GD continued to |G| <= 1e-12 ends inside the certified risk
    enclosure (to rounding) and next to the certified limit point."""
    from reluflow.analysis import GD_LIMIT_REASONS, certified_gd_limit

    p = ss_problem(8, 8)
    p = reluflow.Problem.from_dict({**p.to_dict(), "target": {**p.to_dict()["target"], "seed": 0}})
    theta = np.random.default_rng(8).standard_normal((100, 64))[3:4] / np.sqrt(8)
    early = certified_gd_limit(p, theta, 0.05)
    assert not early["limit_certified"][0] and early["limit_reason"][0] in GD_LIMIT_REASONS
    for _ in range(6000):
        theta = theta - 0.05 * p.risk_and_grad(theta)[1]
    out = certified_gd_limit(p, theta, 0.05)
    assert out["limit_certified"][0], out["limit_detail"][0]
    assert out["limit_class"][0] == "min" and out["limit_reason"][0] == ""
    assert 0 < out["limit_mu"][0] < 0.0427 < out["limit_lambda"][0] < 40
    assert 0 < out["limit_rate"][0] < 1
    low, high = out["limit_risk_low"][0], out["limit_risk_high"][0]
    assert 0.0430 < low <= high < 0.0431 and high - low < 1e-12
    # the same point, a step too large for the certified Lambda; gradient flow needs no Lambda
    big = certified_gd_limit(p, theta, 2.5 / out["limit_lambda"][0])
    assert not big["limit_certified"][0] and big["limit_reason"][0] == "step_too_large"
    assert certified_gd_limit(p, theta, None)["limit_certified"][0]
    # the run to convergence
    start = theta.copy()
    for _ in range(20000):
        risk, grad = p.risk_and_grad(theta)
        if np.linalg.norm(grad) <= 1e-12:
            break
        theta = theta - 0.05 * grad
    assert np.linalg.norm(grad) <= 1e-12
    # the backend's float risk is a difference of O(n^2) terms: its rounding error is ~1e-14 here
    assert low - 1e-13 <= risk[0] <= high + 1e-13
    assert np.abs(theta[0] - out["limit_theta"][0]).max() < 1e-10
    assert np.linalg.norm(start[0] - theta[0]) <= out["limit_distance"][0] + 1e-10


def test_certified_gd_limit_refusals():
    from reluflow.analysis import certified_gd_limit

    p = ss_problem(2, 2)
    out = certified_gd_limit(p, np.array([[0.3, 0.3, 0.3, 0.3]]), 0.05)  # coinciding students: a saddle
    assert not out["limit_certified"][0] and out["limit_class"][0] == "none"
    q = reluflow.Problem.from_dict({"network": {"input_dim": 1, "widths": [1]}, "measure": {"kind": "uniform"},
                                    "target": {"kind": "polynomial", "coefficients": [0, 0, 1]},
                                    "risk": {"backend": "exact1d"}})
    out = certified_gd_limit(q, np.ones((1, q.n_params)), 0.05)
    assert out["limit_reason"][0] == "unsupported_backend"
    with pytest.raises(ValueError, match="step_size"):
        certified_gd_limit(p, np.ones((1, 4)), -1.0)


def test_simulate_with_certified_stop_reports_the_limit_of_the_run_to_convergence():
    """SS2018's method on n = k = 8 from two initializations, one that lands in the spurious family (the seed
    above) and one that reaches L <= 2e-3: with ``certified_stop`` the first stops early with status
    ``certified`` and the same final risk (to 1e-12) as the run to |G| <= 1e-9/pi; the second is unchanged."""
    prob = ss_problem(8, 8).to_dict()
    prob = {**prob, "target": {**prob["target"], "seed": 0}}
    method = {"kind": "gd", "step_size": 0.05, "n_steps": 100000, "grad_tol": 3.1831e-10, "risk_tol": 2e-3,
              "n_checkpoints": 10, "refine": False}
    theta0 = np.random.default_rng(8).standard_normal((100, 64))[[3, 0]] / np.sqrt(8)
    full = reluflow.simulate(prob, method=method, theta0=theta0, n_trajectories=2, seed=0).trajectories
    cert = reluflow.simulate(prob, method={**method, "certified_stop": True, "certify_every": 250,
                                           "certify_below": 1e-4}, theta0=theta0, n_trajectories=2,
                             seed=0).trajectories
    assert full["status"].tolist() == ["critical", "zero_risk"]
    assert cert["status"].tolist() == ["certified", "zero_risk"]
    assert abs(cert["risk_final"][0] - full["risk_final"][0]) < 1e-12 and full["risk_final"][0] > 2e-3
    assert cert["steps"][0] < full["steps"][0] and cert["steps"][0] % 250 == 0
    assert cert["grad_norm_final"][0] < 1e-12  # the reported state is the certified limit, not the iterate
    for col in ("risk_final", "steps", "grad_norm_final"):
        assert cert[col][1] == full[col][1]  # a row never checked is bitwise the same
    with pytest.raises(ValueError, match="certified_stop"):
        reluflow.simulate({"network": {"input_dim": 1, "widths": [2]}, "measure": {"kind": "uniform"},
                           "target": {"kind": "polynomial", "coefficients": [0, 0, 1]},
                           "risk": {"backend": "exact1d"}},
                          method={"kind": "gd", "certified_stop": True}, n_trajectories=1, seed=0)


def test_certified_basins_reuse_a_certificate_by_symmetry():
    """A certified ball about the spurious n = k = 8 minimum, found once, certifies a symmetric image of the run
    (students and input coordinates permuted: an isometry that leaves this risk unchanged) without a new
    certificate, with the permuted limit; a teacher without coordinate symmetry admits no coordinate permutation."""
    from reluflow.analysis._certify_gaussian import CertifiedBasins

    p = ss_problem(8, 8)
    p = reluflow.Problem.from_dict({**p.to_dict(), "target": {**p.to_dict()["target"], "seed": 0}})
    theta = np.random.default_rng(8).standard_normal((100, 64))[3:4] / np.sqrt(8)
    for _ in range(5600):
        theta = theta - 0.05 * p.risk_and_grad(theta)[1]
    gnorm = np.linalg.norm(p.risk_and_grad(theta)[1], axis=1)
    basins = CertifiedBasins(p, 0.05)
    ok, lim, _ = basins.check(theta, gnorm)
    assert ok[0] and (basins.n_full, basins.n_reused) == (1, 0)
    rng = np.random.default_rng(0)
    pi, sigma = rng.permutation(8), rng.permutation(8)
    image = theta[0].reshape(8, 8)[pi][:, sigma].reshape(1, -1)
    assert abs(p.risk(image)[0] - p.risk(theta)[0]) < 1e-14  # the symmetry
    ok2, lim2, _ = basins.check(image, gnorm)
    assert ok2[0] and (basins.n_full, basins.n_reused) == (1, 1)
    # the image of the limit (the minimum is itself symmetric, so the alignment may pick another permutation
    # with the same image; the float points then agree to rounding)
    np.testing.assert_allclose(lim2[0], lim[0].reshape(8, 8)[pi][:, sigma].reshape(-1), rtol=0, atol=1e-12)
    # a far point of another basin is not certified by the cache (and not by a full check either)
    ok3, _, _ = basins.check(np.random.default_rng(1).standard_normal((1, 64)) / np.sqrt(8), np.array([1.0]))
    assert not ok3[0]
    generic = CertifiedBasins(ss_problem(4, 4, first_layer="normal"), 0.05)
    assert generic._teacher_invariant(np.arange(4))
    assert not any(generic._teacher_invariant(np.roll(np.arange(4), s)) for s in (1, 2, 3))


def test_perron_bound_bounds_every_spectral_norm_and_beats_the_row_sums():
    """``perron_bound(rad)`` >= ``|Delta|_2`` for every ``|Delta| <= rad`` (sampled, and ``Delta = max(rad, rad^T)``
    itself, which attains the bound's target ``rho``), never above the row-sum bound, and well below it on dense
    random matrices (the reason for it: the Hessian enclosures of ``eig_bounds_box``)."""
    from reluflow.analysis._certify_gaussian import perron_bound

    rng = np.random.default_rng(5)
    for P in (1, 7, 60, 200):
        rad = rng.uniform(0, 1, (P, P)) * (rng.uniform(size=(P, P)) < 0.4)
        bound = perron_bound(rad)
        S = np.maximum(rad, rad.T)
        # numpy's 2-norm is itself rounded (a few units in the last place): the slack is for the reference
        assert bound >= np.linalg.norm(S, 2) * (1 - 1e-14)
        for _ in range(30):
            assert np.linalg.norm(rng.uniform(-1, 1, (P, P)) * rad, 2) <= bound
        rows = S.sum(axis=1).max()
        assert bound <= np.nextafter(rows * (1 + 1e-12), np.inf)  # (the bound of 0 is the next float above 0)
        if P >= 60:
            assert bound < 0.9 * rows
    assert perron_bound(np.zeros((3, 3))) == np.nextafter(0.0, 1.0)
