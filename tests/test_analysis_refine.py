"""Refinement of approximate critical points by damped Newton on G = 0."""

import numpy as np

from reluflow.analysis import hessian_spectrum, refine_critical_points
from test_analysis_toys import PL_GLOBAL_MIN, PL_TARGET, Quadratic, Saddle2D, shallow_problem, theta_of


def test_quadratic_converges_to_the_solution(rng):
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a = (q * np.array([10.0, 3.0, 1.0, 0.1, -0.5, -4.0])) @ q.T  # indefinite, condition 100
    g = rng.standard_normal(6)
    star = np.linalg.solve(a, g)
    theta = star + 1e-3 * rng.standard_normal((5, 6))
    out = refine_critical_points(Quadratic(a, g), theta)
    assert set(out) == {"theta", "moved", "grad_norm", "converged"}
    assert out["converged"].all() and out["converged"].dtype == bool
    assert np.all(out["grad_norm"] < 1e-13)
    np.testing.assert_allclose(out["theta"], np.broadcast_to(star, theta.shape), atol=1e-13)
    np.testing.assert_allclose(out["moved"], np.linalg.norm(theta - star, axis=1), rtol=1e-9)


def test_quadratic_singular_moves_orthogonally_to_the_null_space(rng):
    # A with a null space: the critical set is an affine subspace; refinement projects onto it
    a = np.diag([2.0, 1.0, 0.0, 0.0])
    theta = np.array([[1e-3, -2e-3, 0.7, -0.3]])
    out = refine_critical_points(Quadratic(a), theta)
    assert out["converged"][0]
    np.testing.assert_allclose(out["theta"][0], [0.0, 0.0, 0.7, -0.3], atol=1e-15)
    np.testing.assert_allclose(out["moved"][0], np.hypot(1e-3, 2e-3), rtol=1e-12)


def test_non_finite_rows_stay_put_and_do_not_affect_others(rng):
    a = np.diag([3.0, 1.0, 0.5])
    theta = 1e-2 * rng.standard_normal((4, 3))
    theta[1] = np.nan
    theta[3, 0] = np.inf
    out = refine_critical_points(Quadratic(a), theta)
    assert not out["converged"][1] and not out["converged"][3]
    assert np.isnan(out["moved"][1]) and np.isnan(out["moved"][3])
    np.testing.assert_array_equal(out["theta"][[1, 3]], theta[[1, 3]])
    for i in (0, 2):
        alone = refine_critical_points(Quadratic(a), theta[i : i + 1])
        for key in out:
            np.testing.assert_array_equal(out[key][i], alone[key][0])


def test_saddle_is_found():
    theta = np.array([[1e-2, -3e-2], [0.2, 0.1]])
    out = refine_critical_points(Saddle2D(), theta)
    assert out["converged"].all()
    np.testing.assert_allclose(out["theta"], 0.0, atol=1e-15)


def test_all_dead_point_on_a_network():
    # the all-dead critical point of f = 2x (risk 1/3), perturbed in c and in the (flat) dead-unit directions:
    # only c has to move, by exactly its perturbation
    p = shallow_problem(3, {"kind": "affine", "slope": 2.0})
    star = theta_of(w=[1.0, -1.0, 2.0], b=[-2.0, -0.5, -3.0], v=[0.4, -1.2, 0.9], c=[1.0])
    start = np.repeat(star, 3, axis=0)
    start[:, -1] += [1e-3, -2e-2, 3e-7]
    start[:, 6:9] += 1e-2  # dead units' output weights: a flat direction
    start[1, :3] += 1e-3  # dead units' incoming weights: flat while the kinks stay outside [0, 1]
    out = refine_critical_points(p, start)
    assert out["converged"].all() and np.all(out["grad_norm"] < 1e-14)
    np.testing.assert_allclose(out["theta"][:, -1], 1.0, atol=1e-15)
    np.testing.assert_allclose(out["moved"], np.abs(start[:, -1] - 1.0), rtol=1e-10)
    np.testing.assert_allclose(p.risk(out["theta"]), 1.0 / 3.0, rtol=1e-14)


