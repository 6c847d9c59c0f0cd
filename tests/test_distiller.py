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
    return distiller, small_train.batch(slice(0, 4))


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
