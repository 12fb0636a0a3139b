"""Fully connected architectures and the one flat parameter layout.

Layout of ``theta`` (shape ``(T, P)``, one row per trajectory), layer by layer from the input:

    W_1 (h_1 x d, row-major: row j = incoming weights of unit j), b_1 (h_1,),
    W_2 (h_2 x h_1), b_2 (h_2,), ..., W_{L+1} (k x h_L), b_{L+1} (k,)

A bias is omitted where that layer has no bias. When the output layer is fixed (``fixed_output``), neither
``W_{L+1}`` nor ``b_{L+1}`` is in ``theta``: the output weights are the constant ``fixed_output`` and the output
bias is zero. For the shallow net of SCIENCE.md §1 this is ``theta = (w, b, v, c)`` with ``P = Hd + H + kH + k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._limits import LIMITS
from .._numbers import is_real
from ._activations import ACTIVATIONS, DERIVATIVES, DERIVATIVES_OF_OUTPUT

__all__ = ["Architecture", "LayerSlice", "forward", "forward_backward"]


@dataclass(frozen=True)
class LayerSlice:
    """Where one layer's parameters sit in ``theta``; ``None`` for parts that are not trained."""

    n_in: int
    n_out: int
    weight: slice | None
    bias: slice | None


def _spec_error(field_name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"network.{field_name} = {value!r} is not allowed: expected {allowed}")


