"""Every bad problem spec raises a ValueError that names the field, the value and what is allowed."""

import pytest

import reluflow

GOOD = {
    "network": {"input_dim": 1, "widths": [4]},
    "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
    "target": {"kind": "piecewise_affine", "knots": [0, 0.5, 1], "values": [0, 1, 0]},
}


def spec(**parts):
    out = {k: dict(v) for k, v in GOOD.items()}
    for key, value in parts.items():
        out[key] = value
    return out


CASES = {
    "low >= high": (spec(measure={"kind": "uniform", "low": 1.0, "high": 1.0}), ["measure.low", "1.0", "low < high"]),
    "negative density": (
        spec(measure={"kind": "piecewise_polynomial", "knots": [0, 1], "coefficients": [[1.0, -3.0]]}),
        ["measure.coefficients[0]", "non-negative", "minimum"],
    ),
    "zero mass density": (
        spec(measure={"kind": "piecewise_polynomial", "knots": [0, 1], "coefficients": [[0.0]]}),
        ["measure.coefficients", "positive total mass"],
    ),
    "unsorted density knots": (
        spec(measure={"kind": "piecewise_polynomial", "knots": [0, 2, 1], "coefficients": [[1], [1]]}),
        ["measure.knots", "strictly increasing"],
    ),
    "width 0": (spec(network={"input_dim": 1, "widths": [0]}), ["network.widths", "[0]", "integers >= 1"]),
    "no hidden layer": (spec(network={"input_dim": 1, "widths": []}), ["network.widths", "non-empty"]),
    "unknown activation": (
        spec(network={"input_dim": 1, "widths": [4], "activation": "gelu"}),
        ["network.activation", "'gelu'", "relu", "tanh"],
    ),
    "bias list of wrong length": (
        spec(network={"input_dim": 1, "widths": [4], "bias": [True]}),
        ["network.bias", "list of 2 booleans"],
    ),
    "unknown network key": (spec(network={"input_dim": 1, "widths": [4], "depth": 3}), ["network", "'depth'"]),
    "unknown target kind": (spec(target={"kind": "spline"}), ["target.kind", "'spline'", "piecewise_affine"]),
    "unknown function": (spec(target={"kind": "function", "name": "erf"}), ["target.name", "'erf'", "sin"]),
    "target missing key": (spec(target={"kind": "piecewise_affine", "knots": [0, 1]}), ["target.values", "missing"]),
    "target values mismatch": (
        spec(target={"kind": "piecewise_affine", "knots": [0, 1], "values": [0, 1, 2]}),
        ["target.values", "2 finite values"],
    ),
    "unknown measure kind": (spec(measure={"kind": "cauchy"}), ["measure.kind", "'cauchy'", "uniform"]),
    "gaussian sigma": (spec(measure={"kind": "gaussian", "sigma": -1.0}), ["measure.sigma", "-1.0", "> 0"]),
    "measure dim mismatch": (
        spec(measure={"kind": "uniform", "low": 0, "high": 1, "dim": 2}),
        ["measure.dim = 2", "network.input_dim = 1"],
    ),
    "target outputs mismatch": (
        spec(target={"kind": "affine", "slope": [[1.0], [2.0]]}),
        ["2 output(s)", "network.output_dim = 1"],
    ),
    "teacher output mismatch": (
        spec(target={"kind": "teacher", "widths": [3], "output_dim": 2, "seed": 0}),
        ["2 output(s)", "network.output_dim = 1"],
    ),
    "teacher parameters length": (
        spec(target={"kind": "teacher", "widths": [3], "parameters": [1.0, 2.0]}),
        ["target.parameters", "2 values", "10 finite values"],
    ),
    "teacher unit vectors beyond d": (
        spec(target={"kind": "teacher", "widths": [3], "first_layer": "unit_vectors", "seed": 0}),
        ["target.first_layer", "at most input_dim = 1"],
    ),
    "teacher width 0": (spec(target={"kind": "teacher", "widths": [0], "seed": 0}), ["target.widths", "[0]"]),
    "unknown backend": (spec(risk={"backend": "montecarlo"}), ["risk.backend", "'montecarlo'", "quadrature"]),
    "exact1d on a deep net": (
        spec(network={"input_dim": 1, "widths": [4, 4]}, risk={"backend": "exact1d"}),
        ["risk.backend = 'exact1d'", "one hidden layer"],
    ),
    "exact1d on a smooth target": (
        spec(target={"kind": "function", "name": "sin"}, risk={"backend": "exact1d"}),
        ["risk.backend = 'exact1d'", "piecewise polynomial"],
    ),
    "gaussian on a uniform measure": (spec(risk={"backend": "gaussian"}), ["risk.backend = 'gaussian'", "gaussian"]),
    "bad dtype": (spec(risk={"dtype": "float16"}), ["risk.dtype", "'float16'", "float32"]),
    "bad n_points": (spec(risk={"n_points": 0}), ["risk.n_points", "0", ">= 1"]),
    "unknown risk key": (spec(risk={"points": 10}), ["risk", "'points'", "n_points"]),
    "unknown problem key": ({**GOOD, "optimizer": "adam"}, ["problem", "'optimizer'"]),
    "missing target": ({"network": GOOD["network"], "measure": GOOD["measure"]}, ["problem.target", "missing"]),
    "empirical without source": (spec(measure={"kind": "empirical"}), ["empirical", "'path'", "'sample'"]),
    "empirical missing file": (
        spec(measure={"kind": "empirical", "path": "/nonexistent/x.npy"}),
        ["measure.path", "/nonexistent/x.npy", "existing"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_spec_names_field_value_and_allowed(case):
    bad, fragments = CASES[case]
    with pytest.raises(ValueError) as err:
        reluflow.Problem.from_dict(bad)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_good_spec_builds_and_auto_picks_the_exact_backend():
    p = reluflow.Problem.from_dict(GOOD)
    assert p.n_params == 13
    assert p.backend_name == "exact1d"
