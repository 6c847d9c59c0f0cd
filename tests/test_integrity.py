"""A prepared dataset edited after preparation is refused when it is loaded (issue 14, item 1)."""

import json
import shutil

import h5py
import numpy as np
import pytest

from kdrecon.data.dataset import load_split
from kdrecon.data.integrity import acceleration_tolerance, check_mask
from kdrecon.data.prepare import load_mask_files, make_mask, papers_mask_file, register_papers_h5
from kdrecon.mri.resolution import low_pass_mask

FILE = "train/SCD0000101_phase00.h5"


@pytest.fixture()
def copy(tiny_dataset, tmp_path):
    target = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, target)
    return target


def edit(path, key, change):
    with h5py.File(path, "r+") as file:
        file[key][...] = change(file[key][()])


def test_an_untouched_dataset_loads(copy):
    files = sorted((copy / "train").glob("*.h5"))
    stored = 0
    for file in files:
        with h5py.File(file, "r") as handle:
            stored += handle["volfs"].shape[-1]  # (H, W, S) in the papers' layout
    data = load_split(copy, "train")
    assert len(files) > 1 and len(data) == stored and [v.name for v in data.volumes] == [f.stem for f in files]


def test_a_swapped_mask_is_caught_at_load(copy):
    np.save(copy / "masks/mask_4x.npy", make_mask("recipe", "4x", (48, 48), seed=7))
    with pytest.raises(ValueError, match=r"SCD0000101_phase00\.h5: the k-space has energy outside the mask"):
        load_split(copy, "train")


def test_a_centred_mask_is_caught_at_load(copy):
    mask = np.load(copy / "masks/mask_4x.npy")
    np.save(copy / "masks/mask_4x.npy", np.fft.fftshift(mask, axes=0))
    with pytest.raises(ValueError, match=r"mask_4x\.npy: the mask does not sample the k-space centre"):
        load_split(copy, "train")


def test_rescaled_kspace_and_edited_zero_filled_images_are_caught(copy):
    edit(copy / FILE, "kspace_volus_4x", lambda k: k * 2)
    with pytest.raises(ValueError, match=r"SCD0000101_phase00\.h5: the k-space is not the masked spectrum of the target"):
        load_split(copy, "train")
    edit(copy / FILE, "kspace_volus_4x", lambda k: k / 2)
    edit(copy / FILE, "img_volus_4x", lambda x: x + 0.01)
    with pytest.raises(ValueError, match=r"the zero-filled image is not \|inverse FFT\| of the k-space"):
        load_split(copy, "train")


def test_a_blank_slice_is_refused_before_training_not_at_evaluation(copy):
    """Zeroed consistently (target, k-space, zero-filled), it would pass the other checks and only fail scoring."""
    for key in ("volfs", "kspace_volus_4x", "img_volus_4x"):
        edit(copy / FILE, key, lambda x: np.concatenate([x[..., :2], np.zeros_like(x[..., 2:3]), x[..., 3:]], axis=-1))
    with pytest.raises(ValueError, match=r"SCD0000101_phase00\.h5: slice 2 of the target is all zeros \(1 such\)"):
        load_split(copy, "train")


def replace_slice(path, index, change):
    """Slice ``index`` of the target replaced by ``change(slice)``, its k-space and zero-filled image
    simulated from it with the dataset's mask (so only the target's own check can catch it)."""
    from kdrecon.data.prepare import simulate

    mask = np.load(path.parents[1] / "masks/mask_4x.npy")
    with h5py.File(path, "r+") as file:
        target = change(file["volfs"][:, :, index])
        zero_filled, kspace = simulate(target[None].astype(np.float32), mask)
        file["volfs"][:, :, index] = target
        file["kspace_volus_4x"][:, :, index] = kspace[0]
        file["img_volus_4x"][:, :, index] = zero_filled[0]


def test_a_constant_slice_is_refused_before_training_not_at_evaluation(copy):
    """Flat and scaled to 1, with its k-space and zero-filled image, it passes every other check; HFN and
    VIF would fail on it only after training."""
    replace_slice(copy / FILE, 1, np.ones_like)
    with pytest.raises(ValueError, match=r"SCD0000101_phase00\.h5: slice 1 of the target is constant \(1 such\)"):
        load_split(copy, "train")


