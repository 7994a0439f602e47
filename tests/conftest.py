"""Shared fixtures and strategies: small float64 score fields drawn by hypothesis."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from torch import Tensor, nn

from qcsbm_bench.networks.toy import Swish
from qcsbm_bench.stage_settings import STRICT_ENVIRONMENT_VARIABLE

torch.set_default_dtype(torch.float64)

# A stage that reads a config key its jobs are not rerun for fails instead of warning. The
# variable is set here, before any test starts a Snakemake job, so those jobs inherit it.
os.environ[STRICT_ENVIRONMENT_VARIABLE] = "1"


class MLPField(nn.Module):
    """A time-conditioned MLP vector field s(x, t): R^D -> R^D on inputs of shape (B, D)."""

    def __init__(self, dim: int, width: int, depth: int, activation: str, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        widths = [dim + 1] + [width] * depth + [dim]
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), Swish() if activation == "swish" else nn.ELU()]
        self.body = nn.Sequential(*layers[:-1])

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.body(torch.cat([x, t[:, None]], dim=1))


class ConvField(nn.Module):
    """A tiny conv field on (B, C, 4, 4) images with time added as a bias channel."""

    def __init__(self, channels: int, activation: str, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        act = Swish() if activation == "swish" else nn.ELU()
        self.body = nn.Sequential(
            nn.Conv2d(channels + 1, 8, 3, padding=1),
            nn.GroupNorm(2, 8),
            act,
            nn.Conv2d(8, channels, 3, padding=1),
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        time_channel = t[:, None, None, None].expand(x.shape[0], 1, *x.shape[2:])
        return self.body(torch.cat([x, time_channel], dim=1))


@dataclass
class FieldCase:
    field: nn.Module
    x: Tensor
    t: Tensor


@st.composite
def mlp_cases(draw: st.DrawFn, max_dim: int = 8, max_batch: int = 3) -> FieldCase:
    dim = draw(st.integers(1, max_dim))
    field = MLPField(
        dim=dim,
        width=draw(st.integers(3, 12)),
        depth=draw(st.integers(1, 3)),
        activation=draw(st.sampled_from(["swish", "elu"])),
        seed=draw(st.integers(0, 2**16)),
    )
    batch = draw(st.integers(1, max_batch))
    x = torch.randn(batch, dim)
    t = torch.rand(batch)
    return FieldCase(field, x, t)


@st.composite
def conv_cases(draw: st.DrawFn) -> FieldCase:
    channels = draw(st.sampled_from([1, 3]))
    field = ConvField(
        channels,
        activation=draw(st.sampled_from(["swish", "elu"])),
        seed=draw(st.integers(0, 2**16)),
    )
    x = torch.randn(2, channels, 4, 4)
    t = torch.rand(2)
    return FieldCase(field, x, t)


def read_only(array: np.ndarray) -> np.ndarray:
    """Return a read-only copy of `array`, as a memory-mapped prepared split is."""
    copy = np.array(array)
    copy.flags.writeable = False
    return copy


@pytest.fixture
def reject_read_only_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torch.from_numpy and torch.as_tensor raise on a read-only NumPy array.

    torch shares memory with such an array and warns "The given NumPy array is not
    writable", but only once per process, so a warning filter misses every later call.
    """

    def checked(convert: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def convert_writable(data: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            if isinstance(data, np.ndarray) and not data.flags.writeable:
                raise AssertionError(
                    f"torch.{convert.__name__} got a read-only array of shape {data.shape}"
                )
            return convert(data, *args, **kwargs)

        return convert_writable

    monkeypatch.setattr(torch, "from_numpy", checked(torch.from_numpy))
    monkeypatch.setattr(torch, "as_tensor", checked(torch.as_tensor))
