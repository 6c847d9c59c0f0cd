"""kdrecon's kernels for a DC-CNN block's thin convolutions, against float64 convolutions of the same values."""

import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdrecon.models import build_model
from kdrecon.models import thin_kernels
from kdrecon.models.thin_kernels import FeatureToImageConvolution, ImageConvolutionReLU, substitute_thin_kernels

pytestmark = pytest.mark.skipif(not thin_kernels.load(), reason="the kernels' library does not build here")

# bf16 keeps 8 significant bits: an output rounded once is within 2⁻⁸ of its value, relatively.
BF16_ROUNDING = 2.0 ** -8


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.exists():
        return set()
    lines = [line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")]
    return set(lines[0].split(":", 1)[1].split()) if lines else set()


def _bf16(*shape: int, scale: float = 1.0, generator: torch.Generator) -> torch.Tensor:
    return (torch.randn(*shape, generator=generator) * scale).to(torch.bfloat16)


def _assert_rounded_from(output: torch.Tensor, reference: torch.Tensor) -> None:
    """``output`` (bf16) is ``reference`` (float64) rounded to bf16, up to float32 summation error."""
    error = (output.double() - reference).abs()
    assert torch.all(error <= BF16_ROUNDING * reference.abs() + 1e-5), float(error.max())


def test_the_fast_kernels_run_where_the_cpu_has_avx512_bf16():
    assert thin_kernels.fast_kernels_available() == ("avx512_bf16" in _cpu_flags() and "avx512bw" in _cpu_flags())


def test_the_library_runs_its_loops_on_torchs_own_openmp_runtime():
    """ATen's parallel_for is OpenMP inlined from its header: a library compiled without it runs serially
    (it calls no GOMP_parallel); linked to torch's runtime, the process holds one OpenMP runtime."""
    from torch.utils import cpp_extension

    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm to read the library's symbols")
    library = Path(cpp_extension._get_build_directory(thin_kernels.LIBRARY, verbose=False)) / f"{thin_kernels.LIBRARY}.so"
    undefined = subprocess.run([nm, "-D", "--undefined-only", str(library)], capture_output=True, text=True, check=True).stdout
    assert "GOMP_parallel" in undefined
    maps = Path("/proc/self/maps")
    if maps.exists():
        runtimes = {line.split()[-1] for line in maps.read_text().splitlines()
                    if any(name in line for name in ("libgomp", "libomp", "libiomp"))}
        assert len(runtimes) == 1, runtimes


def test_a_compiler_without_openmp_still_builds_the_kernels_serially(monkeypatch):
    calls = []

    class Extension:
        def load(self, **options):
            calls.append(options["extra_cflags"])
            if "-fopenmp" in options["extra_cflags"]:
                raise RuntimeError("Error building extension\nc++: error: unsupported option '-fopenmp'")

    with pytest.warns(UserWarning, match="built without OpenMP"):
        assert thin_kernels._build(Extension(), openmp=True) == "c++: error: unsupported option '-fopenmp'"
        assert thin_kernels._build(Extension(), openmp=False) is True
    assert calls == [["-O3", "-fopenmp"], ["-O3"]]


@pytest.mark.parametrize("shape", [(1, 1, 150, 150), (3, 1, 7, 5), (2, 1, 1, 1), (1, 1, 17, 33)])
def test_image_convolution_relu_is_a_zero_padded_convolution_and_relu(shape):
    generator = torch.Generator().manual_seed(sum(shape))
    image, weight, bias = _bf16(*shape, generator=generator), _bf16(32, 1, 3, 3, generator=generator), _bf16(32, generator=generator)
    output = torch.ops.kdrecon.image_convolution_relu(image, weight, bias)
    reference = F.conv2d(image.double(), weight.double(), bias.double(), padding=1).relu()
    assert output.dtype == torch.bfloat16 and output.shape == (shape[0], 32, *shape[2:])
    assert output.is_contiguous(memory_format=torch.channels_last)
    _assert_rounded_from(output, reference)


@pytest.mark.parametrize("shape,channels_last", [((1, 32, 150, 150), True), ((2, 32, 5, 7), False),
                                                 ((1, 32, 1, 1), True), ((2, 32, 3, 18), True), ((1, 32, 4, 40), False)])
def test_feature_to_image_convolution_is_a_zero_padded_convolution(shape, channels_last):
    # Widths 18 and 40: one and two blocks of 16 interior pixels, and a remainder; 1 and 5, none.
    generator = torch.Generator().manual_seed(sum(shape))
    features = _bf16(*shape, generator=generator).relu()
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    weight, bias = _bf16(1, 32, 3, 3, scale=0.2, generator=generator), _bf16(1, generator=generator)
    output = torch.ops.kdrecon.feature_to_image_convolution(features, weight, bias)
    reference = F.conv2d(features.double(), weight.double(), bias.double(), padding=1)
    assert output.dtype == torch.bfloat16 and output.shape == (shape[0], 1, *shape[2:])
    _assert_rounded_from(output, reference)


def test_other_dtypes_and_widths_are_the_same_computation_through_aten():
    generator = torch.Generator().manual_seed(0)
    image, weight, bias = torch.randn(2, 1, 9, 11, generator=generator), torch.randn(32, 1, 3, 3, generator=generator), torch.randn(32, generator=generator)
    torch.testing.assert_close(torch.ops.kdrecon.image_convolution_relu(image, weight, bias),
                               F.conv2d(image, weight, bias, padding=1).relu())
    features = _bf16(2, 16, 9, 11, generator=generator)  # 16 channels: not the kernels' width
    weight, bias = _bf16(1, 16, 3, 3, generator=generator), _bf16(1, generator=generator)
    _assert_rounded_from(torch.ops.kdrecon.feature_to_image_convolution(features, weight, bias),
                         F.conv2d(features.double(), weight.double(), bias.double(), padding=1))


def test_a_misshapen_weight_is_refused_by_name():
    with pytest.raises(RuntimeError, match=r"kdrecon::feature_to_image_convolution: weight must be \(out, 32, 3, 3\)"):
        torch.ops.kdrecon.feature_to_image_convolution(torch.zeros(1, 32, 4, 4), torch.zeros(1, 16, 3, 3), torch.zeros(1))
    with pytest.raises(RuntimeError, match="kdrecon::image_convolution_relu: bias must be"):
        torch.ops.kdrecon.image_convolution_relu(torch.zeros(1, 1, 4, 4), torch.zeros(32, 1, 3, 3), torch.zeros(31))


def test_a_dccnn_with_the_kernels_reconstructs_as_with_onednn(real_slices, cardiac_mask_4x):
    from kdrecon.mri.undersample import undersample

    torch.manual_seed(0)
    network = build_model("D3C5").eval()
    with_kernels = build_model("D3C5").eval()
    with_kernels.load_state_dict(network.state_dict())
    assert substitute_thin_kernels(with_kernels) == 10  # the first and last convolution of 5 blocks
    assert isinstance(with_kernels.blocks[0].layers[0], ImageConvolutionReLU)
    assert isinstance(with_kernels.blocks[4].layers[2], FeatureToImageConvolution)
    assert isinstance(with_kernels.blocks[0].layers[1].conv, torch.nn.Conv2d)  # 32→32: oneDNN's
    target = torch.from_numpy(real_slices[:2]).float()
    mask = torch.from_numpy(cardiac_mask_4x).float()
    kspace, zero_filled = undersample(target, mask)
    with torch.no_grad():
        expected = network.double()(zero_filled.unsqueeze(1).double(), kspace.to(torch.complex128), mask.double())
        blocks = [block.to(torch.bfloat16) for block in with_kernels.blocks]
        state = zero_filled.unsqueeze(1)
        consistency = network.consistency_for(kspace, mask)
        for block in blocks:  # every block in bf16, data consistency in float32, as a bf16 package runs them
            state = consistency(block(state.to(torch.bfloat16)).float())
    # bf16 features through five cascades: within 2 % of the image's range of the float64 network.
    assert np.abs(state.numpy() - expected.numpy()).max() < 0.02 * float(expected.abs().max())


@pytest.mark.parametrize("shape", [(4, 32, 150, 150), (1, 32, 5, 7), (2, 32, 1, 1), (3, 32, 4, 9)])
def test_tap_channel_sums_are_a_convolutions_weight_and_bias_gradients(shape):
    generator = torch.Generator().manual_seed(sum(shape))
    features = _bf16(*shape, generator=generator).contiguous(memory_format=torch.channels_last)
    image = _bf16(shape[0], 1, *shape[2:], generator=generator)
    sums, totals = torch.ops.kdrecon.tap_channel_sums(features, image)
    # Σ_p features[c, p] image[p + t] is the weight gradient of the 1→C convolution of `image` whose output gradient is `features`.
    weight = torch.zeros(shape[1], 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(shape[1], dtype=torch.float64, requires_grad=True)
    F.conv2d(image.double(), weight, bias, padding=1).backward(features.double())
    assert sums.dtype == totals.dtype == torch.float32
    torch.testing.assert_close(sums.double(), weight.grad[:, 0], rtol=1e-5, atol=1e-5 * float(weight.grad.abs().max()))
    torch.testing.assert_close(totals.double(), bias.grad, rtol=1e-5, atol=1e-5 * float(bias.grad.abs().max()) + 1e-6)


@pytest.mark.parametrize("function,channels", [(thin_kernels.ImageConvolution, (1, 32)), (thin_kernels.FeatureConvolution, (32, 1))])
def test_training_forms_give_the_gradients_of_a_float64_convolution(function, channels):
    generator = torch.Generator().manual_seed(channels[0])
    image = _bf16(2, channels[0], 12, 21, generator=generator).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(channels[1], channels[0], 3, 3, generator=generator), torch.randn(channels[1], generator=generator)
    output_gradient = _bf16(2, channels[1], 12, 21, generator=generator).contiguous(memory_format=torch.channels_last)
    inputs = [t.clone().requires_grad_() for t in (image, weight, bias)]
    function.apply(*inputs).backward(output_gradient)
    # The reference: PyTorch's float64 convolution of the same (bf16-rounded) values.
    references = [t.double().requires_grad_() for t in (image, weight.bfloat16(), bias.bfloat16())]
    F.conv2d(*references, padding=1).backward(output_gradient.double())
    assert [t.grad.dtype for t in inputs] == [torch.bfloat16, torch.float32, torch.float32]
    _assert_rounded_from(inputs[0].grad, references[0].grad)  # the input gradient comes out of a bf16 kernel
    for got, expected in zip(inputs[1:], references[1:]):  # weight and bias gradients are summed in float32
        torch.testing.assert_close(got.grad.double(), expected.grad, rtol=1e-5, atol=1e-5 * float(expected.grad.abs().max()))


def test_conv3x3_trains_in_the_kernels_only_where_asked_and_bf16():
    from kdrecon.models.dccnn import Conv3x3, use_thin_kernels

    network = use_thin_kernels(build_model("D3C5"))
    conv = network.blocks[0].layers[0].conv
    assert conv.thin_kernels == thin_kernels.fast_kernels_available()
    image = torch.rand(1, 1, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = conv(image)
    expected_function = "ImageConvolutionBackward" if conv.thin_kernels else "ConvolutionBackward0"
    assert type(output.grad_fn).__name__ == expected_function
    assert type(conv(image).grad_fn).__name__ == "ConvolutionBackward0"  # float32 without autocast: oneDNN
    assert not any(module.thin_kernels for module in use_thin_kernels(network, False).modules() if isinstance(module, Conv3x3))


def test_a_build_lock_left_by_a_killed_build_is_reported_not_waited_on(tmp_path, monkeypatch):
    import os
    import time

    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path))
    lock = tmp_path / "lock"
    lock.touch()
    old = time.time() - thin_kernels.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match=f"{lock} was left by a build that did not finish; remove it"):
        assert thin_kernels.load.__wrapped__() is False


