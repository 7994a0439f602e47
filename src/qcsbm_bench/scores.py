"""The score parameterisations: unconstrained (USBM, QCSBM) and conservative (CSBM).

All variants share one call, `model(x, t) -> score` with the shape of x, so samplers,
metrics and the likelihood never branch on the variant. A QCSBM is an `UnconstrainedScore`
trained with the quasi-conservative penalty: the difference lives in the objective, not
in the network. Each wraps a network `net(x, sigma) -> tensor shaped like x` and the SDE
that maps t to sigma.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from qcsbm_bench.jacobian import check_samplewise, input_requiring_grad
from qcsbm_bench.sde import SDE, batch_broadcast

VARIANTS = ("csbm", "usbm", "qcsbm", "usbm-ft")
UnconstrainedForm = Literal["direct", "residual"]
ConservativeForm = Literal["norm", "residual"]


class ScoreModel(nn.Module):
    """A score model s(x, t) ~ grad_x log p_t(x) built on a sigma-conditioned network."""

    is_conservative: bool = False

    def __init__(self, net: nn.Module, sde: SDE) -> None:
        super().__init__()
        self.net = net
        self.sde = sde

    def sigma(self, t: Tensor) -> Tensor:
        return self.sde.marginal_std(t)


class UnconstrainedScore(ScoreModel):
    """USBM: the score is a free vector field, so its Jacobian need not be symmetric.

    form="direct": s = net(x, sigma), the image convention, where the network already
    divides its output by sigma. form="residual": s = (x - net(x, sigma)) / sigma, the toy
    convention of Chao et al. (2023).
    """

    def __init__(self, net: nn.Module, sde: SDE, form: UnconstrainedForm = "direct") -> None:
        super().__init__(net, sde)
        if form not in ("direct", "residual"):
            raise ValueError(f"unknown unconstrained form {form!r}; use 'direct' or 'residual'")
        self.form = form

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        sigma = self.sigma(t)
        output = self.net(x, sigma)
        if self.form == "direct":
            return output
        return (x - output) / batch_broadcast(sigma, x)


class ConservativeScore(ScoreModel):
    """CSBM: s = -grad_x E(x, t) for a scalar energy E, so J is a symmetric (negative) Hessian.

    form="residual": E = ||x - net(x, sigma)||^2 / (2 sigma), the toy form.
    form="norm": E = ||net(x, sigma)||^2 / (2 sigma), the image form, where net already
    includes the 1/sigma output scaling (so it differs from the toy form by 1/sigma^2).

    The gradient is taken with create_graph=True only when a later backward pass needs it:
    in training mode, or when the caller's x requires grad (Jacobian and asymmetry code).
    Sampling under torch.no_grad() therefore keeps no second-order graph.
    """

    is_conservative = True

    def __init__(self, net: nn.Module, sde: SDE, form: ConservativeForm = "norm") -> None:
        super().__init__(net, sde)
        if form not in ("norm", "residual"):
            raise ValueError(f"unknown conservative form {form!r}; use 'norm' or 'residual'")
        self.form = form

    def energy(self, x: Tensor, t: Tensor) -> Tensor:
        """Return E(x, t) per sample, shape (B,)."""
        sigma = self.sigma(t)
        output = self.net(x, sigma)
        residual = x - output if self.form == "residual" else output
        return residual.reshape(x.shape[0], -1).pow(2).sum(dim=1) / (2 * sigma)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        # Summing E over the batch before differentiating is valid only for samplewise nets.
        check_samplewise(self.net)
        create_graph = torch.is_grad_enabled() and (self.training or x.requires_grad)
        with torch.enable_grad():
            x_in = input_requiring_grad(x)
            energy = self.energy(x_in, t).sum()
            (grad,) = torch.autograd.grad(energy, x_in, create_graph=create_graph)
        return -grad


def build_score_model(variant: str, net: nn.Module, sde: SDE, form: str) -> ScoreModel:
    """Wrap `net` as the score model of a variant ("csbm", "usbm", "qcsbm" or "usbm-ft").

    "usbm-ft" is a USBM fine-tuned from the usbm run without the regulariser, the control
    for the extra steps that the fine-tuned QCSBM gets.

    `form` is "toy" (residual forms) or "image" (direct / norm forms).
    """
    if form not in ("toy", "image"):
        raise ValueError(f"unknown parameterisation {form!r}; use 'toy' or 'image'")
    if variant == "csbm":
        return ConservativeScore(net, sde, form="residual" if form == "toy" else "norm")
    if variant in ("usbm", "qcsbm", "usbm-ft"):
        return UnconstrainedScore(net, sde, form="residual" if form == "toy" else "direct")
    raise ValueError(f"unknown variant {variant!r}; valid variants are {VARIANTS}")