def test_zero_risk_manifold_is_reached_without_leaving_the_neighbourhood(rng):
    # near a regular global minimum the critical set is a 5-dimensional manifold; refinement lands on it,
    # no farther than the starting point's distance from the constructed point
    p = shallow_problem(3, PL_TARGET)
    pert = 1e-4 * rng.standard_normal((4, p.n_params))
    out = refine_critical_points(p, PL_GLOBAL_MIN + pert)
    assert out["converged"].all()
    assert np.all(out["grad_norm"] < 1e-14)
    assert np.all(p.risk(out["theta"]) < 1e-28)
    assert np.all(out["moved"] <= np.linalg.norm(pert, axis=1) * (1 + 1e-6))
    s = hessian_spectrum(p, out["theta"])
    np.testing.assert_array_equal(s["hessian_rank"], 5)
    np.testing.assert_array_equal(s["n_negative"], 0)


def test_network_rows_are_batch_independent(rng):
    p = shallow_problem(3, PL_TARGET)
    start = PL_GLOBAL_MIN + 1e-3 * rng.standard_normal((3, p.n_params))
    start[1, 4] = np.nan
    out = refine_critical_points(p, start)
    assert not out["converged"][1]
    for i in (0, 2):
        alone = refine_critical_points(p, start[i : i + 1])
        for key in out:
            np.testing.assert_array_equal(out[key][i], alone[key][0])


def test_max_iter_bounds_the_work(rng):
    a = np.diag([1.0, 2.0])
    toy = Quadratic(a)
    out = refine_critical_points(toy, np.array([[1.0, 1.0]]), max_iter=0)
    assert not out["converged"][0] and out["moved"][0] == 0.0
    assert toy.calls == 1  # the gradient at the start only


def test_empty_batches():
    from reluflow.analysis import classify, rate_fits

    toy = Quadratic(np.eye(3))
    assert refine_critical_points(toy, np.zeros((0, 3)))["theta"].shape == (0, 3)
    assert all(v.shape == (0,) for v in hessian_spectrum(toy, np.zeros((0, 3))).values())
    empty = np.zeros(0)
    assert classify(np.array([], str), empty, empty.astype(bool), empty, risk_tol=1.0).shape == (0,)
    for shape in [(0, 5), (3, 0)]:
        z = np.zeros(shape)
        out = rate_fits(z, z, np.ones(shape, bool), bounded=np.ones(shape[0], bool))
        assert all(v.shape == (shape[0],) for v in out.values())


def test_eigh_deflated_matches_the_full_decomposition(rng):
    """Zero rows/columns (dead units) are split off before the eigendecomposition: same spectrum, same matrix."""
    from reluflow.analysis._critical import eigh_deflated

    n, p = 7, 9
    a = rng.standard_normal((n, p, p))
    hess = a + np.swapaxes(a, 1, 2)
    # rows with 0, 1, 3 and all coordinates dead, and two rows sharing a count but not the coordinates
    dead = {1: [4], 2: [0, 5, 8], 3: [2, 3, 6], 4: list(range(p)), 5: [8]}
    for i, coords in dead.items():
        hess[i, coords, :] = 0.0
        hess[i, :, coords] = 0.0
    lam, q = eigh_deflated(hess)
    assert lam.shape == (n, p) and q.shape == (n, p, p)
    np.testing.assert_allclose(np.sort(lam, axis=1), np.linalg.eigvalsh(hess), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", q, q), np.broadcast_to(np.eye(p), (n, p, p)), atol=1e-12)
    np.testing.assert_allclose(np.einsum("nij,nj,nkj->nik", q, lam, q), hess, rtol=0, atol=1e-12)
    for i, coords in dead.items():  # the dead coordinates are exact unit eigenvectors with eigenvalue 0
        assert np.sum(lam[i] == 0.0) >= len(coords)
    # rows without dead coordinates take the plain batched decomposition
    lam_full, _ = np.linalg.eigh(hess[[0, 6]])
    np.testing.assert_array_equal(eigh_deflated(hess[[0, 6]])[0], lam_full)
