"""NCSN++: FIR resampling, presets and overrides, shapes, sigma scaling, per-sample
independence and double backward through the conservative and QC objectives."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from torch import Tensor

from qcsbm_bench.jacobian import check_samplewise
from qcsbm_bench.losses import training_loss
from qcsbm_bench.networks import build_image_net
from qcsbm_bench.networks.ncsnpp import (
    NCSNPP_PRESETS,
    OVERRIDE_KEYS,
    NCSNpp,
    build_ncsnpp,
    count_parameters,
)
from qcsbm_bench.networks.ncsnpp_layers import (
    PyramidDownsample,
    fir_downsample,
    fir_kernel_2d,
    fir_upsample,
)
from qcsbm_bench.regulariser import QCConfig
from qcsbm_bench.scores import build_score_model
from qcsbm_bench.sde import VESDE

TAPS = (1.0, 3.0, 3.0, 1.0)

# Counted by this code (NCSN++ "paper" preset, 3 x 32 x 32). It rounds to the 108M usually
# given for NCSN++ cont. (deep, VE), see the docstring of qcsbm_bench.networks.ncsnpp.
PAPER_PARAMETERS_3X32 = 107_586_947


def _tiny(channels: int, resolution: int, **overrides: Any) -> NCSNpp:
    torch.manual_seed(0)
    return build_ncsnpp({"preset": "tiny", **overrides}, channels, resolution)


def _sigma(batch: int) -> Tensor:
    return torch.logspace(-2, math.log10(50.0), batch)


def _ramp(size: int) -> Tensor:
    """Image f(i, j) = 0.3 i - 0.2 j + 1 of shape (1, 1, size, size)."""
    index = torch.arange(size, dtype=torch.get_default_dtype())
    return (0.3 * index[:, None] - 0.2 * index[None, :] + 1.0)[None, None]


# FIR resampling


def test_fir_kernel_is_normalised_outer_product() -> None:
    kernel = fir_kernel_2d(TAPS)
    expected = torch.tensor(TAPS)[:, None] * torch.tensor(TAPS)[None, :] / 64.0
    torch.testing.assert_close(kernel, expected)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("taps", [(1.0,), (1.0, -1.0), (1.0, float("nan"))])
def test_fir_kernel_rejects_bad_taps(taps: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="fir_kernel"):
        fir_kernel_2d(taps)


def test_fir_downsample_keeps_constant_interior() -> None:
    image = torch.full((2, 3, 8, 8), 2.5)
    out = fir_downsample(image, fir_kernel_2d(TAPS))
    assert out.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.full((2, 3, 2, 2), 2.5))
    # Zero padding removes the outer tap (1/8 per axis) at the border.
    assert out[0, 0, 0, 1].item() == pytest.approx(2.5 * 7 / 8)
    assert out[0, 0, 0, 0].item() == pytest.approx(2.5 * 49 / 64)


def test_fir_upsample_interpolates_linear_image() -> None:
    size = 6
    out = fir_upsample(_ramp(size), fir_kernel_2d(TAPS))
    assert out.shape == (1, 1, 2 * size, 2 * size)
    # Output pixel o sits at input coordinate o / 2 - 1/4 (half-pixel centres).
    coordinate = torch.arange(2 * size, dtype=out.dtype) / 2 - 0.25
    expected = 0.3 * coordinate[:, None] - 0.2 * coordinate[None, :] + 1.0
    torch.testing.assert_close(out[0, 0, 1:-1, 1:-1], expected[1:-1, 1:-1])


def test_fir_upsample_keeps_mean_of_constant() -> None:
    out = fir_upsample(torch.full((1, 2, 4, 4), -1.5), fir_kernel_2d(TAPS))
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.full((1, 2, 6, 6), -1.5))


def test_fir_up_then_down_is_near_identity() -> None:
    kernel = fir_kernel_2d(TAPS)
    ramp = _ramp(8)
    round_trip = fir_downsample(fir_upsample(ramp, kernel), kernel)
    torch.testing.assert_close(round_trip[..., 1:-1, 1:-1], ramp[..., 1:-1, 1:-1])

    # A smooth image: the round trip is x + (3/16) (second difference) per axis.
    grid = torch.linspace(0, 1, 16)
    smooth = (torch.sin(2 * grid[:, None]) * torch.cos(1.5 * grid[None, :]))[None, None]
    error = (fir_downsample(fir_upsample(smooth, kernel), kernel) - smooth)[..., 1:-1, 1:-1]
    assert error.abs().max().item() < 1e-2


def test_pyramid_downsample_shape_and_constant() -> None:
    layer = PyramidDownsample(2, 5, TAPS)
    with torch.no_grad():
        layer.conv.weight.fill_(1.0 / 18.0)  # averages 2 channels x 3 x 3 taps
        layer.conv.bias.zero_()
    out = layer(torch.full((1, 2, 16, 16), 0.7))
    assert out.shape == (1, 5, 8, 8)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], torch.full((1, 5, 4, 4), 0.7))


# Presets, overrides and errors


def test_paper_preset_parameter_count() -> None:
    # The meta device allocates no storage, so the 108M-parameter net builds instantly.
    with torch.device("meta"):
        net = build_ncsnpp({"preset": "paper"}, channels=3, resolution=32)
    assert count_parameters(net) == PAPER_PARAMETERS_3X32


def test_paper_preset_matches_published_settings() -> None:
    paper = NCSNPP_PRESETS["paper"]
    assert paper["nf"] == 128
    assert tuple(paper["ch_mult"]) == (1, 2, 2, 2)
    assert paper["num_res_blocks"] == 8
    assert tuple(paper["attn_resolutions"]) == (16,)
    assert paper["dropout"] == 0.1
    assert paper["fourier_scale"] == 16.0
    assert tuple(paper["fir_kernel"]) == TAPS
    assert paper["skip_rescale"] is True
    assert paper["progressive_input"] == "residual"


def test_overrides_are_applied() -> None:
    net = build_image_net(
        {"arch": "ncsnpp", "preset": "tiny", "nf": 16, "ch_mult": [1, 1], "dropout": 0.2}, 1, 8
    )
    assert isinstance(net, NCSNpp)
    assert net.conv_in.out_channels == 16
    assert net.config.ch_mult == (1, 1)
    assert net.config.dropout == 0.2


def test_unknown_override_key_lists_valid_keys() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown NCSN++ setting")) as error:
        build_ncsnpp({"preset": "tiny", "num_blocks": 2}, 3, 32)
    assert "num_blocks" in str(error.value)
    for key in OVERRIDE_KEYS:
        assert key in str(error.value)


def test_unknown_preset_is_rejected() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown NCSN++ preset 'huge'")):
        build_ncsnpp({"preset": "huge"}, 3, 32)


@pytest.mark.parametrize(
    ("resolution", "ch_mult"), [(8, (1, 2, 2, 2)), (10, (1, 2, 2)), (2, (1, 2))]
)
def test_bad_resolution_for_ch_mult(resolution: int, ch_mult: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(f"ch_mult={ch_mult}")) as error:
        build_ncsnpp({"preset": "tiny", "ch_mult": ch_mult}, 3, resolution)
    assert f"resolution {resolution}" in str(error.value)


def test_absent_attention_resolution_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"attn_resolutions \(16,\) contains \[16\]"):
        build_ncsnpp({"preset": "tiny", "attn_resolutions": [16]}, 1, 8)


def test_forward_rejects_other_resolution() -> None:
    net = _tiny(3, 16)
    with pytest.raises(ValueError, match="built for 16x16"):
        net(torch.rand(1, 3, 32, 32), _sigma(1))


# Forward pass


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8), (3, 16, 16)])
def test_output_shape_matches_input(shape: tuple[int, int, int]) -> None:
    net = _tiny(shape[0], shape[1])
    x = torch.rand(2, *shape)
    out = net(x, _sigma(2))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_scale_by_sigma_divides_output() -> None:
    scaled = _tiny(3, 16)
    raw_net = NCSNpp(3, 16, scaled.config, scale_by_sigma=False)
    raw_net.load_state_dict(scaled.state_dict())
    x = torch.rand(3, 3, 16, 16)
    sigma = torch.tensor([0.01, 1.0, 50.0])
    with torch.no_grad():
        raw = raw_net(x, sigma)
        actual = scaled(x, sigma)
    torch.testing.assert_close(actual, raw / sigma[:, None, None, None], rtol=1e-12, atol=0.0)
    assert raw.abs().max().item() > 0.0


@pytest.mark.parametrize("train_mode", [True, False])
def test_samples_do_not_interact(train_mode: bool) -> None:
    net = _tiny(3, 16, attn_resolutions=[8])
    net.train(train_mode)
    check_samplewise(net)

    x = torch.rand(3, 3, 16, 16)
    sigma = _sigma(3)
    changed_x = x.clone()
    changed_x[1] = torch.rand(3, 16, 16) * 4.0
    changed_sigma = sigma.clone()
    changed_sigma[1] = 7.0
    with torch.no_grad():
        reference = net(x, sigma)
        changed = net(changed_x, changed_sigma)
    assert not torch.allclose(changed[1], reference[1])
    torch.testing.assert_close(changed[0], reference[0], rtol=1e-13, atol=0.0)
    torch.testing.assert_close(changed[2], reference[2], rtol=1e-13, atol=0.0)


def test_skip_rescale_changes_output() -> None:
    rescaled = _tiny(3, 16, skip_rescale=True)
    plain = _tiny(3, 16, skip_rescale=False)
    plain.load_state_dict(rescaled.state_dict())
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        reference = rescaled(x, _sigma(2))
        difference = (reference - plain(x, _sigma(2))).abs().max().item()
    # The output conv starts near zero, so compare relative to the output's size.
    assert difference > 0.1 * reference.abs().max().item()


def test_progressive_input_adds_pyramid_convs() -> None:
    residual = _tiny(3, 16, progressive_input="residual")
    none = _tiny(3, 16, progressive_input="none")
    # tiny has two levels, so one pyramid step: a 3x3 conv from 3 image channels to nf = 8.
    assert count_parameters(residual) - count_parameters(none) == 3 * 8 * 9 + 8
    assert all(level.pyramid is None for level in none.down_levels)


# Double backward through the score parameterisations


def _assert_finite_nonzero_gradients(net: NCSNpp) -> None:
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        assert parameter.grad.abs().max().item() > 0.0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize(
    ("variant", "lambda_qc"), [("csbm", 0.0), ("qcsbm", 1e-4)], ids=["csbm", "qcsbm"]
)
def test_training_loss_backward(variant: str, lambda_qc: float) -> None:
    net = _tiny(1, 8, attn_resolutions=[4])
    model = build_score_model(variant, net, VESDE(0.01, 50.0), form="image")
    model.train()
    generator = torch.Generator().manual_seed(3)
    x0 = torch.rand(4, 1, 8, 8, generator=generator)

    parts = training_loss(
        model,
        x0,
        lambda_qc=lambda_qc,
        qc_config=QCConfig(estimator="hutchinson-vjp"),
        dsm_convention="half-sum",
        generator=generator,
    )
    parts.total.backward()

    assert torch.isfinite(parts.total)
    if lambda_qc > 0:
        assert parts.qc is not None
        assert torch.isfinite(parts.qc)
    _assert_finite_nonzero_gradients(net)
