"""Kernel throughput on the canonical workloads: trajectory-steps/s of a GD step, GFLOP/s, fraction of the
machine's own float64 matmul peak (measured in the same run), and the speedup over a plain Python loop over
trajectories calling the same kernel one trajectory at a time."""

from __future__ import annotations

import time

import numpy as np

import reluflow

from ._timing import median_seconds, print_table
from .workloads import WORKLOADS, build


def matmul_peak_gflops(n: int = 1536, repeats: int = 5) -> float:
    """Single-threaded float64 GEMM throughput of this machine (BLAS threads are pinned to 1 by the runner)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    seconds = median_seconds(lambda: a @ b, repeats=repeats)
    return 2 * n**3 / seconds / 1e9


def nominal_flops(name: str, problem: reluflow.Problem) -> float | None:
    """Flops of one risk+gradient evaluation by the reference (textbook backpropagation) algorithm.

    Stated in bench/README.md; exact backends do asymptotically less work, so a GFLOP/s figure would mean
    nothing for them and ``None`` is returned.
    """
    arch = problem.architecture
    be = problem.backend
    if be.name == "quadrature" and arch.is_shallow and arch.activation == "relu":
        m, h, d = len(be.points), arch.widths[0], arch.input_dim
        # forward 2dMH (pre-activation) + MH (relu) + 2MH (output); backward 2MH (delta v) + MH (mask)
        # + 2MH (G_v) + 2dMH (G_w) + MH (G_b) = MH (4d + 9); d = 1 gives the 13 MH of the 4.3e5 for W1
        return m * h * (4 * d + 9)
    if be.name == "gaussian":
        h, d = arch.widths[0], arch.input_dim
        n = problem.target.arch.widths[0]
        # Gram matrices 2dH(H + n), kernels ~30 H(H + n), gradient products 4dH(H + n)
        return h * (h + n) * (6 * d + 30)
    return None


def gd_steps(problem: reluflow.Problem, theta: np.ndarray, n_steps: int, step_size: float) -> np.ndarray:
    """The bare GD loop of the kernel: theta <- theta - gamma G(theta)."""
    theta = theta.copy()
    for _ in range(n_steps):
        _, grad = problem.risk_and_grad(theta)
        theta -= step_size * grad
    return theta


def run(names: tuple[str, ...] = ("W1-quadrature", "W1-quadrature-points1d", "W1-quadrature-numba",
                                  "W1-quadrature-mask", "W1-exact1d", "W1-exact1d-numpy", "W2", "W2-numpy",
                                  "deep-tanh", "deep-relu", "W3"),
        steps: int = 5, repeats: int = 5, loop_trajectories: int = 64, scale: float = 1.0) -> dict:
    peak = matmul_peak_gflops()
    rows = []
    for name in names:
        spec = WORKLOADS[name]
        try:
            problem = build(spec["problem"], spec.get("kernel"))
        except (ValueError, NotImplementedError) as exc:
            rows.append({"workload": name, "note": f"skipped: {exc}"})
            continue
        n_traj = max(1, int(spec["T"] * scale))
        theta = reluflow_init(problem, n_traj)
        gamma = spec["method"]["step_size"]
        seconds = median_seconds(lambda p=problem, th=theta, g=gamma: gd_steps(p, th, steps, g), repeats=repeats)
        rate = n_traj * steps / seconds
        # the plain loop: the same kernel, one trajectory per call
        few = theta[:loop_trajectories]

        def loop(p=problem, th=few, g=gamma):
            for i in range(len(th)):
                gd_steps(p, th[i : i + 1], steps, g)

        loop_rate = len(few) * steps / median_seconds(loop, repeats=max(3, repeats // 2))
        flops = nominal_flops(name, problem)
        gflops = None if flops is None else rate * flops / 1e9
        rows.append({
            "workload": name, "backend": problem.backend_name, "kernel": getattr(problem.backend, "kernel", None),
            "T": n_traj, "traj_steps_per_s": rate,
            "gflops": gflops, "peak_fraction": None if gflops is None else gflops / peak,
            "loop_traj_steps_per_s": loop_rate, "batched_over_loop": rate / loop_rate,
            "flops_per_traj_step": flops,
        })
    print(f"GD kernel throughput (float64, one core; matmul peak measured now: {peak:.1f} GFLOP/s):")
    print_table(rows, ["workload", "backend", "kernel", "T", "traj_steps_per_s", "gflops", "peak_fraction",
                       "loop_traj_steps_per_s", "batched_over_loop", "note"])
    by_name = {r["workload"]: r for r in rows}
    ratios = {}
    for exact_name in ("W1-exact1d", "W1-exact1d-numpy"):
        exact = by_name.get(exact_name, {}).get("traj_steps_per_s")
        for quad in ("W1-quadrature", "W1-quadrature-mask"):
            rate = by_name.get(quad, {}).get("traj_steps_per_s")
            if exact is not None and rate is not None:
                key = f"{exact_name[3:]}_over_{quad[3:]}".replace("-", "_")
                ratios[key] = exact / rate
                print(f"W1 {exact_name[3:]} ({by_name[exact_name]['kernel']} kernel) / {quad[3:]} "
                      f"({by_name[quad]['kernel']} kernel): {exact / rate:.1f}x")
    compiled, numpy_rate = (by_name.get(n, {}).get("traj_steps_per_s") for n in ("W1-exact1d", "W1-exact1d-numpy"))
    if compiled is not None and numpy_rate is not None and by_name["W1-exact1d"]["kernel"] != "numpy":
        ratios["exact1d_compiled_over_numpy"] = compiled / numpy_rate
        print(f"W1 exact1d, compiled kernel / numpy kernel: {compiled / numpy_rate:.2f}x")
    for name in ("W1-quadrature", "W1-quadrature-points1d", "W1-quadrature-numba", "W1-quadrature-mask", "W2",
                 "W2-numpy", "deep-tanh", "deep-relu"):
        if by_name.get(name, {}).get("batched_over_loop") is not None:
            ratios[f"{name}_batched_over_loop"] = by_name[name]["batched_over_loop"]
            print(f"{name} ({by_name[name]['kernel']} kernel), batched / per-trajectory loop: "
                  f"{by_name[name]['batched_over_loop']:.1f}x [target >= 4x for the quadrature kernels]")
    peer_rows, peer_ratios = peers(steps=steps, repeats=max(repeats, 5), scale=scale, peak=peak)
    ratios.update(peer_ratios)
    return {"matmul_peak_gflops": peak, "rows": rows, "ratios": ratios, "peers": peer_rows}


def peers(steps: int = 5, repeats: int = 7, scale: float = 1.0, peak: float | None = None) -> tuple[list, dict]:
    """reluflow's kernels and the reference peers (``bench/peers.py``) on W1 and W2, interleaved: each repeat
    times every candidate once, in turn, so that a change in the machine's load hits all of them alike. Rates
    are medians over the repeats, with their spread (min, max) and the ratio per repeat to the fused numba peer."""
    peak = matmul_peak_gflops() if peak is None else peak
    rows, ratios = [], {}
    # the numpy peer is ~20-50x slower than the compiled kernels: fewer trajectories keep its repeats short
    for wl, kernels, T_numpy_peer in (("W1", ("points1d_numba", "points1d", "mask_numba"), 256),
                                      ("W2", ("mask_numba", "mask_gemm"), 128)):
        problem, rates = _peer_rates(wl, kernels, T_numpy_peer, steps, repeats, scale)
        be = problem.backend
        be.kernel = be.kernels[0]
        flops = nominal_flops(wl, problem)
        fused = np.array(rates["peer: fused numba"])
        for name, r in rates.items():
            r = np.array(r)
            rows.append({"workload": wl, "implementation": name, "traj_steps_per_s": float(np.median(r)),
                         "min": float(r.min()), "max": float(r.max()),
                         "gflops": float(np.median(r)) * flops / 1e9,
                         "peak_fraction": float(np.median(r)) * flops / 1e9 / peak,
                         "over_fused_peer": float(np.median(r / fused)),
                         "over_fused_min": float(np.min(r / fused)), "over_fused_max": float(np.max(r / fused))})
        default = f"reluflow {be.kernels[0]}"
        row = next(r for r in rows if r["workload"] == wl and r["implementation"] == default)
        ratios[f"{wl}_default_over_fused_numba_peer"] = row["over_fused_peer"]
        ratios[f"{wl}_default_peak_fraction"] = row["peak_fraction"]
    print(f"\nPeers, side by side (float64, one core, {repeats} interleaved repeats; median [min, max]; matmul peak "
          f"{peak:.1f} GFLOP/s):")
    print_table(rows, ["workload", "implementation", "traj_steps_per_s", "min", "max", "gflops", "peak_fraction",
                       "over_fused_peer", "over_fused_min", "over_fused_max"])
    print(f"W1 quadrature (default kernel) / fused numba peer: {ratios['W1_default_over_fused_numba_peer']:.2f}x "
          "[target >= 1.2x]")
    print(f"W2 (default kernel) / fused numba peer: {ratios['W2_default_over_fused_numba_peer']:.2f}x "
          f"[target >= 1.2x]; of the matmul peak: {ratios['W2_default_peak_fraction']:.0%} [target >= 30%]")
    deep_rows, deep_ratios = _deep_against_torch(steps, repeats, scale)
    rows += deep_rows
    ratios.update(deep_ratios)
    return rows, ratios


def _deep_against_torch(steps: int, repeats: int, scale: float) -> tuple[list, dict]:
    """reluflow's default kernel for the deep workloads (the compiled backpropagation where numba is installed),
    its numpy backpropagation and the torch autograd peer, interleaved as in ``peers``; nothing where torch is not
    installed."""
    from .peers import torch_deep_peer

    rows, ratios = [], {}
    for name in ("deep-tanh", "deep-relu"):
        spec = WORKLOADS[name]
        problem = build(spec["problem"])
        be = problem.backend
        peer = torch_deep_peer(problem.architecture, be.points, be.weights, be.target_values)
        if peer is None:
            print(f"{name} against torch: not measured (torch is not installed here; bench/README.md)")
            continue
        n_traj = max(1, int(spec["T"] * scale))
        theta = reluflow_init(problem, n_traj)
        gamma = spec["method"]["step_size"]
        r_ref, g_ref = problem.risk_and_grad(theta[:8])
        r, g = peer(theta[:8])
        err = max(np.max(np.abs(r - r_ref) / np.abs(r_ref)), np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref)))
        if not err < 1e-10:
            raise AssertionError(f"{name}: the torch peer differs from reluflow by {err:.2g}")

        def peer_steps(th=theta, fn=peer, g=gamma):
            th = th.copy()
            for _ in range(steps):
                th -= g * fn(th)[1]

        default = f"reluflow {be.kernel}"
        cands = {default: lambda p=problem, th=theta, g=gamma: gd_steps(p, th, steps, g)}
        if be.kernel != "backprop":  # the numpy backpropagation side by side with the compiled one
            numpy_problem = build(spec["problem"], "backprop")
            cands["reluflow backprop"] = lambda p=numpy_problem, th=theta, g=gamma: gd_steps(p, th, steps, g)
        cands["peer: torch"] = peer_steps
        rates = {c: [] for c in cands}
        for fn in cands.values():
            fn()
        for _ in range(repeats):
            for c, fn in cands.items():
                t0 = time.perf_counter()
                fn()
                rates[c].append(n_traj * steps / (time.perf_counter() - t0))
        torch_rate = np.array(rates["peer: torch"])
        for c, r in rates.items():
            r = np.array(r)
            rows.append({"workload": name, "implementation": c, "traj_steps_per_s": float(np.median(r)),
                         "min": float(r.min()), "max": float(r.max()),
                         "over_torch": float(np.median(r / torch_rate)),
                         "over_torch_min": float(np.min(r / torch_rate)),
                         "over_torch_max": float(np.max(r / torch_rate))})
        ours = next(row for row in rows if row["workload"] == name and row["implementation"] == default)
        ratios[f"{name}_default_over_torch"] = ours["over_torch"]
        if "reluflow backprop" in rates and default != "reluflow backprop":
            ratios[f"{name}_default_over_numpy_backprop"] = float(
                np.median(np.array(rates[default]) / np.array(rates["reluflow backprop"])))
    if rows:
        print(f"\nDeep nets (d = 2, widths [32, 32], M = 1024) against torch autograd (float64, one thread, {repeats} "
              "interleaved repeats):")
        print_table(rows, ["workload", "implementation", "traj_steps_per_s", "min", "max", "over_torch",
                           "over_torch_min", "over_torch_max"])
        for name in ("deep-tanh", "deep-relu"):
            if f"{name}_default_over_torch" in ratios:
                print(f"{name} (default kernel) / torch: {ratios[f'{name}_default_over_torch']:.2f}x [target >= 1.5x]")
            if f"{name}_default_over_numpy_backprop" in ratios:
                print(f"{name} (default kernel) / numpy backprop: "
                      f"{ratios[f'{name}_default_over_numpy_backprop']:.2f}x")
    return rows, ratios


def _peer_rates(wl: str, kernels: tuple[str, ...], T_numpy_peer: int, steps: int, repeats: int,
                scale: float) -> tuple[reluflow.Problem, dict[str, list[float]]]:
    """``{candidate: [traj-steps/s per repeat]}`` for reluflow's ``kernels`` and the peers on workload ``wl``."""
    from .peers import fused_numba_shallow, numpy_mask_gemm_shallow

    spec = WORKLOADS["W2" if wl == "W2" else "W1-quadrature"]
    problem = build(spec["problem"])
    be = problem.backend
    n_traj = max(1, int(spec["T"] * scale))
    theta = reluflow_init(problem, n_traj)
    gamma = spec["method"]["step_size"]
    data = (be.points, be.weights, be.target_values, problem.architecture.widths[0])
    # the peers compute what reluflow computes: checked before they are timed
    r_ref, g_ref = problem.risk_and_grad(theta[:8])
    for peer in (fused_numba_shallow, numpy_mask_gemm_shallow):
        r, g = peer(theta[:8], *data)
        err = max(np.max(np.abs(r - r_ref) / np.abs(r_ref)), np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref)))
        if not err < 1e-10:
            raise AssertionError(f"{wl}: peer {peer.__name__} differs from reluflow by {err:.2g}")

    def peer_steps(fn, th):
        th = th.copy()
        for _ in range(steps):
            th -= gamma * fn(th, *data)[1]

    def kernel_steps(kernel, th):
        problem.backend.kernel = kernel
        gd_steps(problem, th, steps, gamma)

    few = theta[: max(1, int(T_numpy_peer * scale))]
    cands = {f"reluflow {k}": (lambda k=k: kernel_steps(k, theta), n_traj) for k in kernels}
    cands["peer: fused numba"] = (lambda: peer_steps(fused_numba_shallow, theta), n_traj)
    cands["peer: numpy mask-GEMM"] = (lambda: peer_steps(numpy_mask_gemm_shallow, few), len(few))
    rates = {name: [] for name in cands}
    for fn, _ in cands.values():  # warm-up (and compilation)
        fn()
    for _ in range(repeats):
        for name, (fn, n) in cands.items():
            t0 = time.perf_counter()
            fn()
            rates[name].append(n * steps / (time.perf_counter() - t0))
    be.kernel = be.kernels[0]
    return problem, rates


def reluflow_init(problem: reluflow.Problem, n_traj: int) -> np.ndarray:
    """Standard-normal initial parameters (the seeds' default), from a fixed benchmark key."""
    return np.random.default_rng([n_traj, problem.n_params, 2026]).standard_normal((n_traj, problem.n_params))
