import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


def central_differences(f, theta: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of a batched scalar function ``f: (T, P) -> (T,)``, shape ``(T, P)``."""
    n, p = theta.shape
    out = np.empty((n, p))
    for j in range(p):
        e = np.zeros(p)
        e[j] = h
        out[:, j] = (f(theta + e) - f(theta - e)) / (2 * h)
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The count of mutated configs tests/test_config_fuzz.py checked (issue #17: the fuzz reports its count)."""
    report = getattr(config, "reluflow_fuzz_report", None)
    if report:
        terminalreporter.write_line(report)
