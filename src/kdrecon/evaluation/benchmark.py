"""Speed of a teacher/student pair, measured side by side with the papers' way of running it.

:func:`run_benchmark` measures, on one device and in one process:

* parameters and multiply–accumulates (MACs) per slice of the convolutions (the FFTs of data
  consistency are left out: ``O(HW log HW)`` against the convolutions' ``O(HW·C²·9)``);
* inference latency per slice at batch 1 and batch 16 — median over repeats after warm-up,
  with the device synchronised around each timed call — eager, and on CPU also deployed: the
  network exported with its data consistency and run by ONNX Runtime, and (unless
  ``compile=False``) compiled ahead of time by AOTInductor in the fast path's precision;
* every pair that a ratio compares (fast/reference, student/teacher) timed in alternation,
  call by call, so that a machine whose speed drifts slows both sides alike;
* training throughput (slices/s) of each stage kind — plain L1 training of the teacher, the
  SFT teacher step, and distillation (AT, teacher → student) — for two paths:

  - **fast** (kdrecon's default): slices held in memory, ``precision: auto`` and
    ``channels_last: auto`` (the faster precision and training layout on this device,
    :mod:`kdrecon.training.fast_path`; inference always channels-last), the frozen teacher's outputs and features computed once per stage and looked up;
  - **reference** (how the papers' code ran): float32, NCHW, each item read from its h5 file
    with the mask reloaded from disk, the teacher run every step with autograd on;

* the peak rate of one channels-last 32→32 3×3 convolution in the fast path's precision on this
  device, timed in the same alternating rounds as each table's rows (a shared machine's speed
  drifts within a run), so that each throughput can be stated as a fraction of what the
  hardware does on the network's main op at that time.

Example::

    from kdrecon.evaluation.benchmark import run_benchmark, format_markdown
    result = run_benchmark(teacher="D5C5", student="D3C5", size=150, steps=6)
    print(format_markdown(result))
"""

from __future__ import annotations

import platform
import resource
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from kdrecon.data.dataset import Batch, SliceData, load_sample
from kdrecon.data.layout import TARGET_KEY, kspace_key, write_volume, zero_filled_key
from kdrecon.distillation.distiller import Distiller, LossWeights, TeacherSignals
from kdrecon.distillation.layer_pairs import LayerPairs, default_layer_pairs, feature_channels
from kdrecon.distillation.losses import DEFAULT_METHOD, FEATURE_LOSSES, build_feature_loss, method_label
from kdrecon.distillation.student_friendly import StudentFriendlyObjective
from kdrecon.evaluation.bench_settings import IMAGE_SIZE, INFERENCE_REPEATS, TRAINING_BATCH_SIZE, TRAINING_STEPS
from kdrecon.models import build_model, count_parameters, thin_kernels
from kdrecon.models.registry import DEFAULT_STUDENT, DEFAULT_TEACHER
from kdrecon.models.export import export_network, inference_session, load_ahead_of_time
from kdrecon.training.config import (DEFAULT_TEACHER_CACHE, DISTILL, SFT_TEACHER, STAGE_KINDS, TRAIN,
                                     OptimizationConfig)
from kdrecon.training.fast_path import AUTO_LAYOUT, autocast, resolve_channels_last, resolve_precision
from kdrecon.training.teacher_cache import teacher_cache_bytes
from kdrecon.training.timing import interleaved_median_seconds, synchronise
from kdrecon.training.trainer import ReconstructionObjective, compile_forward, prepare_module, resolve_device


def count_macs(model: nn.Module, batch: Batch) -> int:
    """Multiply–accumulates per slice of every convolution (and transposed convolution) in one forward pass.

    A convolution does ``k_h·k_w·C_in/groups`` per output element; a transposed one spreads each
    input element over ``k_h·k_w·C_out/groups`` outputs.
    """
    total = 0

    def count(module: nn.Conv2d | nn.ConvTranspose2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] // module.groups
        if isinstance(module, nn.ConvTranspose2d):
            total += inputs[0][0].numel() * kernel * module.out_channels
        else:
            total += output[0].numel() * kernel * module.in_channels

    convolutions = (nn.Conv2d, nn.ConvTranspose2d)
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, convolutions)]
    try:
        with torch.no_grad():
            model(batch.zero_filled[:1], batch.kspace[:1], batch.mask)
    finally:
        for handle in handles:
            handle.remove()
    return total


