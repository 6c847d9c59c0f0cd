"""kdrecon: knowledge distillation for deep MRI reconstruction networks.

Layers, lowest first (nothing imports upward): ``kdrecon.mri`` (FFT, masks, data
consistency) → ``kdrecon.data`` → ``kdrecon.models`` → ``kdrecon.distillation`` →
``kdrecon.training`` → ``kdrecon.evaluation`` → ``kdrecon.cli``.
"""

__version__ = "0.1.0"
