"""The Distiller: frozen teacher, losses by name, gradients to student and connectors only."""

import pytest
import torch

from kdrecon.distillation.distiller import Distiller, LossWeights
from kdrecon.distillation.hooks import FeatureTap
from kdrecon.distillation.losses import build_feature_loss
from kdrecon.models import build_model

TEACHER_LAYERS = [f"blocks.{i}.layers.2" for i in range(5)]  # teacher conv 3 of every cascade
STUDENT_LAYERS = [f"blocks.{i}.layers.1" for i in range(5)]  # student conv 2 of every cascade


def make(small_train, student_channels=16, method="fitnets"):
    torch.manual_seed(0)
    teacher, student = build_model("D5C5"), build_model("D3C5", channels=student_channels)
    feature_loss = build_feature_loss(method, [student_channels] * 5, [32] * 5)
    weights = LossWeights(reconstruction=0.5, imitation=0.5, feature=2.0)
    distiller = Distiller(student, teacher, weights, feature_loss, STUDENT_LAYERS, TEACHER_LAYERS)
    return distiller, small_train.batch(torch.arange(4))


def test_losses_by_name_and_total(small_train):
    distiller, batch = make(small_train)
    losses = distiller.training_losses(batch)
    assert set(losses) == {"reconstruction", "imitation", "feature", "total"}
    expected = 0.5 * losses["reconstruction"] + 0.5 * losses["imitation"] + 2.0 * losses["feature"]
    torch.testing.assert_close(losses["total"], expected)
    with torch.no_grad():
        student_output = distiller.student(batch.zero_filled, batch.kspace, batch.mask)
        teacher_output = distiller.teacher(batch.zero_filled, batch.kspace, batch.mask)
    torch.testing.assert_close(losses["imitation"], (student_output - teacher_output).abs().mean())


def test_teacher_frozen_gradients_reach_student_and_connectors(small_train):
    distiller, batch = make(small_train)
    before = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    distiller.training_losses(batch)["total"].backward()
    assert not distiller.teacher.training
    assert all(p.grad is None and not p.requires_grad for p in distiller.teacher.parameters())
    assert all(p.grad is not None for p in distiller.student.parameters())
    connectors = list(distiller.modules()["connectors"].parameters())
    assert connectors and all(p.grad is not None and p.grad.abs().sum() > 0 for p in connectors)
    assert distiller.connector_parameter_count() == 5 * (16 * 32 + 32)
    for key, value in distiller.teacher.state_dict().items():
        assert torch.equal(value, before[key])


def test_feature_tap_errors():
    model = build_model("D3C5")
    with pytest.raises(ValueError, match="blocks.9.layers.1"):
        FeatureTap(model, ["blocks.9.layers.1"])
    with pytest.raises(ValueError, match="2 student layers but 1 teacher"):
        Distiller(model, build_model("D5C5"), LossWeights(feature=1), build_feature_loss("at", [32] * 2, [32] * 2),
                  ["blocks.0.layers.1", "blocks.1.layers.1"], ["blocks.0.layers.2"])


@pytest.mark.parametrize("method", ["at", "fitnets"])
@pytest.mark.parametrize("budget", [0, 1 << 30])
def test_cached_teacher_gives_the_same_losses(small_train, budget, method):
    torch.manual_seed(0)
    teacher, student = build_model("D3C3", channels=8), build_model("D2C3", channels=8)
    feature_loss = build_feature_loss(method, [8, 8, 8], [8, 8, 8])
    layers = ([f"blocks.{i}.layers.1" for i in range(3)], [f"blocks.{i}.layers.0" for i in range(3)])
    weights = LossWeights(reconstruction=0.5, imitation=0.5, feature=1000.0)
    live = Distiller(student, teacher, weights, feature_loss, layers[1], layers[0])
    batch = small_train.batch(torch.tensor([5, 0, 17, 3]))
    expected = {k: v.detach().item() for k, v in live.training_losses(batch).items()}
    live.close()

    cached = Distiller(student, teacher, weights, feature_loss, layers[1], layers[0], teacher_cache_bytes=budget)
    cached.before_training(small_train)
    assert cached._cached_outputs.shape == small_train.target.shape
    assert (cached._cached_features is not None) == bool(budget)
    if budget:  # AT keeps the teacher's attention maps (one value per pixel), FitNets the features
        slices, height, width = len(small_train), *small_train.target.shape[-2:]
        shape = (slices, height * width) if method == "at" else (slices, 8, height, width)
        assert all(f.shape == shape for f in cached._cached_features)
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    losses = {k: v.detach().item() for k, v in cached.training_losses(batch).items()}
    assert losses == pytest.approx(expected, rel=1e-5)
    assert len(calls) == (0 if budget else 1)  # with features cached the teacher does not run


def test_attention_maps_fit_a_budget_the_features_do_not(small_train):
    teacher, student = build_model("D3C3", channels=8), build_model("D2C3", channels=8)
    layers = ([f"blocks.{i}.layers.1" for i in range(3)], [f"blocks.{i}.layers.0" for i in range(3)])
    maps_bytes = len(small_train) * 3 * small_train.target[0].numel() * 4  # float32, one value per pixel
    distiller = Distiller(student, teacher, LossWeights(feature=1.0), build_feature_loss("at", [8] * 3, [8] * 3),
                          layers[1], layers[0], teacher_cache_bytes=maps_bytes)  # 1/8 of the features' bytes
    distiller.before_training(small_train)
    cached = distiller._cached_features
    assert cached is not None and distiller._cached_summarised
    # One map (a value per pixel) per slice and layer, within the budget the full features overran.
    assert [tuple(f.shape) for f in cached] == [(len(small_train), small_train.target[0].numel())] * 3
    assert sum(f.numel() * f.element_size() for f in cached) <= maps_bytes


@pytest.mark.parametrize("method", ["at", "fitnets"])
def test_feature_loss_gets_bf16_features_only_if_it_takes_them(small_train, method):
    """Under bf16 autocast the student's tapped features are bf16: AT sums them in float32 itself,
    every other method gets float32 copies."""
    distiller, batch = make(small_train, method=method)
    received = []
    distiller.feature_loss.register_forward_pre_hook(
        lambda _, args, kwargs: received.extend(f.dtype for f in args[0]), with_kwargs=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = distiller.training_losses(batch)
    losses["total"].backward()
    expected = torch.bfloat16 if distiller.feature_loss.takes_low_precision_features else torch.float32
    assert received == [expected] * len(STUDENT_LAYERS)
    assert (method == "at") == distiller.feature_loss.takes_low_precision_features
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in distiller.student.parameters())