#: Batch sizes of the 32→32 convolution whose fastest rate is the peak.
PEAK_BATCHES = (1, 4, 16)


@dataclass(frozen=True)
class WithPeak:
    """Measurements and the convolution peak (FLOP/s) timed in alternation with them."""

    values: dict[str, float]
    peak_flops: float


def convolution_peak_calls(device: torch.device, size: int, precision: str) -> dict[str, Callable[[], None]]:
    """One channels-last 32→32 3×3 convolution of ``precision`` on ``size``² inputs at each of
    :data:`PEAK_BATCHES`, keyed ``peak/batch{b}``: the network's main operation, to be timed
    in alternation with what is compared with it, so that a drifting machine moves both."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    conv = prepare_module(nn.Conv2d(32, 32, 3, padding=1), device, channels_last=True).to(dtype)
    calls = {}
    for batch_size in PEAK_BATCHES:
        x = torch.randn(batch_size, 32, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)

        def run(x: torch.Tensor = x) -> None:
            with torch.no_grad():
                conv(x)

        calls[f"peak/batch{batch_size}"] = run
    return calls


def split_peak(seconds: dict[str, float], size: int) -> WithPeak:
    """Separate the peak calls' times from the others and turn them into the peak rate (FLOP/s)."""
    rates = [2 * b * size * size * 32 * 32 * 9 / seconds[f"peak/batch{b}"] for b in PEAK_BATCHES]
    return WithPeak({k: v for k, v in seconds.items() if not k.startswith("peak/")}, max(rates))


# --- the reference data path: one h5 read and one mask load per item, as the papers' loaders --


class PerItemH5Slices:
    """The training split written as one h5 file per volume and read back one slice at a time."""

    def __init__(self, data: SliceData, directory: Path) -> None:
        self.mask_file = directory / "mask.npy"
        np.save(self.mask_file, data.mask.cpu().numpy())
        self.items: list[tuple[Path, int]] = []
        for volume in data.volumes:
            path = directory / f"{volume.name}.h5"
            part = slice(volume.start, volume.stop)
            write_volume(
                path,
                data.target[part, 0].cpu().numpy(),
                {data.acceleration: (data.zero_filled[part, 0].cpu().numpy(), data.kspace[part].cpu().numpy())},
            )
            self.items += [(path, index) for index in range(volume.stop - volume.start)]
        self.acceleration = data.acceleration

    def batches(self, batch_size: int, device: torch.device) -> Iterator[Batch]:
        order = np.random.default_rng(0).permutation(len(self.items))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            items = [self._item(self.items[i]) for i in order[start : start + batch_size]]
            zero_filled, kspace, target, mask = (torch.stack(parts) for parts in zip(*items))
            yield Batch(zero_filled.to(device), kspace.to(device), mask[0].to(device), target.to(device))

    def _item(self, item: tuple[Path, int]) -> tuple[torch.Tensor, ...]:
        path, index = item
        with h5py.File(path, "r") as file:  # reopened for every item, slices on the last axis
            target = file[TARGET_KEY][:, :, index]
            zero_filled = file[zero_filled_key(self.acceleration)][:, :, index]
            kspace = file[kspace_key(self.acceleration)][:, :, index]
        mask = np.load(self.mask_file)  # reloaded for every item
        return (
            torch.from_numpy(zero_filled[None].astype(np.float32)),
            torch.from_numpy(kspace.astype(np.complex64)),
            torch.from_numpy(target[None].astype(np.float32)),
            torch.from_numpy(mask.astype(np.float32)),
        )


class _AutogradTeacherDistiller(Distiller):
    """The papers' distillation step: the teacher runs with autograd on (and its graph is kept)."""

    def _teacher(self, batch: Batch) -> TeacherSignals:
        output = self.teacher(batch.zero_filled, batch.kspace, batch.mask)
        return TeacherSignals(output, self.teacher_tap.features() if self.teacher_tap else [])


