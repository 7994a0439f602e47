"""Per-sample Jacobians of a score field and the probes of Hutchinson's trace estimator.

Every routine here differentiates the sum over the batch of s(x)_i with respect to the
whole input batch. That yields each sample's own Jacobian row only when no sample's output
depends on another sample's input, so `check_samplewise` rejects modules that mix samples
(BatchNorm using batch statistics) before any Jacobian is formed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from qcsbm_bench.sde import draw

ScoreFn = Callable[[Tensor, Tensor], Tensor]

PROBES = ("rademacher", "gaussian")


class SampleCouplingError(RuntimeError):
    """A model mixes samples within a batch, so per-sample Jacobians cannot be formed."""


def check_samplewise(model: nn.Module) -> None:
    """Raise SampleCouplingError if a module of `model` normalises with batch statistics.

    BatchNorm in train mode, or in eval mode without running statistics, makes output i
    depend on input j, and the batch-sum trick would then add cross-sample terms to J.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            uses_batch_stats = module.training or module.running_mean is None
            if uses_batch_stats:
                raise SampleCouplingError(
                    f"module {name or type(model).__name__!r} ({type(module).__name__}) "
                    "normalises with batch statistics, so samples interact and per-sample "
                    "Jacobians are wrong; call model.eval() with tracked running statistics, "
                    "or use GroupNorm/LayerNorm"
                )


def draw_probes(like: Tensor, kind: str, generator: torch.Generator | None = None) -> Tensor:
    """Draw probe vectors v with E[v v^T] = I, shape and dtype of `like`.

    Rademacher entries are +-1 with equal probability; Gaussian entries are N(0, 1).
    """
    if kind == "rademacher":
        source = generator.device if generator is not None else like.device
        bits = torch.randint(0, 2, like.shape, generator=generator, device=source)
        return bits.to(device=like.device, dtype=like.dtype) * 2 - 1
    if kind == "gaussian":
        return draw("normal", like.shape, generator, like.dtype, like.device)
    raise ValueError(f"unknown probe distribution {kind!r}; valid values are {PROBES}")


def input_requiring_grad(x: Tensor) -> Tensor:
    """Return x as a leaf that requires grad, unless it already carries a graph."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def vjp(output: Tensor, x: Tensor, cotangent: Tensor, create_graph: bool) -> Tensor:
    """Return J^T u per sample, i.e. the gradient of sum(output * u) w.r.t. x, shape of x."""
    (grad,) = torch.autograd.grad(
        output, x, grad_outputs=cotangent, create_graph=create_graph, retain_graph=True
    )
    return grad


def exact_jacobian(
    score_fn: ScoreFn, x: Tensor, t: Tensor, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Return (s(x, t), J) with J[b, i, j] = d s_i / d x_j of sample b, shape (B, D, D).

    D = x[0].numel() reverse-mode passes, one per output coordinate, so use it for small D
    only. With create_graph=True the result is differentiable w.r.t. the parameters.
    """
    with torch.enable_grad():
        x = input_requiring_grad(x)
        score = score_fn(x, t)
        batch = x.shape[0]
        flat_score = score.reshape(batch, -1)
        dim = flat_score.shape[1]
        rows = []
        for i in range(dim):
            cotangent = torch.zeros_like(flat_score)
            cotangent[:, i] = 1
            row = vjp(flat_score, x, cotangent, create_graph=create_graph)
            rows.append(row.reshape(batch, dim))
        jacobian = torch.stack(rows, dim=1)
    return score, jacobian


def replicate(x: Tensor, t: Tensor, n_probes: int) -> tuple[Tensor, Tensor]:
    """Repeat each sample n_probes times along the batch: (B, ...) -> (B * n_probes, ...).

    Replicas of one sample are adjacent, so a (B * K,) result reshapes to (B, K).
    """
    if n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer, got {n_probes}")
    if n_probes == 1:
        return x, t
    return x.repeat_interleave(n_probes, dim=0), t.repeat_interleave(n_probes, dim=0)


def _flat_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).reshape(a.shape[0], -1).sum(dim=1)


def vjp_quadratic_forms(
    score_fn: ScoreFn,
    x: Tensor,
    t: Tensor,
    probes: Tensor,
    create_graph: bool,
    secondary_gradient: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Return (s(x, t), v^T J J^T v, v^T J J v), the forms (B,), from two reverse-mode VJPs.

    a = J^T v gives the first form as ||a||^2. The second is v . (J^T u) with u = a:
    u^T J v = v^T J J v. Chao et al. (2023) write u = stop_gradient(a) and then feed u's
    gradient back into a; keeping u = a in the graph is the same chain rule in one backward
    pass, so the parameter gradient is that of the full estimator. With
    secondary_gradient=False, u is detached and that share of the gradient is dropped
    (kept only as an ablation: its gradient is biased).
    """
    with torch.enable_grad():
        x = input_requiring_grad(x)
        score = score_fn(x, t)
        a = vjp(score, x, probes, create_graph=create_graph)
        first = _flat_dot(a, a)
        u = a if secondary_gradient else a.detach()
        b = vjp(score, x, u, create_graph=create_graph)
        second = _flat_dot(probes, b)
    return score, first, second


def jvp_antisymmetric_sq_norm(
    score_fn: ScoreFn, x: Tensor, t: Tensor, probes: Tensor, create_graph: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Return (s(x, t), ||J v - J^T v||^2, ||J^T v||^2), the norms per sample (B,).

    J v comes from one forward-mode JVP (torch.autograd.forward_ad dual tensors) and J^T v
    from one reverse-mode VJP of the same evaluation. E_v ||(J - J^T) v||^2 = ||J - J^T||_F^2
    for E[v v^T] = I, and each single-probe value is non-negative.
    """
    import torch.autograd.forward_ad as fwad

    with torch.enable_grad():
        x = input_requiring_grad(x)
        with fwad.dual_level():
            dual_score = score_fn(fwad.make_dual(x, probes), t)
            score, jv = fwad.unpack_dual(dual_score)
        if jv is None:  # The score does not depend on x at all.
            jv = torch.zeros_like(score)
        jtv = vjp(score, x, probes, create_graph=create_graph)
    return score, _flat_dot(jv - jtv, jv - jtv), _flat_dot(jtv, jtv)
