"""Exponential moving average (EMA) of a model's parameters, as used for sampling.

After every optimiser step, each parameter's shadow copy is updated as
    ema <- decay * ema + (1 - decay) * p,
so with p held constant for n steps, ema_n = p + decay^n (ema_0 - p). Buffers (for example
running statistics) are copied, not averaged. The shadow state has the keys of
`model.state_dict()`, so it loads into a model of the same architecture directly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


class ExponentialMovingAverage:
    """Shadow copies of a model's parameters, averaged with a constant decay."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(
                f"EMA decay must lie in [0, 1), got {decay}; use for example 0.999 "
                "(0 keeps only the latest weights)"
            )
        self.decay = float(decay)
        self._parameter_names = {name for name, _ in model.named_parameters()}
        self.shadow: dict[str, Tensor] = {
            name: value.detach().clone() for name, value in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move each parameter's shadow toward its current value: ema = d ema + (1 - d) p."""
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if name in self._parameter_names and shadow.is_floating_point():
                shadow.lerp_(value.detach(), 1.0 - self.decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict[str, Tensor]:
        """Return the shadow weights, keyed like `model.state_dict()`."""
        return self.shadow

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Copy saved shadow weights in, after checking that the keys and shapes match."""
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(
                f"EMA state does not fit the model: missing keys {missing[:5]}, unexpected "
                f"keys {unexpected[:5]}; load an EMA saved for this architecture"
            )
        for name, value in state.items():
            if value.shape != self.shadow[name].shape:
                raise ValueError(
                    f"EMA entry {name!r} has shape {tuple(value.shape)} but the model's has "
                    f"{tuple(self.shadow[name].shape)}; load an EMA saved for this architecture"
                )
            self.shadow[name].copy_(value)

    def copy_to(self, model: nn.Module) -> None:
        """Load the shadow weights into `model` (replacing its own)."""
        model.load_state_dict(self.shadow)
