"""Tests for the image score networks: shapes, per-sample independence, sigma scaling, dtypes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from qcsbm_bench.networks import ConvScoreNet, SigmaEmbedding, SmallUNet

NetFactory = Callable[[int], nn.Module]


def _conv_net(channels: int) -> nn.Module:
    return ConvScoreNet(channels=channels, width=16, depth=2, groups=4)


def _unet(channels: int) -> nn.Module:
    return SmallUNet(channels=channels, base_width=16, channel_mult=(1, 2, 2), groups=4)


def _sigma(batch: int, dtype: torch.dtype | None = None) -> Tensor:
    return torch.logspace(-2, 1, batch, dtype=dtype or torch.get_default_dtype())


@pytest.mark.parametrize(
    ("factory", "shape"),
    [
        (_conv_net, (1, 4, 4)),
        (_conv_net, (3, 4, 4)),
        (_conv_net, (3, 32, 32)),
        (_unet, (3, 4, 4)),
        (_unet, (1, 28, 28)),
        (_unet, (3, 32, 32)),
    ],
)
def test_output_shape_matches_input(factory: NetFactory, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    net = factory(shape[0]).float()
    x = torch.randn(3, *shape, dtype=torch.float32)
    out = net(x, _sigma(3, torch.float32))
    assert out.shape == x.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_default_networks_on_cifar_shape() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for net in (ConvScoreNet(), SmallUNet()):
        assert net(x, _sigma(2)).shape == x.shape


@pytest.mark.parametrize("factory", [_conv_net, _unet])
@pytest.mark.parametrize("train_mode", [True, False])
def test_samples_do_not_interact(factory: NetFactory, train_mode: bool) -> None:
    torch.manual_seed(0)
    net = factory(3)
    net.train(train_mode)
    x = torch.randn(4, 3, 8, 8)
    sigma = _sigma(4)
    with torch.no_grad():
        reference = net(x, sigma)
        changed_x = x.clone()
        changed_x[2] = torch.randn(3, 8, 8) * 5.0
        changed_sigma = sigma.clone()
        changed_sigma[2] = 3.7
        changed = net(changed_x, changed_sigma)

    assert not torch.equal(changed[2], reference[2])
    for i in (0, 1, 3):
        assert torch.equal(changed[i], reference[i]), f"output {i} changed with sample 2"


@pytest.mark.parametrize("factory", [_conv_net, _unet])
def test_scale_by_sigma_divides_output(factory: NetFactory) -> None:
    torch.manual_seed(0)
    scaled = factory(3)
    unscaled = factory(3)
    unscaled.load_state_dict(scaled.state_dict())
    assert isinstance(unscaled.scale_by_sigma, bool)
    unscaled.scale_by_sigma = False

    x = torch.randn(3, 3, 8, 8)
    sigma = torch.tensor([0.01, 1.0, 50.0])
    with torch.no_grad():
        raw = unscaled(x, sigma)
        actual = scaled(x, sigma)
    torch.testing.assert_close(actual, raw / sigma[:, None, None, None], rtol=1e-6, atol=0.0)
    assert not torch.allclose(actual[0], raw[0])


def test_unet_parameter_count_default() -> None:
    count = sum(p.numel() for p in SmallUNet().parameters())
    assert count == 579_779
    assert 400_000 <= count <= 600_000


def test_fourier_frequencies_are_not_trained() -> None:
    embedding = SigmaEmbedding(n_frequencies=8, embed_dim=16)
    parameter_names = {name for name, _ in embedding.named_parameters()}
    assert "fourier.frequencies" not in parameter_names
    assert "fourier.frequencies" in embedding.state_dict()


@pytest.mark.parametrize("factory", [_conv_net, _unet])
def test_float64_forward_and_gradient(factory: NetFactory) -> None:
    torch.manual_seed(0)
    net = factory(1).double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    sigma = _sigma(2, torch.float64)
    out = net(x, sigma)
    assert out.dtype == torch.float64

    (grad,) = torch.autograd.grad(out.square().sum(), x)
    assert grad.dtype == torch.float64
    assert torch.isfinite(grad).all()


def test_float64_gradcheck_conv_net() -> None:
    torch.manual_seed(0)
    net = ConvScoreNet(channels=1, width=4, depth=1, groups=2).double()
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    sigma = _sigma(2, torch.float64)
    assert torch.autograd.gradcheck(lambda inp: net(inp, sigma), (x,))


@pytest.mark.parametrize("factory", [_conv_net, _unet])
def test_jvp_agrees_with_vjp(factory: NetFactory) -> None:
    # The Hutchinson estimators need both forward-mode (J v) and reverse-mode (J^T u)
    # products, and u^T (J v) = (J^T u)^T v must hold for any u, v.
    torch.manual_seed(0)
    net = factory(1).double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    sigma = _sigma(2, torch.float64)
    u = torch.randn_like(x)
    v = torch.randn_like(x)

    def score(inp: Tensor) -> Tensor:
        out: Tensor = net(inp, sigma)
        return out

    _, jv = torch.func.jvp(score, (x,), (v,))
    _, vjp_fn = torch.func.vjp(score, x)
    (jtu,) = vjp_fn(u)
    torch.testing.assert_close((u * jv).sum(), (jtu * v).sum())


def test_double_backward_through_unet() -> None:
    # Conservative scores differentiate a scalar energy with create_graph=True and then
    # backpropagate through that gradient, so second derivatives must exist.
    torch.manual_seed(0)
    net = _unet(1)
    x = torch.randn(2, 1, 4, 4, requires_grad=True)
    energy = net(x, _sigma(2)).square().sum()
    (grad,) = torch.autograd.grad(energy, x, create_graph=True)
    grad.square().sum().backward()
    parameter_grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert len(parameter_grads) == len(list(net.parameters()))


def test_wrong_sigma_shape_rejected() -> None:
    net = _conv_net(3)
    with pytest.raises(ValueError, match="sigma must have shape"):
        net(torch.randn(2, 3, 4, 4), torch.ones(2, 1))


def test_wrong_channel_count_rejected() -> None:
    net = _conv_net(3)
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(2, 1, 4, 4), torch.ones(2))


def test_unet_rejects_indivisible_size() -> None:
    net = _unet(1)
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(2, 1, 6, 6), torch.ones(2))


def test_groups_must_divide_width() -> None:
    with pytest.raises(ValueError, match="divisible by groups"):
        ConvScoreNet(width=10, groups=4)
    with pytest.raises(ValueError, match="divisible by groups"):
        SmallUNet(base_width=12, groups=8)
