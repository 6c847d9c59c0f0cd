"""kdrecon: knowledge distillation for deep MRI reconstruction networks.

Layers, lowest first (nothing imports upward; ``tests/test_layers.py`` holds the order):
``kdrecon.mri`` (FFT, masks, data consistency) → ``data`` → ``models`` → ``distillation`` →
``training`` → ``evaluation`` → ``report`` → ``experiment`` → ``deployment`` → ``demo`` → ``cli``.
"""

__version__ = "0.1.0"