def _objective(kind: str, teacher: str, student: str, device: torch.device, channels_last: bool, reference: bool,
               options: dict[str, Any] | None = None, method: str = DEFAULT_METHOD, layers: LayerPairs | None = None):
    """A fresh training objective of stage ``kind`` (train, sft-teacher or distill, the latter by ``method``:
    a feature loss with its default weight on ``layers`` (default: the method's default pairs), or
    ``imitation``); ``options`` go to every network built (e.g. ``channels``)."""
    torch.manual_seed(0)
    options = options or {}
    if kind == TRAIN:
        return ReconstructionObjective(prepare_module(build_model(teacher, **options), device, channels_last, plain=reference))
    if kind == SFT_TEACHER:
        model = build_model(SFT_TEACHER, teacher=teacher, student=student, **options)
        return StudentFriendlyObjective(prepare_module(model, device, channels_last, plain=reference))
    teacher_model = prepare_module(build_model(teacher, **options), device, channels_last, plain=reference)
    student_model = prepare_module(build_model(student, **options), device, channels_last, plain=reference)
    if method not in FEATURE_LOSSES:  # imitation: L1 to the target and to the teacher's output, no features
        return Distiller(student_model, teacher_model, LossWeights(1.0, 1.0, 0.0),
                         teacher_cache_bytes=teacher_cache_bytes(DEFAULT_TEACHER_CACHE, device))
    pairs = layers or default_layer_pairs(method, teacher_model, student_model)
    loss = build_feature_loss(
        method, feature_channels(student_model, pairs.student), feature_channels(teacher_model, pairs.teacher)
    ).to(device)
    weights = LossWeights(0.0, 0.0, loss.default_weight)  # KD-MRI's feature stage
    if reference:
        distiller = _AutogradTeacherDistiller(student_model, teacher_model, weights, loss, pairs.student, pairs.teacher)
        distiller.teacher.requires_grad_(True)
        return distiller
    return Distiller(student_model, teacher_model, weights, loss, pairs.student, pairs.teacher,
                     teacher_cache_bytes(DEFAULT_TEACHER_CACHE, device))  # what a distillation stage gets


def check_pair(teacher: str, student: str) -> None:
    """Refuse, before any measuring, a teacher and student whose stages cannot be built (an SFT
    teacher pairs their blocks one to one; attention transfer pairs their layers)."""
    for kind in STAGE_KINDS:
        _objective(kind, teacher, student, torch.device("cpu"), channels_last=False, reference=True)


@dataclass(frozen=True)
class TrainingStep:
    """A timed stage's training step and what else a stage of its kind costs.

    ``step()`` runs one step (batch read included); ``cache_seconds`` were spent once before the
    first step (the fast path's teacher cache); ``objective`` validates as the trainer does (a
    distillation's as in a feature stage: on the feature loss, the teacher run on the slices).
    """

    step: Callable[[], None]
    cache_seconds: float
    objective: Any
    precision: str


def training_step(
    kind: str, teacher: str, student: str, data: SliceData, h5_slices: PerItemH5Slices | None,
    device: torch.device, batch_size: int, options: dict[str, Any] | None = None, precision: str = "auto",
    channels_last: bool | str = AUTO_LAYOUT, compiled: bool = False, method: str = DEFAULT_METHOD,
    layers: LayerPairs | None = None,
) -> TrainingStep:
    """One training step of stage ``kind`` (the batch read included; a distillation by ``method`` on
    ``layers``, default the method's default pairs), with
    the seconds spent once per stage before the first step (the fast path's teacher cache; 0 for the
    reference); ``auto`` precision resolved as for a network that will run ``compiled`` or not."""
    reference = h5_slices is not None
    precision = "fp32" if reference else resolve_precision(precision, device, compiled)
    channels_last = not reference and resolve_channels_last(channels_last, device, precision)
    objective = _objective(kind, teacher, student, device, channels_last=channels_last, reference=reference,
                           options=options, method=method, layers=layers)
    cache_seconds = 0.0
    if not reference and hasattr(objective, "before_training"):
        synchronise(device)
        started = time.perf_counter()
        objective.before_training(data, lambda: autocast(device, precision))
        synchronise(device)
        cache_seconds = time.perf_counter() - started
    parameters = [p for m in objective.modules().values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=OptimizationConfig().learning_rate)
    for module in objective.modules().values():
        module.train()

    def batches() -> Iterator[Batch]:
        while True:
            if reference:
                yield from h5_slices.batches(batch_size, device)
            else:
                yield from data.batches(batch_size, torch.Generator().manual_seed(0))

    stream = batches()

    def step() -> None:
        batch = next(stream)
        with autocast(device, precision):
            losses = objective.training_losses(batch)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()

    return TrainingStep(step, cache_seconds, objective, precision)