@dataclass(frozen=True)
class Architecture:
    """A fully connected network ``R^d -> R^k`` with hidden widths ``widths``.

    ``bias`` has one entry per layer (hidden layers, then output layer). ``fixed_output`` holds the output
    layer at that constant (and its bias at zero), outside ``theta``.
    """

    input_dim: int
    widths: tuple[int, ...]
    output_dim: int = 1
    activation: str = "relu"
    bias: tuple[bool, ...] = ()
    fixed_output: float | None = None
    negative_slope: float = 0.01
    layers: tuple[LayerSlice, ...] = field(init=False, repr=False, compare=False)
    n_params: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("input_dim", "output_dim"):
            value = getattr(self, key)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise _spec_error(key, value, "an integer >= 1")
        widths = tuple(self.widths)
        if len(widths) == 0:
            raise _spec_error("widths", list(widths), "a non-empty list of hidden widths")
        for w in widths:
            if not isinstance(w, int | np.integer) or isinstance(w, bool) or w < 1:
                raise _spec_error("widths", list(widths), "a list of integers >= 1 (one per hidden layer)")
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise _spec_error("activation", self.activation, f"one of {sorted(ACTIVATIONS)}")
        n_layers = len(widths) + 1
        bias = self.bias
        if isinstance(bias, bool):
            bias = (bias,) * n_layers
        elif len(bias) == 0:
            bias = (True,) * n_layers
        bias = tuple(bias)
        if len(bias) != n_layers or not all(isinstance(b, bool) for b in bias):
            raise _spec_error(
                "bias", list(bias), f"true/false or a list of {n_layers} booleans (hidden layers, then output)"
            )
        object.__setattr__(self, "bias", bias)
        if self.fixed_output is not None and not (is_real(self.fixed_output) and np.isfinite(self.fixed_output)):
            raise _spec_error("fixed_output", self.fixed_output, "a finite number or null")
        if not (is_real(self.negative_slope) and np.isfinite(self.negative_slope)):
            raise _spec_error("negative_slope", self.negative_slope, "a finite number")

        sizes = (int(self.input_dim), *widths, int(self.output_dim))
        layers, offset = [], 0
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            trainable = not (layer == n_layers - 1 and self.fixed_output is not None)
            w_slice = b_slice = None
            if trainable:
                w_slice = slice(offset, offset + n_out * n_in)
                offset += n_out * n_in
                if bias[layer]:
                    b_slice = slice(offset, offset + n_out)
                    offset += n_out
            layers.append(LayerSlice(n_in, n_out, w_slice, b_slice))
        if offset > LIMITS["n_params"]:  # before anything allocates (T, P) arrays
            raise _spec_error(
                "widths", list(widths),
                f"at most {LIMITS['n_params']} parameters per trajectory (LIMITS['n_params'], docs/running.md): "
                f"with input_dim {self.input_dim} and output_dim {self.output_dim} these widths give P = {offset} "
                f"({offset * 8 / 1e9:.3g} GB per float64 copy)")
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "n_params", offset)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Architecture:
        """Build from the config shape ``{input_dim, widths, output_dim, activation, bias, fixed_output}``."""
        if not isinstance(spec, dict):
            raise ValueError(f"network = {spec!r} is not allowed: expected a mapping")
        allowed = {"input_dim", "widths", "width", "output_dim", "activation", "bias", "fixed_output",
                   "negative_slope"}
        unknown = sorted(set(spec) - allowed, key=str)
        if unknown:
            raise ValueError(f"network has unknown key(s) {unknown}: allowed keys are {sorted(allowed)}")
        widths = spec.get("widths")
        if widths is None and "width" in spec:
            widths = [spec["width"]]
        if widths is None:
            raise ValueError("network.widths is missing: give a list of hidden widths, e.g. [32]")
        if isinstance(widths, int) and not isinstance(widths, bool):
            widths = [widths]
        if not isinstance(widths, list | tuple):
            raise _spec_error("widths", widths, "a list of integers >= 1 (one per hidden layer)")
        bias = spec.get("bias", True)
        if not isinstance(bias, bool | list | tuple):
            raise _spec_error("bias", bias, "true/false or a list of booleans (hidden layers, then output)")
        negative_slope = spec.get("negative_slope", 0.01)
        if not is_real(negative_slope):
            raise _spec_error("negative_slope", negative_slope, "a finite number")
        return cls(
            input_dim=spec.get("input_dim", 1),
            widths=tuple(widths),
            output_dim=spec.get("output_dim", 1),
            activation=spec.get("activation", "relu"),
            bias=bias,
            fixed_output=spec.get("fixed_output"),
            negative_slope=float(negative_slope),
        )

    # ------------------------------------------------------------------ layout
    @property
    def n_hidden_layers(self) -> int:
        return len(self.widths)

    @property
    def is_shallow(self) -> bool:
        return len(self.widths) == 1

    def unflatten(self, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Zero-copy views ``[(W_l (T, n_out, n_in), b_l (T, n_out) or None), ...]`` of ``theta`` ``(T, P)``.

        A fixed output layer appears as a read-only broadcast constant of shape ``(1, k, h_L)``.
        """
        theta = np.asarray(theta)
        if theta.ndim != 2 or theta.shape[1] != self.n_params:
            raise ValueError(f"theta has shape {theta.shape}: expected (T, {self.n_params}) for this network")
        views = []
        for ls in self.layers:
            if ls.weight is None:
                w = np.broadcast_to(np.asarray(self.fixed_output, dtype=theta.dtype), (1, ls.n_out, ls.n_in))
                views.append((w, None))
                continue
            w = theta[:, ls.weight].reshape(theta.shape[0], ls.n_out, ls.n_in)
            b = theta[:, ls.bias] if ls.bias is not None else None
            views.append((w, b))
        return views

    def hidden_unit_slices(self) -> list[tuple[slice, slice | None]]:
        """For each hidden layer, the weight and bias slices (used for per-unit statistics)."""
        return [(ls.weight, ls.bias) for ls in self.layers[:-1]]

    def layout(self) -> dict[str, Any]:
        """What fixes the meaning of each entry of ``theta``: sizes, biases and whether the output layer is
        trained. Two architectures with the same layout (say relu and tanh) share initializations."""
        return {
            "input_dim": int(self.input_dim),
            "widths": list(self.widths),
            "output_dim": int(self.output_dim),
            "bias": list(self.bias),
            "trained_output": self.fixed_output is None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_dim": int(self.input_dim),
            "widths": list(self.widths),
            "output_dim": int(self.output_dim),
            "activation": self.activation,
            "bias": list(self.bias),
            "fixed_output": self.fixed_output,
            "negative_slope": self.negative_slope,
        }


def forward(arch: Architecture, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Network outputs ``(T, M, k)`` for parameters ``theta`` ``(T, P)`` at points ``x`` ``(M, d)``."""
    act = ACTIVATIONS[arch.activation]
    views = arch.unflatten(theta)
    a = np.broadcast_to(x, (theta.shape[0], *x.shape))
    for layer, (w, b) in enumerate(views):
        z = np.matmul(a, np.swapaxes(w, 1, 2))
        if b is not None:
            z = z + b[:, None, :]
        a = z if layer == len(views) - 1 else act(z, arch.negative_slope)
    return a


def forward_backward(
    arch: Architecture,
    theta: np.ndarray,
    x: np.ndarray,
    weights: np.ndarray,
    target_values: np.ndarray,
    need_grad: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Risk ``sum_m w_m |N(x_m) - f(x_m)|^2`` ``(T,)`` and its generalized gradient ``(T, P)``.

    ``x`` ``(M, d)``, ``weights`` ``(M,)``, ``target_values`` ``(M, k)``. Backpropagation with the activation
    derivatives of ``DERIVATIVES`` (``relu'(0) = 0``; tanh' and sigmoid' taken from the stored activations,
    ``DERIVATIVES_OF_OUTPUT``, the same numbers). Each trajectory's arithmetic is independent of the others,
    so a row's result does not depend on the batch it is evaluated in.
    """
    act = ACTIVATIONS[arch.activation]
    dact = DERIVATIVES[arch.activation]
    of_output = DERIVATIVES_OF_OUTPUT.get(arch.activation)
    slope = arch.negative_slope
    views = arch.unflatten(theta)
    n_traj = theta.shape[0]
    pre: list[np.ndarray] = []
    post: list[np.ndarray] = [np.broadcast_to(x, (n_traj, *x.shape))]
    a = post[0]
    last = len(views) - 1
    for layer, (w, b) in enumerate(views):
        z = np.matmul(a, np.swapaxes(w, 1, 2))
        if b is not None:
            z += b[:, None, :]
        if layer == last:
            a = z
        else:
            pre.append(z)
            a = act(z, slope)
            post.append(a)
    residual = a - target_values  # (T, M, k)
    weighted = residual * weights[:, None]
    risk = np.einsum("tmk,tmk->t", weighted, residual)
    if not need_grad:
        return risk, None
    grad = np.empty((n_traj, arch.n_params), dtype=theta.dtype)
    delta = 2.0 * weighted  # dRisk/dz at the output layer, (T, M, n_out)
    for layer in range(last, -1, -1):
        ls = arch.layers[layer]
        w = views[layer][0]
        if ls.weight is not None:
            gw = np.matmul(np.swapaxes(delta, 1, 2), post[layer])  # (T, n_out, n_in)
            grad[:, ls.weight] = gw.reshape(n_traj, -1)
            if ls.bias is not None:
                grad[:, ls.bias] = delta.sum(axis=1)
        if layer > 0:
            delta = np.matmul(delta, w)
            delta *= dact(pre[layer - 1], slope) if of_output is None else of_output(post[layer], slope)
    return risk, grad
