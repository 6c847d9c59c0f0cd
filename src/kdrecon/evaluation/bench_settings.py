"""What ``kdrecon bench`` measures when not told otherwise (:func:`kdrecon.evaluation.benchmark.run_benchmark`
and the CLI take their defaults from here)."""

from __future__ import annotations

from kdrecon.training.config import OptimizationConfig

#: Side of the square centre crop of the embedded sample that every measurement runs on.
IMAGE_SIZE = 150
#: Timed training steps per measurement (after warm-up).
TRAINING_STEPS = 8
#: Timed inference calls per measurement.
INFERENCE_REPEATS = 10
#: Slices per training step: the batch every training run uses by default (the papers' 4).
TRAINING_BATCH_SIZE = OptimizationConfig().batch_size
