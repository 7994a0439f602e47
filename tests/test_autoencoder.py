"""Tests for the one-layer autoencoder score field and its L_QC training run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qcsbm_bench.autoencoder import (
    OneLayerAutoencoder,
    make_grid,
    quasi_conservative_loss,
    run_autoencoder,
    write_curves,
)

ROW_KEYS = {"step", "L_QC", "asym_rw", "weight_gap", "beta"}


def random_points(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 5.0 * torch.randn(count, 2, generator=generator, dtype=torch.float64)


def test_initial_parameters_are_seeded_uniform() -> None:
    first = OneLayerAutoencoder(seed=4)
    second = OneLayerAutoencoder(seed=4)
    other = OneLayerAutoencoder(seed=5)
    for name in ("W", "R", "b", "c"):
        values = getattr(first, name)
        assert values.dtype == torch.float64
        assert bool(torch.all(values.abs() <= 1.0))
        torch.testing.assert_close(values, getattr(second, name), rtol=0.0, atol=0.0)
        assert not torch.equal(values, getattr(other, name))
    assert first.beta.item() == 1.0


def test_forward_matches_formula() -> None:
    model = OneLayerAutoencoder(seed=0)
    with torch.no_grad():
        model.beta.fill_(1.7)
    x = random_points(8, seed=1)
    expected = torch.empty_like(x)
    for row in range(x.shape[0]):
        u = model.W.T @ x[row] + model.b
        expected[row] = model.R @ (u * torch.sigmoid(1.7 * u)) + model.c
    torch.testing.assert_close(model(x), expected)


def autograd_jacobian_of(model: OneLayerAutoencoder, x: torch.Tensor) -> torch.Tensor:
    # jacrev of the per-point map gives ds_i / dx_j, stacked by vmap to shape (B, D, D).
    def score_of_point(point: torch.Tensor) -> torch.Tensor:
        return model(point[None, :])[0]

    return torch.func.vmap(torch.func.jacrev(score_of_point))(x)


def test_jacobian_matches_autograd() -> None:
    for seed in range(3):
        model = OneLayerAutoencoder(seed=seed)
        with torch.no_grad():
            model.beta.fill_(0.5 + seed)
        x = random_points(64, seed=10 + seed)
        autograd_jacobian = autograd_jacobian_of(model, x)
        torch.testing.assert_close(model.jacobian(x), autograd_jacobian, rtol=1e-12, atol=1e-12)


def test_tied_weights_zero_loss() -> None:
    model = OneLayerAutoencoder(seed=2)
    with torch.no_grad():
        model.R.copy_(model.W)
    loss = quasi_conservative_loss(model.jacobian(make_grid(40, 10.0)))
    assert loss.item() < 1e-28


def test_parallel_columns_zero_loss() -> None:
    # R = W diag(a) is not tied, yet each column of R is parallel to W's, so J is symmetric.
    model = OneLayerAutoencoder(seed=3)
    with torch.no_grad():
        model.R.copy_(model.W * torch.tensor([2.5, -0.4], dtype=torch.float64))
    assert torch.linalg.norm(model.R - model.W).item() > 0.1
    loss = quasi_conservative_loss(model.jacobian(make_grid(40, 10.0)))
    assert loss.item() < 1e-28


def test_loss_matches_two_dimensional_formula() -> None:
    # In 2-D, 1/2 ||J - J^T||_F^2 = (J_12 - J_21)^2 with
    # J_12 - J_21 = sum_h swish'(u_h) (R_1h W_2h - R_2h W_1h).
    model = OneLayerAutoencoder(seed=6)
    x = random_points(100, seed=7)
    with torch.no_grad():
        u = x @ model.W + model.b
        gate = torch.sigmoid(model.beta * u)
        slope = gate + model.beta * u * gate * (1.0 - gate)
        cross = model.R[0] * model.W[1] - model.R[1] * model.W[0]
        expected = ((slope * cross).sum(dim=1) ** 2).mean()
        loss = quasi_conservative_loss(model.jacobian(x))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0.0)


def test_short_run_lowers_loss() -> None:
    rows = run_autoencoder(steps=300, lr=1e-2, log_every=50, progress=False)
    assert [row["step"] for row in rows] == [0, 50, 100, 150, 200, 250, 299]
    for row in rows:
        assert set(row) == ROW_KEYS
    assert rows[0]["L_QC"] > 0.0
    assert rows[-1]["L_QC"] < 0.5 * rows[0]["L_QC"]
    # The first row comes from the untrained seed-0 model, before any update.
    model = OneLayerAutoencoder(seed=0)
    with torch.no_grad():
        product = model.R @ model.W.T
        assert rows[0]["asym_rw"] == (0.5 * (product - product.T).pow(2).sum()).item()
        assert rows[0]["weight_gap"] == torch.linalg.norm(model.R - model.W).item()
    assert rows[0]["beta"] == 1.0


def test_write_curves_round_trip(tmp_path: Path) -> None:
    rows = run_autoencoder(steps=5, log_every=2, progress=False)
    path = tmp_path / "curves" / "autoencoder.jsonl"
    write_curves(rows, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert [row["step"] for row in rows] == [0, 2, 4]
    assert [entry.name for entry in path.parent.iterdir()] == ["autoencoder.jsonl"]
