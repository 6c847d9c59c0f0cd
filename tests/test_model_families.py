"""Every registered model family: its names, parameter count, and any network in any role."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import kdrecon
from kdrecon.models import MODEL_FAMILIES, build_model, count_parameters
from kdrecon.models.registry import canonical_model_name, cascades_of
from kdrecon.training.config import ConfigError, DistillConfig, TrainConfig, validate
from kdrecon.training.distill import distill_student
from kdrecon.training.supervised import train_model

TINY = {"epochs": 1, "batch_size": 8}
#: A small network of each family with 3 cascades, as the D2C3 student has.
SMALL = {"DC-CNN": "D3C3", "DC-UNet": "U1C3"}


def unet_parameters_by_hand(channels: int, levels: int) -> int:
    """Layer by layer: 3×3 convolutions ``9·in·out + out``, 2×2 transposed ``4·in·out + out``, 1×1 output."""
    widths = [channels * 2**level for level in range(levels + 1)]
    conv = lambda a, b: 9 * a * b + b  # noqa: E731
    total = 0
    for level in range(levels):
        total += conv(([1] + widths)[level], widths[level]) + conv(widths[level], widths[level])  # encoder
        total += 4 * widths[level + 1] * widths[level] + widths[level]  # up-sampling into this level
        total += conv(2 * widths[level], widths[level]) + conv(widths[level], widths[level])  # decoder
    total += conv(widths[levels - 1], widths[levels]) + conv(widths[levels], widths[levels])  # bottom
    return total + channels + 1  # 1×1 output convolution


def test_dc_unet_parameter_counts_match_the_hand_count():
    # U2C5 at 32 channels per block, level 0 + level 1: encoder 9,568 + 55,424, bottom 221,440,
    # up-sampling 8,224 + 32,832, decoder 27,712 + 110,720, output 33.
    assert 9_568 + 55_424 + 221_440 + 8_224 + 32_832 + 27_712 + 110_720 + 33 == 465_953
    assert unet_parameters_by_hand(32, 2) == 465_953
    assert count_parameters(build_model("U2C5")) == 5 * 465_953
    assert count_parameters(build_model("U2C5", channels=16)) == 5 * unet_parameters_by_hand(16, 2) == 583_765
    assert count_parameters(build_model("U3C2", channels=8)) == 2 * unet_parameters_by_hand(8, 3)


def test_the_small_networks_cover_every_family():
    assert set(SMALL) == set(MODEL_FAMILIES)


@pytest.mark.parametrize("name", ["U2C5", "u1c3", "D5C5", "d2c3"])
def test_names_are_parsed_by_their_family(name):
    assert canonical_model_name(name) == name.upper()
    assert build_model(name, channels=4).cascades == cascades_of(name) == int(name[-1])


def test_dc_unet_output_is_data_consistent_at_odd_sizes(real_slices, cardiac_mask_4x):
    from kdrecon.mri.undersample import undersample

    target = torch.from_numpy(real_slices[:2]).float()  # 150×150: not a multiple of 4
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, zero_filled = undersample(target, mask)
    model = build_model("U2C2", channels=4)
    last_block = {}
    model.blocks[-1].register_forward_hook(lambda m, i, o: last_block.setdefault("out", o))
    out = model(zero_filled.unsqueeze(1), kspace, mask)
    assert out.shape == last_block["out"].shape == (2, 1, 150, 150)
    # The output is the last U-Net's image after hard DC (real part), computed here with NumPy.
    cnn = np.fft.fft2(last_block["out"][:, 0].detach().numpy(), norm="ortho")
    expected = np.fft.ifft2(np.where(cardiac_mask_4x > 0, kspace.numpy(), cnn), norm="ortho").real
    np.testing.assert_allclose(out[:, 0].detach().numpy(), expected, atol=1e-5)


def test_model_options_a_family_lacks_are_refused():
    with pytest.raises(ConfigError, match=r"model: padding: U2C5 has no such option"):
        validate(TrainConfig, {"model": {"name": "U2C5", "padding": 5}})
    with pytest.raises(ConfigError, match=r"need the same number of cascades"):
        validate(TrainConfig, {"model": {"name": "sft-teacher", "teacher": "U2C4", "student": "D3C5"}})
    config = validate(TrainConfig, {"model": {"name": "sft-teacher", "teacher": "u2c5", "padding": 5}})
    assert config.model.options() == {"channels": 32, "residual": False, "padding": 5, "teacher": "U2C5", "student": "D3C5"}


def test_no_module_outside_the_models_parses_a_model_name():
    root = Path(kdrecon.__file__).parent
    pattern = re.compile(r"C\(\\d|C\(\?P<|parse_dncm")
    offenders = [
        str(path.relative_to(root)) for path in root.rglob("*.py")
        if "models" not in path.parts and pattern.search(path.read_text())
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("family", sorted(SMALL))
def test_any_family_teaches_a_dccnn_student_under_std_kd_and_sft_kd(tmp_path, family, small_train, small_validation):
    """Each family trains, trains as a student-friendly teacher, and distils (AT, FSP) into D2C3."""
    data = (small_train, small_validation)
    teacher = {"name": SMALL[family], "channels": 8}
    train_model(validate(TrainConfig, {"model": teacher, "optimization": TINY}), tmp_path / "teacher", False, *data)
    friendly = {"name": "sft-teacher", "teacher": SMALL[family], "student": "D2C3", "channels": 8}
    train_model(validate(TrainConfig, {"model": friendly, "optimization": TINY}), tmp_path / "sft", False, *data)
    for method, source, init in (("at", "teacher", "random"), ("fsp", "sft", "sft")):
        config = validate(DistillConfig, {
            "teacher": str(tmp_path / source), "student": {"name": "D2C3", "channels": 8}, "method": method,
            "init": init, "procedure": "single-stage", "optimization": TINY,
        })
        result = distill_student(config, tmp_path / f"{method}-{source}", False, *data)
        assert 0 < result.best_validation_loss < 1