def test_image_convolution_relu_keeps_nans_and_an_infinity_reaches_only_its_neighbours():
    image = torch.zeros(1, 1, 6, 9, dtype=torch.bfloat16)
    image[0, 0, 2, 4], image[0, 0, 4, 7] = float("nan"), float("inf")
    weight, bias = torch.ones(32, 1, 3, 3, dtype=torch.bfloat16), torch.zeros(32, dtype=torch.bfloat16)
    output = torch.ops.kdrecon.image_convolution_relu(image, weight, bias)
    reference = F.conv2d(image.double(), weight.double(), bias.double(), padding=1).relu()
    assert torch.equal(output.double().isnan(), reference.isnan()) and torch.equal(output.double().isinf(), reference.isinf())
    finite = reference.isfinite()
    assert torch.equal(output.double()[finite], reference[finite])


@pytest.mark.parametrize("shape", [(4, 32, 150, 150), (1, 32, 3, 5), (2, 8, 4, 4)])
def test_channel_energy_is_the_float32_sum_of_squares_over_the_channels(shape):
    generator = torch.Generator().manual_seed(3)
    features = _bf16(*shape, generator=generator).contiguous(memory_format=torch.channels_last)
    energy = torch.ops.kdrecon.channel_energy(features)
    reference = features.double().square().sum(1)  # bf16 squares are exact in float64
    assert energy.dtype == torch.float32 and energy.shape == reference.shape
    torch.testing.assert_close(energy.double(), reference, rtol=1e-6, atol=0)
    features[0, 5, 0, 0] = float("nan")
    assert torch.ops.kdrecon.channel_energy(features)[0, 0, 0].isnan()


def test_attention_transfers_channel_energy_takes_the_kernel_with_the_same_value_and_gradient():
    from kdrecon.distillation.losses.attention_transfer import ChannelEnergy

    generator = torch.Generator().manual_seed(4)
    features = _bf16(2, 32, 12, 10, generator=generator).contiguous(memory_format=torch.channels_last)
    assert thin_kernels.channel_energy_in_kernel(features) == thin_kernels.fast_kernels_available()
    assert not thin_kernels.channel_energy_in_kernel(features.contiguous())  # NCHW: ATen's reduction
    leaf = features.clone().requires_grad_()
    energy = ChannelEnergy.apply(leaf)
    torch.testing.assert_close(energy, torch.linalg.vector_norm(features, dim=1, dtype=torch.float32).square(),
                               rtol=1e-6, atol=0)
    energy.sum().backward()
    torch.testing.assert_close(leaf.grad, 2 * features)  # d/dF Σ F² = 2F, exact in bf16
