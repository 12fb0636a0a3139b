"""Problems: input measures, targets and the ``Problem`` that ties them to a network and a risk backend."""

from ._measures import (
    MEASURES,
    Empirical,
    Gaussian,
    Measure,
    PiecewisePolynomialDensity,
    Uniform,
    file_sha256,
    measure_from_dict,
)
from ._problem import Problem
from ._targets import (
    FUNCTIONS,
    Affine,
    Constant,
    NamedFunction,
    PiecewisePolynomial,
    PiecewisePolynomialTarget,
    Target,
    Teacher,
    target_from_dict,
)

__all__ = [
    "FUNCTIONS", "MEASURES", "Affine", "Constant", "Empirical", "Gaussian", "Measure", "NamedFunction",
    "PiecewisePolynomial", "PiecewisePolynomialDensity", "PiecewisePolynomialTarget", "Problem", "Target",
    "Teacher", "Uniform", "file_sha256", "measure_from_dict", "target_from_dict",
]
