import numpy as np
import pytest

from reluflow.network import ACTIVATIONS, DERIVATIVES, Architecture, forward
from reluflow.network._activations import DERIVATIVES_OF_OUTPUT


def test_shallow_layout_matches_science_md():
    arch = Architecture(input_dim=3, widths=(5,), output_dim=2)
    assert arch.n_params == 5 * 3 + 5 + 2 * 5 + 2
    theta = np.arange(arch.n_params, dtype=float)[None, :]
    (w, b), (v, c) = arch.unflatten(theta)
    np.testing.assert_array_equal(w[0], np.arange(15).reshape(5, 3))
    np.testing.assert_array_equal(b[0], np.arange(15, 20))
    np.testing.assert_array_equal(v[0], np.arange(20, 30).reshape(2, 5))
    np.testing.assert_array_equal(c[0], [30, 31])


def test_unflatten_views_are_zero_copy():
    arch = Architecture(input_dim=2, widths=(4, 3), output_dim=1)
    theta = np.zeros((6, arch.n_params))
    views = arch.unflatten(theta)
    views[1][0][2, 1, 0] = 7.0
    views[0][1][3, 2] = -1.0
    assert theta[2, arch.layers[1].weight][1 * 4 + 0] == 7.0  # row-major (n_out, n_in)
    assert theta[3, arch.layers[0].bias][2] == -1.0
    for w, b in views:
        assert np.shares_memory(w, theta)
        assert b is None or np.shares_memory(b, theta)


def test_bias_switch_and_fixed_output_drop_parameters():
    arch = Architecture(input_dim=2, widths=(4,), output_dim=1, bias=(False, True), fixed_output=1.0)
    assert arch.n_params == 8  # only W_1
    (w, b), (v, c) = arch.unflatten(np.ones((2, 8)))
    assert b is None and c is None
    assert v.shape == (1, 1, 4) and np.all(v == 1.0)


def test_forward_matches_hand_computation(rng):
    arch = Architecture(input_dim=2, widths=(3, 2), output_dim=2, activation="tanh")
    theta = rng.standard_normal((4, arch.n_params))
    x = rng.standard_normal((5, 2))
    out = forward(arch, theta, x)
    for t in range(4):
        (w1, b1), (w2, b2), (w3, b3) = [(w[t], b[t]) for w, b in arch.unflatten(theta)]
        ref = np.tanh(np.tanh(x @ w1.T + b1) @ w2.T + b2) @ w3.T + b3
        np.testing.assert_allclose(out[t], ref, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivatives_match_finite_differences(name):
    z = np.linspace(-4, 4, 81) + 0.0123  # avoid the kink at 0
    h = 1e-6
    fd = (ACTIVATIONS[name](z + h) - ACTIVATIONS[name](z - h)) / (2 * h)
    np.testing.assert_allclose(DERIVATIVES[name](z), fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", sorted(DERIVATIVES_OF_OUTPUT))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_derivatives_of_the_output_are_the_derivatives_bit_for_bit(name, dtype):
    # backpropagation takes them from the activation's output: the gradient must not change by a bit
    z = (np.random.default_rng(1).standard_normal(4096) * 6).astype(dtype)
    z[:4] = [0.0, -1e4, 1e4, 1e-30]
    got = DERIVATIVES_OF_OUTPUT[name](ACTIVATIONS[name](z))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, DERIVATIVES[name](z))


def test_relu_derivative_at_zero_is_zero():
    # the generalized gradient of SCIENCE.md §3: relu'(0) := 1[0 > 0] = 0
    assert DERIVATIVES["relu"](np.array([0.0]))[0] == 0.0
    assert DERIVATIVES["leaky_relu"](np.array([0.0]), 0.1)[0] == pytest.approx(0.1)


def test_activations_do_not_overflow():
    z = np.array([-1e4, 1e4])
    for name in ACTIVATIONS:
        assert np.all(np.isfinite(ACTIVATIONS[name](z))), name
        assert np.all(np.isfinite(DERIVATIVES[name](z))), name