def test_a_signed_target_is_refused_as_not_a_magnitude(copy):
    """A z-scored slice (mean 0, scaled to maximum magnitude 1) would be scored with its positive maximum as
    the data range, against a zero-filled input that is a magnitude."""
    def z_scored(image):
        centred = image - image.mean()
        return centred / np.abs(centred).max()

    replace_slice(copy / FILE, 3, z_scored)
    with pytest.raises(ValueError, match=r"SCD0000101_phase00\.h5: slice 3 of the target goes down to -[0-9.]+ \(1 such\): "
                                         r"a signed image"):
        load_split(copy, "train")


def test_slices_not_scaled_to_maximum_one_are_refused_at_load_and_registration(copy, tmp_path):
    """Rescaled consistently (a uint8-range volume, its k-space and zero-filled image), the other checks pass;
    HFN's clip to [0, 1] and deployment's per-slice normalisation would then score or feed another scale."""
    for key in ("volfs", "kspace_volus_4x", "img_volus_4x"):
        edit(copy / FILE, key, lambda x: x * 255)
    with pytest.raises(ValueError, match=r"SCD0000101_phase00\.h5: slice 0 of the target has maximum 255, not 1 "):
        load_split(copy, "train")
    with pytest.raises(ValueError, match=r"SCD0000101_phase00\.h5 .*slice 0 of the target has maximum 255"):
        register_papers_h5(copy / "train", copy / "validation", {"4x": copy / "masks/mask_4x.npy"}, tmp_path / "registered")
    assert not (tmp_path / "registered").exists()


def test_acceleration_label_must_match_the_mask():
    mask = make_mask("papers", "4x", (150, 150))
    check_mask(mask, "4x", "reconstruction", "m")
    with pytest.raises(ValueError, match=r"labelled 8x but samples 37 of 150 lines"):
        check_mask(mask, "8x", "reconstruction", "m")
    check_mask(low_pass_mask((48, 48), 4), "4x", "super-resolution", "box")
    with pytest.raises(ValueError, match=r"a 2x super-resolution mask keeps 24×24, this one 12×12"):
        check_mask(low_pass_mask((48, 48), 4), "2x", "super-resolution", "box")
    with pytest.raises(ValueError, match="samples everything"):
        check_mask(np.ones((8, 8)), "1x", "reconstruction", "m")


def test_a_fixed_mask_of_a_neighbouring_acceleration_is_refused(tmp_path):
    # The papers' cardiac masks sample 37 and 30 of 150 lines: 150 / 37 = 4.05x is 19 % off 5x and
    # 150 / 30 = 5x is 25 % off 4x, so the loose tolerance of drawn masks took either for the other.
    four, five = papers_mask_file(150, "4x"), papers_mask_file(150, "5x")
    assert np.load(four)[:, 0].sum() == 37 and np.load(five)[:, 0].sum() == 30
    with pytest.raises(ValueError, match=r"labelled 5x but samples 37 of 150 lines \(4\.05x; more than 15% off\)"):
        make_mask(str(four), "5x", (150, 150))
    with pytest.raises(ValueError, match=r"labelled 4x but samples 30 of 150 lines \(5\.00x"):
        make_mask(str(five), "4x", (150, 150))
    with pytest.raises(ValueError, match=r"labelled 5x but samples 37 of 150 lines"):
        load_mask_files({"5x": four})
    assert make_mask(str(four), "4x", (150, 150))[:, 0].sum() == 37


def test_a_drawn_mask_keeps_the_loose_tolerance():
    lines = np.zeros(150, bool)
    lines[:31], lines[-1] = True, True  # 32 lines: 4.69x, 17 % off 4x, as fastMRI's random masks may be
    mask = np.repeat(lines[:, None], 150, axis=1).astype(np.float32)
    check_mask(mask, "4x", "reconstruction", "m", acceleration_tolerance("random"))
    with pytest.raises(ValueError, match=r"\(4\.69x; more than 15% off\)"):
        check_mask(mask, "4x", "reconstruction", "m", acceleration_tolerance("papers"))


def test_a_relabelled_papers_mask_is_refused_at_load(copy):
    mask = np.load(copy / "masks/mask_4x.npy")
    height, kept = mask.shape[0], int(mask[:, 0].sum())
    assert height / kept < 4 * 1.25 and height / kept * 1.15 < 5  # within 25 % of 5x, not within 15 %
    (copy / "masks/mask_4x.npy").rename(copy / "masks/mask_5x.npy")
    manifest = json.loads((copy / "dataset.json").read_text())
    manifest["masks"] = {"5x": "masks/mask_5x.npy"}
    (copy / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"mask_5x\.npy: labelled 5x but samples {kept} of {height} lines"):
        load_split(copy, "train", "5x")
