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
#: A small teacher of each family with 3 blocks, and the student it is paired with.
#: Students have at least 3 convolutions per block: FSP takes two hidden layers of each.
SMALL = {"DC-CNN": ("D4C3", "D3C3"), "DC-UNet": ("U1C3", "D3C3"), "residual CNN": ("R12B3", "R9B3"),
         "VDSR": ("VDSR9B3", "VDSR6B3")}


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


def test_residual_cnn_parameter_counts_match_the_hand_count():
    # As many convolutions as D5C5 and D3C5 (conv 1→32: 320, 32→32: 9,248, 32→1: 289).
    assert count_parameters(build_model("R25B5")) == 320 + 23 * 9_248 + 289 == 213_313
    assert count_parameters(build_model("R15B5")) == 320 + 13 * 9_248 + 289 == 120_833


def test_conventional_sft_branches_carry_the_teachers_features(real_slices, cardiac_mask_4x):
    from kdrecon.mri.undersample import undersample

    torch.manual_seed(0)
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, zero_filled = undersample(torch.from_numpy(real_slices[:2]).float(), mask)
    zero_filled = zero_filled.unsqueeze(1)
    sft = build_model("sft-teacher", teacher="R10B5", student="R10B5", channels=4)
    teacher_output, branches = sft.forward_with_branches(zero_filled, kspace, mask)
    for j in range(1, 5):  # teacher blocks 1..j, then student blocks j+1..5, on features; image residual at the end
        h = zero_filled
        for block in list(sft.teacher.blocks[:j]) + list(sft.student.blocks[j:]):
            out = block.layers(h)
            h = out + h if out.shape == h.shape and out.shape[1] > 1 else out
        torch.testing.assert_close(branches[j - 1], zero_filled + h)
    assert sft.teacher.blocks[1].residual and not sft.teacher.blocks[0].residual and not sft.teacher.blocks[4].residual


def test_the_small_networks_cover_every_family():  # so adding a family adds it to every test here
    assert set(SMALL) == set(MODEL_FAMILIES)


@pytest.mark.parametrize("name", ["U2C5", "u1c3", "D5C5", "d2c3", "R25B5", "r6b3", "VDSR12B4", "vdsr4b4"])
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
    with pytest.raises(ConfigError, match=r"teacher R25B5 passes features between blocks, student D3C5 image"):
        validate(TrainConfig, {"model": {"name": "sft-teacher", "teacher": "R25B5", "student": "D3C5"}})
    with pytest.raises(ConfigError, match=r"model: data_consistency: D5C5 has no such option"):
        validate(TrainConfig, {"model": {"name": "D5C5", "data_consistency": True}})
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
def test_any_family_teaches_under_std_kd_and_sft_kd(tmp_path, family, small_train, small_validation):
    """Each family trains, trains as a student-friendly teacher, and distils (AT, FSP) into its student."""
    data = (small_train, small_validation)
    teacher_name, student_name = SMALL[family]
    teacher = {"name": teacher_name, "channels": 8}
    train_model(validate(TrainConfig, {"model": teacher, "optimization": TINY}), tmp_path / "teacher", False, *data)
    friendly = {"name": "sft-teacher", "teacher": teacher_name, "student": student_name, "channels": 8}
    train_model(validate(TrainConfig, {"model": friendly, "optimization": TINY}), tmp_path / "sft", False, *data)
    for method, source, init in (("at", "teacher", "random"), ("fsp", "sft", "sft")):
        config = validate(DistillConfig, {
            "teacher": str(tmp_path / source), "student": {"name": student_name, "channels": 8}, "method": method,
            "init": init, "procedure": "single-stage", "optimization": TINY,
        })
        result = distill_student(config, tmp_path / f"{method}-{source}", False, *data)
        assert 0 < result.best_validation_loss < 1


@pytest.mark.parametrize("teacher, student, role", [("D5C5", "D2C5", "student"), ("D2C5", "D3C5", "teacher"),
                                                    ("VDSR8B4", "VDSR4B4", "student"), ("R10B5", "R15B5", "teacher")])
def test_fsp_default_pairs_never_pair_a_layer_with_itself(teacher, student, role):
    """A block with one hidden layer up to its middle has no flow between two of them to compare."""
    from kdrecon.distillation.layer_pairs import default_layer_pairs

    with pytest.raises(ValueError, match=rf"^fsp takes 2 layers per block, and the {role} has too few"):
        default_layer_pairs("fsp", build_model(teacher), build_model(student))
    pairs = default_layer_pairs("fsp", build_model("D5C5"), build_model("D3C5"))
    assert pairs.student[:2] == ["blocks.0.layers.0", "blocks.0.layers.1"]  # spec §4's layer and the one before


@pytest.mark.parametrize("teacher, student", [("VDSR12B5", "D3C5"), ("D5C5", "VDSR12B5"), ("VDSR12B4", "R8B4")])
def test_default_pairs_leave_out_a_block_that_passes_no_features_on(teacher, student):
    """VDSR's last block returns the image: the other network's last cascade has nothing to pair with."""
    from kdrecon.distillation.layer_pairs import default_layer_pairs

    pairs = default_layer_pairs("at", build_model(teacher), build_model(student))
    last = cascades_of(teacher) - 1
    assert len(pairs.teacher) == len(pairs.student) == last
    assert not any(path.startswith(f"blocks.{last}.") for path in pairs.teacher + pairs.student)


def test_dc_unet_features_have_the_image_size_when_it_was_padded(real_slices, cardiac_mask_4x):
    """150 is not a multiple of 4: U2 pads to 152, yet its default AT and FSP maps pair with a 150×150 student."""
    from kdrecon.distillation.hooks import FeatureTap
    from kdrecon.distillation.layer_pairs import default_layer_pairs, feature_channels
    from kdrecon.distillation.losses import build_feature_loss
    from kdrecon.mri.undersample import undersample

    target = torch.from_numpy(real_slices[:2]).float()
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, zero_filled = undersample(target, mask)
    teacher, student = build_model("U2C2", channels=4), build_model("D3C2", channels=4)
    for method in ("at", "fsp"):
        pairs = default_layer_pairs(method, teacher, student)
        teacher_layers, student_layers = pairs.teacher, pairs.student
        assert feature_channels(teacher, teacher_layers) == [4] * len(teacher_layers)
        taps = FeatureTap(teacher, teacher_layers), FeatureTap(student, student_layers)
        for model, tap in zip((teacher, student), taps):
            model(zero_filled.unsqueeze(1), kspace, mask)
        teacher_features, student_features = (tap.features() for tap in taps)
        assert {tuple(f.shape[2:]) for f in teacher_features + student_features} == {(150, 150)}
        loss = build_feature_loss(
            method, feature_channels(student, student_layers), feature_channels(teacher, teacher_layers)
        )
        value = loss(student_features, teacher_features)
        assert torch.isfinite(value) and value > 0  # random networks' features differ
        value.backward()  # the loss reaches every tapped student layer's own weights
        for name, parameter in student.named_parameters():
            if any(name.startswith(layer + ".") for layer in student_layers):
                assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
