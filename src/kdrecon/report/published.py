"""The papers' published numbers, and what each was measured with, shown beside ours in a report.

Each setting is one table of a paper (:class:`PublishedSetting`): its source, data, task,
acceleration and networks (teacher, student, width), and its numbers (PSNR dB / SSIM on the
validation set) keyed by stage name: ``teacher``, ``sft-teacher``, ``student``, ``std-kd-{method}``,
``sft-kd-{method}``, and for a sweep size M ``student-M``, ``std-kd-at-M``, ``sft-kd-at-M``
(measured with student M, :attr:`PublishedSetting.students`). The report shows a number only
beside a stage of the same networks and setting (:mod:`kdrecon.report.paper_column`). Sources:
SFT-KD-Recon (MIDL 2023) Tables 1, 4, 6, 8 and 9, KD-MRI's results table, and the inference
times of D5C5 and D3C5 on a GPU (spec §6).

Example:
    >>> round(published_psnr("cardiac-4x", "teacher") - published_psnr("cardiac-4x", "student"), 2)
    0.47
    >>> PUBLISHED["brain-4x"].measured_with("std-kd-at-D2C5")
    ('D5C5', 'D2C5')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdrecon.data.image import MAGNITUDE
from kdrecon.data.task import RECONSTRUCTION, SUPER_RESOLUTION
from kdrecon.distillation.losses import ATTENTION_TRANSFER
from kdrecon.report.stage_names import sft_kd, std_kd, student

PSNR_SSIM = tuple[float, float]
#: The images every published number was measured on (spec §2).
PUBLISHED_IMAGE = MAGNITUDE


@dataclass(frozen=True)
class PublishedSetting:
    """One published table: what its numbers were measured with, and the numbers by stage name."""

    source: str
    dataset: str
    task: str
    acceleration: str
    teacher: str
    student: str
    channels: int  # the width of both networks
    numbers: dict[str, PSNR_SSIM]
    students: dict[str, str] = field(default_factory=dict)  # stage → its student, where not ``student``

    def measured_with(self, stage: str) -> tuple[str, str]:
        """The teacher and the student of the table that ``stage``'s number comes from."""
        return self.teacher, self.students.get(stage, self.student)

    def describe(self) -> str:
        return (f"{self.source}: {self.dataset}, {self.task} at {self.acceleration}, teacher {self.teacher}, "
                f"student {self.student}, {self.channels} channels")


_TABLE_1 = "SFT-KD-Recon Table 1"
_ACDC, _MRBRAINS = "ACDC cardiac", "MRBrainS brain"
#: The papers' DC-CNN width (spec §3); their residual CNN has as many convolutions of it, and the DC-UNet,
#: whose width the paper does not give, is taken at it (presets paper-heterogeneous-brain-4x). VDSR: 64.
_DC_CNN_WIDTH = 32

