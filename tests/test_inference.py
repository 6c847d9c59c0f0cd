"""Forward-only passes: the device's batch size and the temporary channels-last layout."""

import pytest
import torch
import torch.nn.functional as F

from kdrecon.models import build_model
from kdrecon.models.inference import inference_batch_size, inference_layout, memory_format
from kdrecon.training.trainer import ReconstructionObjective, validate


@pytest.mark.parametrize("shape, expected", [((150, 150), 4), ((4, 150, 150), 4), ((64, 64), 21), ((320, 368), 1)])
def test_cpu_batch_holds_about_four_150x150_slices(shape, expected):
    # 90,000 pixels per pass: 90000 // 4096 = 21 slices of 64×64, one of 320×368.
    assert inference_batch_size(torch.device("cpu"), shape) == expected


def test_gpu_batch_is_the_large_one():
    assert inference_batch_size(torch.device("cuda"), (150, 150)) == 16


def test_layout_is_switched_for_the_block_and_restored_with_the_same_parameters():
    model = build_model("D3C5")
    parameters = list(model.parameters())
    values = [p.detach().clone() for p in parameters]
    assert memory_format(model) == torch.contiguous_format
    with inference_layout(model):
        assert memory_format(model) == torch.channels_last
        assert model.blocks[0].layers[1].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert memory_format(model) == torch.contiguous_format
    assert all(a is b for a, b in zip(model.parameters(), parameters))
    assert all(torch.equal(p, v) for p, v in zip(model.parameters(), values))


def test_a_channels_last_model_stays_channels_last():
    model = build_model("D3C5").to(memory_format=torch.channels_last)
    with inference_layout(model):
        pass
    assert memory_format(model) == torch.channels_last


def test_validation_loss_is_the_slice_mean_of_a_plain_pass(small_validation):
    torch.manual_seed(0)
    model = build_model("D3C5")
    objective = ReconstructionObjective(model)
    got = validate(objective, small_validation, 16, torch.device("cpu"), "fp32")
    with torch.no_grad():
        batch = small_validation.batch(torch.arange(len(small_validation)))
        expected = F.l1_loss(model(batch.zero_filled, batch.kspace, batch.mask), batch.target).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert memory_format(model) == torch.contiguous_format


def test_validation_records_no_autograd_graph(small_validation):
    objective = ReconstructionObjective(build_model("D3C5"))
    losses = []
    plain = objective.validation_loss
    objective.validation_loss = lambda batch: losses.append(plain(batch)) or losses[-1]
    validate(objective, small_validation, 16, torch.device("cpu"), "fp32")
    assert losses and all(loss.grad_fn is None for loss in losses)
