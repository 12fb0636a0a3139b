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


def by_kernel(problem, theta: np.ndarray, kernels) -> dict[str, tuple[np.ndarray, ...]]:
    """``{kernel: (risk, G, risk without G)}`` of ``problem`` on each of its backend's ``kernels``; the backend's
    default kernel is restored afterwards."""
    backend = problem.backend
    out = {}
    try:
        for kernel in kernels:
            backend.kernel = kernel
            out[kernel] = (*problem.risk_and_grad(theta), problem.risk(theta))
            assert backend.kernel == kernel  # no silent fallback: numpy against numpy would prove nothing
    finally:
        backend.kernel = backend.kernels[0]
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The count of mutated configs tests/test_config_fuzz.py checked (issue #17: the fuzz reports its count)."""
    report = getattr(config, "reluflow_fuzz_report", None)
    if report:
        terminalreporter.write_line(report)


@pytest.fixture(scope="session")
def local_tiny_tables(tmp_path_factory):
    """The tables of cluster_helpers.TINY run locally (`snakemake --cores 2`): what every cluster run of the same
    study must reproduce, provenance metadata aside (tests/test_cluster.py, tests/test_slurm.py)."""
    from cluster_helpers import TINY, result_tables, run, workflow_copy

    d = workflow_copy(tmp_path_factory.mktemp("local") / "wf", TINY)
    done = run("snakemake --cores 2", d, 600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    tables = result_tables(d / "results" / "tiny")
    assert {"cells.parquet", "summary.parquet", "trajectories/w3.parquet", "curves/w3.parquet"} <= set(tables)
    return tables
