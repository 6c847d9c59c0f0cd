"""DC-CNN shapes, parameter counts (spec §3) and hookable module paths."""

import numpy as np
import pytest
import torch

from kdrecon.models import build_model, count_parameters
from kdrecon.mri.undersample import undersample


@pytest.mark.parametrize(
    "name, expected", [("D5C5", 141_765), ("D4C5", 95_525), ("D3C5", 49_285), ("D2C5", 3_045)]
)
def test_parameter_counts(name, expected):
    # Per block: conv 1→32 (320) + (n−2)·conv 32→32 (9,248) + conv 32→1 (289), times 5 cascades.
    convs = int(name[1])
    assert 5 * (320 + (convs - 2) * 9_248 + 289) == expected
    assert count_parameters(build_model(name)) == expected


@pytest.mark.parametrize("options", [{}, {"residual": True}, {"padding": 5}])
def test_forward_is_data_consistent(options, real_slices, cardiac_mask_4x):
    target = torch.from_numpy(real_slices[:2]).float()
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, zero_filled = undersample(target, mask)
    model = build_model("D3C5", **options)
    last_block = {}
    model.blocks[-1].register_forward_hook(lambda m, i, o: last_block.setdefault("out", o))
    out = model(zero_filled.unsqueeze(1), kspace, mask)
    assert out.shape == (2, 1, 150, 150)
    # The output is the last block's image after hard DC, computed here with NumPy.
    cnn = np.fft.fft2(last_block["out"][:, 0].detach().numpy(), norm="ortho")
    expected = np.fft.ifft2(np.where(cardiac_mask_4x > 0, kspace.numpy(), cnn), norm="ortho").real
    np.testing.assert_allclose(out[:, 0].detach().numpy(), expected, atol=1e-5)


def test_hook_paths_name_post_relu_features():
    model = build_model("D5C5")
    names = dict(model.named_modules())
    assert "blocks.4.layers.2" in names and "blocks.0.layers.4" in names
    captured = {}
    names["blocks.0.layers.2"].register_forward_hook(lambda m, i, o: captured.setdefault("f", o))
    x = torch.rand(1, 1, 16, 16)
    model(x, torch.zeros(1, 16, 16, dtype=torch.complex64), torch.zeros(16, 16))
    assert captured["f"].shape == (1, 32, 16, 16) and captured["f"].min() >= 0


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model .resnet.: expected a name such as D5C5 \(DC-CNN\)"):
        build_model("resnet")


def test_depthwise_form_of_the_last_convolution_equals_the_convolution(real_slices):
    # Reference: torch's plain convolution in float64 on a ReLU feature map of a real image;
    # values and all three gradients must match.
    from kdrecon.models.dccnn import Conv3x3

    torch.manual_seed(0)
    conv = Conv3x3(32, 1).double()
    image = torch.from_numpy(real_slices[:2, None]).double()
    x = torch.relu(torch.nn.functional.conv2d(image, torch.randn(32, 1, 3, 3).double(), padding=1))
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    upstream = torch.randn(2, 1, 150, 150, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    expected_grads = torch.autograd.grad(expected, (x, conv.weight, conv.bias), upstream)
    conv.depthwise_forms = True
    got = conv(x)
    got_grads = torch.autograd.grad(got, (x, conv.weight, conv.bias), upstream)
    torch.testing.assert_close(got, expected)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        torch.testing.assert_close(got_grad, expected_grad)


@pytest.mark.parametrize("precision", ["fp64", "bf16"])
def test_depthwise_input_gradient_of_the_first_convolution_equals_the_convolutions(real_slices, precision):
    # Reference: torch's plain convolution and its autograd (oneDNN's backward kernels), on a real
    # image in float64, and under bf16 autocast as training runs it; value and all three gradients.
    from kdrecon.models.dccnn import Conv3x3

    torch.manual_seed(0)
    conv = Conv3x3(1, 32).double() if precision == "fp64" else Conv3x3(1, 32)
    image = torch.from_numpy(real_slices[:2, None]).to(conv.weight.dtype).requires_grad_()
    upstream = torch.randn(2, 32, 150, 150, dtype=conv.weight.dtype).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        expected = torch.nn.functional.conv2d(image, conv.weight, conv.bias, padding=1)
        conv.depthwise_forms = True
        got = conv(image)
    expected_grads = torch.autograd.grad(expected, (image, conv.weight, conv.bias), upstream.to(expected.dtype))
    got_grads = torch.autograd.grad(got, (image, conv.weight, conv.bias), upstream.to(got.dtype))
    tolerance = {} if precision == "fp64" else {"rtol": 0.02, "atol": 0.02}
    assert type(got.grad_fn).__name__ == "_ImageInputConvolutionBackward"  # the depthwise gradient ran
    assert got.dtype == expected.dtype and [g.dtype for g in got_grads] == [g.dtype for g in expected_grads]
    torch.testing.assert_close(got, expected)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        scale = expected_grad.abs().max()
        torch.testing.assert_close(got_grad / scale, expected_grad / scale, **tolerance)


def test_fast_path_uses_the_depthwise_form_on_cpu_in_either_layout_and_the_reference_does_not():
    from kdrecon.models.dccnn import Conv3x3
    from kdrecon.training.trainer import prepare_module

    def forms(model):
        return {m.depthwise_forms for m in model.modules() if isinstance(m, Conv3x3)}

    cpu = torch.device("cpu")
    assert forms(prepare_module(build_model("D3C5"), cpu, channels_last=True)) == {True}
    assert forms(prepare_module(build_model("D3C5"), cpu, channels_last=False)) == {True}
    assert forms(prepare_module(build_model("D3C5"), cpu, plain=True)) == {False}