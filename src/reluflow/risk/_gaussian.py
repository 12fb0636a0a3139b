"""The ``gaussian`` backend (being written): closed-form risk for bias-free ReLU student–teacher, Gaussian inputs."""

from __future__ import annotations

from ..problem._measures import Gaussian
from ..problem._targets import Teacher
from ._base import RiskBackend


class GaussianRisk(RiskBackend):
    name = "gaussian"

    @classmethod
    def why_not(cls, arch, measure, target) -> str | None:
        if not isinstance(measure, Gaussian):
            return f"it needs a gaussian measure (got {measure.kind!r})"
        if measure.dim != arch.input_dim:
            return f"the measure has dimension {measure.dim} but network.input_dim = {arch.input_dim}"
        if not arch.is_shallow or arch.activation != "relu" or any(arch.bias):
            return "it needs a shallow bias-free ReLU student (one hidden layer, activation relu, bias false)"
        if not isinstance(target, Teacher):
            return "it needs a teacher target"
        t = target.arch
        if not t.is_shallow or t.activation != "relu" or any(t.bias):
            return "it needs a shallow bias-free ReLU teacher (one hidden layer, activation relu, bias false)"
        if t.input_dim != arch.input_dim or t.output_dim != arch.output_dim:
            return "the teacher's input/output dimensions must match the student's"
        return None