# Table 1: DC-CNN teacher D5C5, student D3C5, cardiac and brain at 4x and 5x.
PUBLISHED: dict[str, PublishedSetting] = {
    "cardiac-4x": PublishedSetting(_TABLE_1, _ACDC, RECONSTRUCTION, "4x", "D5C5", "D3C5", _DC_CNN_WIDTH, {
        "teacher": (32.15, 0.9108), "sft-teacher": (32.26, 0.9126), "student": (31.68, 0.9013),
        "std-kd-at": (31.95, 0.9060), "sft-kd-at": (32.03, 0.9070),
        "std-kd-fitnets": (31.90, 0.9050), "sft-kd-fitnets": (31.95, 0.9067),
        "std-kd-cc": (31.83, 0.9049), "sft-kd-cc": (31.96, 0.9070),
        "std-kd-fsp": (31.71, 0.9024), "sft-kd-fsp": (31.91, 0.9060),
        "std-kd-sp": (31.58, 0.9004), "sft-kd-sp": (31.91, 0.9060),
    }),
    "cardiac-5x": PublishedSetting(_TABLE_1, _ACDC, RECONSTRUCTION, "5x", "D5C5", "D3C5", _DC_CNN_WIDTH, {
        "teacher": (31.25, 0.8964), "sft-teacher": (31.33, 0.8968), "student": (30.59, 0.8826),
        "std-kd-at": (30.88, 0.8879), "sft-kd-at": (30.93, 0.8884),
        "std-kd-fitnets": (30.59, 0.8811), "sft-kd-fitnets": (30.86, 0.8871),
        "std-kd-cc": (30.73, 0.8859), "sft-kd-cc": (30.94, 0.8889),
        "std-kd-fsp": (30.51, 0.8817), "sft-kd-fsp": (30.82, 0.8862),
        "std-kd-sp": (30.73, 0.8860), "sft-kd-sp": (30.83, 0.8865),
    }),
    # With Table 8 (brain 4x, AT, teacher D5C5): students D4C5 and D2C5; its D3C5 row repeats Table 1's.
    "brain-4x": PublishedSetting(f"{_TABLE_1} and Table 8", _MRBRAINS, RECONSTRUCTION, "4x", "D5C5", "D3C5", _DC_CNN_WIDTH, {
        "teacher": (40.05, 0.9785), "sft-teacher": (40.23, 0.9799), "student": (39.49, 0.9759),
        "std-kd-at": (39.76, 0.9769), "sft-kd-at": (40.07, 0.9789),
        "std-kd-fitnets": (39.52, 0.9762), "sft-kd-fitnets": (40.08, 0.9790),
        "std-kd-cc": (39.64, 0.9762), "sft-kd-cc": (40.06, 0.9789),
        "std-kd-fsp": (39.45, 0.9756), "sft-kd-fsp": (40.01, 0.9786),
        "std-kd-sp": (39.53, 0.9762), "sft-kd-sp": (39.93, 0.9782),
        "student-D4C5": (39.98, 0.9785), "std-kd-at-D4C5": (40.19, 0.9791), "sft-kd-at-D4C5": (40.21, 0.9797),
        "student-D2C5": (39.01, 0.9728), "std-kd-at-D2C5": (38.87, 0.9720), "sft-kd-at-D2C5": (39.17, 0.9739),
    }, students={name: size for size in ("D4C5", "D2C5")
                 for name in (student(size), std_kd(ATTENTION_TRANSFER, size), sft_kd(ATTENTION_TRANSFER, size))}),
    "brain-5x": PublishedSetting(_TABLE_1, _MRBRAINS, RECONSTRUCTION, "5x", "D5C5", "D3C5", _DC_CNN_WIDTH, {
        "teacher": (39.11, 0.9715), "sft-teacher": (39.16, 0.9720), "student": (38.49, 0.9663),
        "std-kd-at": (38.85, 0.9691), "sft-kd-at": (38.92, 0.9699),
        "std-kd-fitnets": (38.70, 0.9681), "sft-kd-fitnets": (38.95, 0.9699),
        "std-kd-cc": (38.60, 0.9675), "sft-kd-cc": (38.86, 0.9691),
        "std-kd-fsp": (38.32, 0.9643), "sft-kd-fsp": (38.82, 0.9692),
        "std-kd-sp": (38.46, 0.9661), "sft-kd-sp": (38.81, 0.9692),
    }),
    # KD-MRI (MIDL 2020), its quantitative table: DC-CNN teacher (5 cascades of 5 convolutions) and
    # student (of 3), "Ours" = AT + imitation.
    "kd-mri-cardiac-4x": PublishedSetting("KD-MRI results table", _ACDC, RECONSTRUCTION, "4x", "D5C5", "D3C5",
                                          _DC_CNN_WIDTH, {
        "teacher": (32.51, 0.9157), "student": (31.92, 0.9053), "kd-mri-at-imitation": (32.07, 0.9084),
    }),
    # Table 4 (brain 4x, AT), conventional SFT: residual CNN teacher (25 convolutions) and student (15).
    # The student's SSIM is printed as 0.6994, equal to its VIF in the same row: kept as printed.
    "brain-4x-conventional-sft": PublishedSetting("SFT-KD-Recon Table 4", _MRBRAINS, RECONSTRUCTION, "4x", "R25B5",
                                                  "R15B5", _DC_CNN_WIDTH, {
        "teacher": (34.06, 0.9291), "sft-teacher": (34.06, 0.9296), "student": (33.48, 0.6994),
        "std-kd-at": (32.50, 0.9156), "sft-kd-at": (33.50, 0.9205),
    }),
    # Table 6 (brain 4x, AT, DC-UNet teacher, D3C5 student).
    "brain-4x-dc-unet": PublishedSetting("SFT-KD-Recon Table 6", _MRBRAINS, RECONSTRUCTION, "4x", "U2C5", "D3C5",
                                         _DC_CNN_WIDTH, {
        "teacher": (40.11, 0.9777), "sft-teacher": (40.18, 0.9775), "student": (39.47, 0.9758),
        "std-kd-at": (39.77, 0.9774), "sft-kd-at": (39.89, 0.9780),
    }),
    # Table 9 (super-resolution 4x, VDSR teacher 12 layers, student 4, Calgary brain; its caption says
    # MRBrainS, its rows Calgary, and appendix B.2.1 describes Calgary). The SFT-KD column's teacher row
    # is the SFT teacher.
    "calgary-super-resolution-4x": PublishedSetting("SFT-KD-Recon Table 9", "Calgary brain", SUPER_RESOLUTION, "4x",
                                                    "VDSR12B4", "VDSR4B4", 64, {
        "teacher": (30.40, 0.8753), "sft-teacher": (30.49, 0.8767), "student": (29.94, 0.8656),
        "std-kd-at": (29.97, 0.8662), "sft-kd-at": (30.02, 0.8673),
        "std-kd-fitnets": (29.95, 0.8658), "sft-kd-fitnets": (30.01, 0.8672),
        "std-kd-cc": (29.98, 0.8730), "sft-kd-cc": (29.99, 0.8663),
        "std-kd-pkt": (29.95, 0.8659), "sft-kd-pkt": (30.01, 0.8676),
        "std-kd-ft": (29.99, 0.8665), "sft-kd-ft": (30.04, 0.8677),
        "std-kd-nst": (29.98, 0.8662), "sft-kd-nst": (29.99, 0.8663),
    }),
}