def training_throughput(
    kind: str, teacher: str, student: str, data: SliceData, h5_slices: PerItemH5Slices,
    device: torch.device, steps: int, batch_size: int = TRAINING_BATCH_SIZE,
) -> WithPeak:
    """Training slices per second of stage ``kind``, as an epoch over ``data`` would see it, on
    the fast path and on the reference (``h5_slices``: float32, NCHW, per-item h5 reads,
    autograd teacher).

    The two paths' steps alternate (:func:`interleaved_median_seconds`); the median of ``steps``
    steps each, after two warm-up steps, gives the step times. The fast path's teacher cache,
    built once per stage, is charged in full to a single epoch (the worst case). The convolution
    peak of the fast precision is timed in the same rounds (:class:`WithPeak`).
    """
    fast = training_step(kind, teacher, student, data, None, device, batch_size)
    reference = training_step(kind, teacher, student, data, h5_slices, device, batch_size)
    calls = {"fast": fast.step, "reference": reference.step,
             **convolution_peak_calls(device, data.image_shape[-1], fast.precision)}
    measured = split_peak(interleaved_median_seconds(calls, device, steps, warmup=2), data.image_shape[-1])
    seconds, epoch_steps = measured.values, max(1, len(data) // batch_size)
    return WithPeak({
        "fast": epoch_steps * batch_size / (fast.cache_seconds + epoch_steps * seconds["fast"]),
        "reference": batch_size / seconds["reference"],
    }, measured.peak_flops)


def inference_call(model: nn.Module, batch: Batch, device: torch.device, precision: str) -> Callable[[], None]:
    """One no-grad forward pass of ``model`` on ``batch``, as inference runs it."""

    def run() -> None:
        with torch.no_grad(), autocast(device, precision):
            model(batch.zero_filled, batch.kspace, batch.mask)

    return run


def inference_seconds_per_slice(
    teacher: str, student: str, data: SliceData, device: torch.device, batch_size: int, repeats: int,
    compile: bool = True,
) -> WithPeak:
    """Median seconds per slice of fresh ``teacher`` and ``student`` networks on the fast path
    (``precision: auto``, channels-last), the float32 NCHW reference and the deployed paths (:data:`DEPLOYED_PATHS`:
    the exported graph in ONNX Runtime on CPU; with ``compile``, ``torch.compile`` of the fast
    path and on CPU the exported graph compiled by AOTInductor), keyed ``"{role}/{path}"``.

    All are timed in alternation (:func:`interleaved_median_seconds`), so the student/teacher and
    path-to-path ratios are side by side, and with them the convolution peak (:class:`WithPeak`).
    """
    batch = data.batch(torch.arange(batch_size, device=data.target.device))
    runs = {}
    with tempfile.TemporaryDirectory(prefix="kdrecon-bench-") as directory:
        for role, name in (("teacher", teacher), ("student", student)):
            for path, fast in (("fast", True), ("reference", False)):
                model = prepare_module(build_model(name), device, channels_last=fast, plain=not fast).eval()
                runs[f"{role}/{path}"] = inference_call(model, batch, device, resolve_precision("auto", device) if fast else "fp32")
            if device.type == "cpu":
                runs[f"{role}/{DEPLOYED}"] = onnxruntime_call(build_model(name), batch, Path(directory) / f"{role}.onnx")
            compiled = compiled_call(name, batch, device) if compile else None
            if compiled is not None:
                runs[f"{role}/{COMPILED}"] = compiled
            ahead_of_time = (ahead_of_time_call(build_model(name), batch, Path(directory) / f"{role}.pt2")
                             if compile and device.type == "cpu" else None)
            if ahead_of_time is not None:
                runs[f"{role}/{AHEAD_OF_TIME}"] = ahead_of_time
        runs |= convolution_peak_calls(device, data.image_shape[-1], resolve_precision("auto", device))
        measured = split_peak(interleaved_median_seconds(runs, device, repeats, warmup=3), data.image_shape[-1])
    return WithPeak({key: value / batch_size for key, value in measured.values.items()}, measured.peak_flops)


#: The deployed path timed beside the eager ones on CPU: the exported graph in ONNX Runtime.
DEPLOYED = "onnxruntime"
#: ``torch.compile`` of the fast path's eager network.
COMPILED = "compiled"
#: The exported graph compiled ahead of time (AOTInductor) in the fast path's precision, on CPU.
AHEAD_OF_TIME = "aot-inductor"
#: The deployed paths of the benchmark's table, with their descriptions.
DEPLOYED_PATHS = {DEPLOYED: "exported with data consistency, ONNX Runtime",
                  COMPILED: "torch.compile of the fast path",
                  AHEAD_OF_TIME: "exported with data consistency, AOTInductor in the fast path's precision "
                                 "(in bf16, the blocks' thin convolutions as kdrecon's kernels where the CPU has "
                                 "AVX-512 BF16)"}


def compiled_call(name: str, batch: Batch, device: torch.device) -> Callable[[], None] | None:
    """One call of network ``name`` on the fast path with a ``torch.compile`` forward; ``None`` (and a
    warning) where compiling is not available."""
    model = prepare_module(build_model(name), device, channels_last=True).eval()
    precision = resolve_precision("auto", device, compiled=True)
    with autocast(device, precision):
        if not compile_forward(model, batch):
            return None
    return inference_call(model, batch, device, precision)


def onnxruntime_call(model: nn.Module, batch: Batch, path: Path) -> Callable[[], None]:
    """One call of ``model`` exported with its data consistency (:mod:`kdrecon.models.export`) in ONNX Runtime."""
    inputs = (batch.zero_filled.cpu(), batch.kspace.real.contiguous().cpu(), batch.kspace.imag.contiguous().cpu())
    export_network(model.eval(), batch.mask.cpu().numpy(), path, "onnx", inputs)
    session = inference_session(path)
    feed = {item.name: tensor.numpy() for item, tensor in zip(session.get_inputs(), inputs)}
    return lambda: session.run(None, feed)


def ahead_of_time_call(model: nn.Module, batch: Batch, path: Path) -> Callable[[], None] | None:
    """One call of ``model`` exported with its data consistency as an AOTInductor package for this batch
    size, in the fast path's precision; ``None`` (and a warning) where it cannot be compiled."""
    inputs = (batch.zero_filled.cpu(), batch.kspace.real.contiguous().cpu(), batch.kspace.imag.contiguous().cpu())
    precision = resolve_precision("auto", torch.device("cpu"))
    try:
        export_network(model.eval(), batch.mask.cpu().numpy(), path, AHEAD_OF_TIME, inputs, precision)
        package = load_ahead_of_time(path)
    except Exception as error:  # no C++ compiler, an unsupported operator, ...
        warnings.warn(f"AOTInductor unavailable ({type(error).__name__}: {str(error).splitlines()[0][:120]})", stacklevel=2)
        return None

    def run() -> None:
        with torch.no_grad():
            package(*inputs)

    return run


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated by PyTorch, or the peak resident memory of this process (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_benchmark(
    teacher: str = DEFAULT_TEACHER,
    student: str = DEFAULT_STUDENT,
    size: int = IMAGE_SIZE,
    device: str = "auto",
    steps: int = TRAINING_STEPS,
    repeats: int = INFERENCE_REPEATS,
    progress: Callable[[str], None] = lambda message: None,
    compile: bool = True,
    training_batch_size: int = TRAINING_BATCH_SIZE,
) -> dict[str, Any]:
    """Measure everything listed in the module docstring; returns plain data (see :func:`format_markdown`).

    ``training_batch_size`` is the batch of the training steps (the papers' 4; a GPU is also worth
    measuring at 16).
    """
    target_device = resolve_device(device)
    data = load_sample("train")
    if not 1 <= training_batch_size <= len(data):
        raise ValueError(f"training batch size {training_batch_size} (--batch-size): must lie in [1, {len(data)}], "
                         f"the sample's training slices")
    if size != data.image_shape[0]:
        data = _crop(data, size)
    data = data.to(target_device)
    result = _bench_header(target_device, size, training_batch_size)
    example = data.batch(torch.arange(1, device=target_device))
    for role, name in (("teacher", teacher), ("student", student)):
        model = build_model(name).to(target_device)
        result["models"][role] = {"name": name, "parameters": count_parameters(model), "macs_per_slice": count_macs(model, example),
                                  "cascades": model.cascades}
    for batch_size in (1, 16):
        progress(f"inference batch {batch_size}")
        measured = inference_seconds_per_slice(teacher, student, data, target_device, batch_size, repeats, compile)
        for key, value in measured.values.items():
            role, path = key.split("/")
            result["inference"][f"{role}/batch{batch_size}/{path}"] = value
        result["peak_flops"][f"inference/batch{batch_size}"] = measured.peak_flops
    with tempfile.TemporaryDirectory(prefix="kdrecon-bench-") as directory:
        h5_slices = PerItemH5Slices(data, Path(directory))
        for kind in STAGE_KINDS:  # the teacher network on L1, the SFT step, the student distilled by the teacher
            progress(f"training {kind}")
            measured = training_throughput(kind, teacher, student, data, h5_slices, target_device, steps,
                                           training_batch_size)
            for path, rate in measured.values.items():
                result["training"][f"{kind}/{path}"] = rate
            result["peak_flops"][f"training/{kind}"] = measured.peak_flops
    result["peak_memory_bytes"] = peak_memory_bytes(target_device)
    return result


def _bench_header(device: torch.device, size: int, training_batch_size: int) -> dict[str, Any]:
    """What a bench result records of its machine and settings, with empty tables to fill."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "image_size": size,
        "training_batch_size": training_batch_size,
        "models": {},
        "inference": {},
        "training": {},
        "peak_flops": {},  # the convolution peak timed alongside each measurement, by measurement
        "fast_precision": resolve_precision("auto", device),
        "fast_training_layout": "channels-last" if resolve_channels_last(AUTO_LAYOUT, device, "auto") else "NCHW",
        # Whether the fast path's thin convolutions run in kdrecon's kernels (bf16 on a CPU with AVX-512 BF16).
        "thin_kernels": device.type == "cpu" and resolve_precision("auto", device) == "bf16"
                        and thin_kernels.fast_kernels_available(),
    }


def _crop(data: SliceData, size: int) -> SliceData:
    """Centre-crop every slice (and re-simulate its k-space) for other image sizes."""
    from kdrecon.data.prepare import make_mask, simulate

    height = data.image_shape[0]
    if size > height:
        raise ValueError(f"--size {size}: the embedded sample is {height}×{height}; choose at most {height}")
    offset = (height - size) // 2
    target = data.target[:, 0, offset : offset + size, offset : offset + size].numpy().astype(np.float64)
    mask = make_mask("recipe", data.acceleration, (size, size))
    zero_filled, kspace = simulate(target, mask)
    return SliceData(
        zero_filled=torch.from_numpy(zero_filled).float().unsqueeze(1),
        kspace=torch.from_numpy(kspace).to(torch.complex64),
        mask=torch.from_numpy(mask).float(),
        target=torch.from_numpy(target).float().unsqueeze(1),
        volumes=data.volumes,
        acceleration=data.acceleration,
    )


def training_flops_per_slice(result: dict[str, Any], kind: str) -> float:
    """FLOPs of one training step per slice, counting a backward pass as twice the forward.

    ``train``: teacher forward + backward (3× its forward); ``sft-teacher``: the teacher and the
    branches (branch j runs N−j student blocks); ``distill``: the student's forward + backward
    and one teacher forward (the cache, charged once per epoch).
    """
    teacher = 2 * result["models"]["teacher"]["macs_per_slice"]
    student = 2 * result["models"]["student"]["macs_per_slice"]
    if kind == TRAIN:
        return 3 * teacher
    if kind == SFT_TEACHER:
        cascades = result["models"]["student"]["cascades"]
        branch_blocks = sum(range(1, cascades))  # branch j runs N − j student blocks: 4 + 3 + 2 + 1 for N = 5
        return 3 * (teacher + student * branch_blocks / cascades)
    return 3 * student + teacher


def _deployed_lines(result: dict[str, Any]) -> list[str]:
    """One table per deployed path the result holds: ms per slice and the student's speed-up."""
    inference, lines = result["inference"], []
    for path, description in DEPLOYED_PATHS.items():
        if f"student/batch1/{path}" not in inference:
            continue
        lines += ["", f"| deployed: {description} (ms per slice) | batch 1 | batch 16 |", "|---|---|---|"]
        for role in ("teacher", "student"):
            cells = " | ".join(f"{inference[f'{role}/batch{b}/{path}'] * 1e3:.2f}" for b in (1, 16))
            lines.append(f"| {role} {result['models'][role]['name']} | {cells} |")
        ratios = " | ".join(f"{inference[f'teacher/batch{b}/{path}'] / inference[f'student/batch{b}/{path}']:.2f}×"
                            for b in (1, 16))
        lines.append(f"| student speed-up over teacher | {ratios} |")
    return lines


def _peaks(result: dict[str, Any]) -> dict[str, float]:
    """The peak each measurement is a fraction of; results written before the peak was timed
    alongside each measurement hold one peak, measured first."""
    if "peak_flops" in result:
        return result["peak_flops"]
    keys = [f"inference/batch{b}" for b in (1, 16)] + [f"training/{kind}" for kind in STAGE_KINDS]
    return dict.fromkeys(keys, result["convolution_peak_flops"])


def format_markdown(result: dict[str, Any]) -> str:
    """The benchmark as Markdown tables, speed-ups as fast/reference ratios from the same run."""
    peaks = _peaks(result)
    teacher, student = result["models"]["teacher"], result["models"]["student"]
    precision = result.get("fast_precision", "bf16")  # results written before it was recorded ran bf16
    layout = result.get("fast_training_layout", "channels-last")  # and before this, channels-last
    lines = [
        f"Device: {result['device']} ({result['device_type']}, {result['threads']} threads), torch {result['torch']}; "
        f"{result['image_size']}×{result['image_size']} slices; fast = {precision} + channels-last "
        f"({layout} in training; + in-memory "
        "data and a cached teacher for training"
        + ("; the 1→32 and 32→1 convolutions in kdrecon's kernels" if result.get("thin_kernels") else "")
        + "); reference = float32 NCHW (+ per-item h5 reads, mask reloaded, "
        "teacher with autograd). "
        f"Peak of one {precision} channels-last 32→32 3×3 convolution here, "
        + ("timed alongside each table's rows: " if "peak_flops" in result else "measured before the rows: ")
        + f"{min(peaks.values()) / 1e12:.2f}–{max(peaks.values()) / 1e12:.2f} TFLOP/s.",
        "",
        "| model | parameters | GMAC per slice |",
        "|---|---|---|",
    ]
    for role in ("teacher", "student"):
        model = result["models"][role]
        lines.append(f"| {role} {model['name']} | {model['parameters']:,} | {model['macs_per_slice'] / 1e9:.3f} |")
    lines += ["", "| inference (ms per slice) | fast | reference | speed-up | fast: % of conv peak |", "|---|---|---|---|---|"]
    for role, model in (("teacher", teacher), ("student", student)):
        for batch_size in (1, 16):
            fast = result["inference"][f"{role}/batch{batch_size}/fast"]
            reference = result["inference"][f"{role}/batch{batch_size}/reference"]
            fraction = 2 * model["macs_per_slice"] / fast / peaks[f"inference/batch{batch_size}"]
            lines.append(
                f"| {role} {model['name']}, batch {batch_size} | {fast * 1e3:.2f} | {reference * 1e3:.2f} | "
                f"{reference / fast:.2f}× | {fraction:.0%} |"
            )
    for batch_size in (1, 16):
        ratio = result["inference"][f"teacher/batch{batch_size}/fast"] / result["inference"][f"student/batch{batch_size}/fast"]
        lines.append(f"| student speed-up over teacher, batch {batch_size} (fast) | | | {ratio:.2f}× | |")
    lines += _deployed_lines(result)
    lines += [
        "",
        f"| training (slices/s, batch {result['training_batch_size']}) | fast | reference | speed-up | fast: % of conv peak |",
        "|---|---|---|---|---|",
    ]
    for kind, label in ((TRAIN, f"teacher {teacher['name']} (L1)"), (SFT_TEACHER, "SFT teacher"),
                        (DISTILL, f"distillation {method_label(DEFAULT_METHOD)} {teacher['name']}→{student['name']}")):
        fast, reference = result["training"][f"{kind}/fast"], result["training"][f"{kind}/reference"]
        fraction = training_flops_per_slice(result, kind) * fast / peaks[f"training/{kind}"]
        lines.append(f"| {label} | {fast:.2f} | {reference:.2f} | {reference and fast / reference:.2f}× | {fraction:.0%} |")
    memory = result["peak_memory_bytes"] / 2**30
    where = "GPU memory allocated by PyTorch" if result["device_type"] == "cuda" else "resident memory of the process"
    lines += ["", f"Peak {where}: {memory:.2f} GiB (both paths of a comparison are alive together while they alternate)."]
    return "\n".join(lines)