#: SFT-KD-Recon's text on its Table 9 (super-resolution): the teacher − student PSNR gap (dB) of the
#: plain student, of Std-KD students and of SFT-KD students, "around" these values over the methods.
PUBLISHED_SUPER_RESOLUTION_GAPS = (0.46, 0.41, 0.36)
#: Inference time per slice (ms) on the papers' GPU by network, at the DC-CNN width (spec §6).
PUBLISHED_INFERENCE_MS = {"D5C5": 17.4, "D3C5": 6.6}
PUBLISHED_INFERENCE_CHANNELS = _DC_CNN_WIDTH


def default_setting(task: str, acceleration: str) -> str | None:
    """The first published setting of ``task`` at ``acceleration`` (cardiac before brain), or None."""
    return next((name for name, setting in PUBLISHED.items()
                 if (setting.task, setting.acceleration) == (task, acceleration)), None)


def published_psnr(setting: str, stage: str) -> float | None:
    """The papers' PSNR of ``stage`` (a stage name such as ``std-kd-at``) in ``setting``, if published."""
    value = _numbers(setting, stage)
    return None if value is None else value[0]


def published_ssim(setting: str, stage: str) -> float | None:
    value = _numbers(setting, stage)
    return None if value is None else value[1]


def _numbers(setting: str, stage: str) -> PSNR_SSIM | None:
    return PUBLISHED[setting].numbers.get(stage) if setting in PUBLISHED else None
