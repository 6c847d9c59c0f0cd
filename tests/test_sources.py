"""Source readers on small files built in ``tmp_path`` from real data.

Real data: the Sunnybrook cine fixture (uint16 magnitude frames) for NIfTI and DICOM, and the
Siemens GRE phantom k-space (2 coils, readout 2x oversampled) for fastMRI.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage, generate_uid
from test_bad_input import refused

from kdrecon.cli import main
from kdrecon.data import slicing
from kdrecon.data.dataset import dataset_identity, prepared_slice_axis, same_data
from kdrecon.data.sources import dicom, fastmri, nifti


@pytest.fixture(scope="module")
def frames(shared_dir: Path) -> np.ndarray:
    """Eight real Sunnybrook frames, uint16, cropped to a non-square 72x56 to catch axis swaps."""
    images = np.load(shared_dir / "data/sunnybrook/fixture_8slices.npz")["images"]
    return np.ascontiguousarray(images[:, 90:162, 100:156])


@pytest.fixture(scope="module")
def phantom_image(shared_dir: Path) -> np.ndarray:
    """Real phantom magnitude, (2, 160 ky, 320 kx) with readout oversampling: RSS and |coil 0|."""
    kspace = np.load(shared_dir / "data/twix-gre-phantom/gre_kspace.npy")  # (160, 2, 320)
    coils = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(0, 2)), axes=(0, 2), norm="ortho"), axes=(0, 2))
    rss = np.sqrt((np.abs(coils) ** 2).sum(axis=1))
    return np.stack([rss, np.abs(coils[:, 0])]).astype(np.float32)


def centred_kspace(images: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(images, axes=axes), axes=axes, norm="ortho"), axes=axes)


# --------------------------------------------------------------------------- NIfTI


def save_nifti(data: np.ndarray, file: Path, slope: float | None = None, inter: float | None = None) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, np.eye(4))
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    nib.save(image, file)
    return file


def test_nifti_3d_round_trip_default_axis(frames: np.ndarray, tmp_path: Path) -> None:
    file = save_nifti(frames.transpose(1, 2, 0), tmp_path / "SCD 01.nii.gz")  # (X, Y, Z=8)
    (volume,) = nifti.read_volumes(file)
    assert volume.images.dtype == np.float32
    assert volume.images.shape == (8, 72, 56)
    np.testing.assert_array_equal(volume.images, frames.astype(np.float32))
    assert volume.subject == "SCD 01"
    assert volume.name == "SCD_01"  # filesystem-safe


def test_nifti_slice_axis_option(frames: np.ndarray, tmp_path: Path) -> None:
    data = frames.transpose(1, 2, 0)  # (72, 56, 8)
    file = save_nifti(data, tmp_path / "v.nii")
    (along_x,) = nifti.read_volumes(file, slice_axis=0)
    assert along_x.images.shape == (72, 56, 8)
    np.testing.assert_array_equal(along_x.images[5], frames[:, 5, :].T)  # stored order (Y, Z)
    (along_y,) = nifti.read_volumes(file, slice_axis=1)
    np.testing.assert_array_equal(along_y.images[7], frames[:, :, 7].T)  # stored order (X, Z)
    with pytest.raises(ValueError, match="slice axis 3: must be a spatial axis"):
        next(nifti.read_volumes(file, slice_axis=3))


def test_nifti_scaling_is_applied(frames: np.ndarray, tmp_path: Path) -> None:
    file = save_nifti(frames.astype(np.int16).transpose(1, 2, 0), tmp_path / "scaled.nii.gz", 2.0, -5.0)
    (volume,) = nifti.read_volumes(file)
    np.testing.assert_array_equal(volume.images, frames.astype(np.float32) * 2 - 5)


def test_nifti_4d_gives_one_volume_per_frame(frames: np.ndarray, tmp_path: Path) -> None:
    cine = frames.reshape(2, 4, 72, 56).transpose(2, 3, 1, 0)  # (X, Y, Z=4, T=2); frame t = frames[4t:4t+4]
    file = save_nifti(cine, tmp_path / "patient007_4d.nii.gz")
    volumes = list(nifti.read_volumes(file, subject_pattern=r"(patient\d+)"))
    assert [v.name for v in volumes] == ["patient007_4d_t00", "patient007_4d_t01"]
    assert {v.subject for v in volumes} == {"patient007"}
    for t, volume in enumerate(volumes):
        np.testing.assert_array_equal(volume.images, frames[4 * t : 4 * t + 4].astype(np.float32))


def test_nifti_directory_subject_pattern_and_exclude(frames: np.ndarray, tmp_path: Path) -> None:
    volume = frames[:4].transpose(1, 2, 0)
    for patient in ("patient002", "patient001"):
        for frame in ("01", "12"):
            save_nifti(volume, tmp_path / patient / f"{patient}_frame{frame}.nii.gz")
            save_nifti(volume.astype(np.uint8), tmp_path / patient / f"{patient}_frame{frame}_gt.nii.gz")
    (tmp_path / "patient001" / "Info.cfg").write_text("ED: 1\n")
    volumes = list(nifti.read_volumes(tmp_path, subject_pattern=r"patient\d+", exclude_pattern=r"_gt\.nii"))
    assert [v.name for v in volumes] == [
        "patient001_frame01", "patient001_frame12", "patient002_frame01", "patient002_frame12",
    ]
    assert [v.subject for v in volumes] == ["patient001", "patient001", "patient002", "patient002"]
    with pytest.raises(ValueError, match="patient001_frame01.nii.gz.*subject_pattern"):
        next(nifti.read_volumes(tmp_path, subject_pattern=r"(subject\d+)"))


def test_nifti_subjects_default_to_bids_and_acdc_names_so_one_persons_scans_stay_together(frames, tmp_path):
    volume = frames[:2].transpose(1, 2, 0)
    names = ["sub-01_run-1_T1w", "sub-01_run-2_T1w", "sub-02_T1w", "patient001_frame01", "patient001_frame12",
             "patient0010_frame01", "scan3", "mysub-9"]
    for name in names:
        save_nifti(volume, tmp_path / f"{name}.nii.gz")
    subjects = {v.name: v.subject for v in nifti.read_volumes(tmp_path)}
    assert subjects == {"sub-01_run-1_T1w": "sub-01", "sub-01_run-2_T1w": "sub-01", "sub-02_T1w": "sub-02",
                        "patient001_frame01": "patient001", "patient001_frame12": "patient001",
                        "patient0010_frame01": "patient0010", "scan3": "scan3", "mysub-9": "mysub-9"}
    # prepared, the two runs of sub-01 share a split
    destination = tmp_path.parent / f"{tmp_path.name}-prepared"
    assert main(["prepare", "nifti", str(tmp_path), str(destination), "--crop", "0", "--mask", "equispaced",
                 "--validation-subjects", "sub-01", "patient001"]) == 0
    manifest = json.loads((destination / "dataset.json").read_text())
    assert sorted(manifest["splits"]["validation"]["subjects"]) == ["patient001", "sub-01"]
    assert manifest[slicing.SLICE_AXIS_KEY] == 2  # the default, the last axis (Z), recorded as 0..2
    # a NIfTI dataset prepared before the axis was recorded keeps the identity its networks recorded
    identity = dataset_identity(destination)
    (destination / "dataset.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != slicing.SLICE_AXIS_KEY}))
    assert dataset_identity(destination) == identity
    with pytest.warns(UserWarning, match="prepared from NIfTI before kdrecon recorded the slice axis"):
        assert prepared_slice_axis(destination) is None
    assert sorted(p.stem for p in (destination / "validation").glob("*.h5")) == [
        "patient001_frame01", "patient001_frame12", "sub-01_run-1_T1w", "sub-01_run-2_T1w"]


def test_nifti_duplicate_stems_get_unique_names(frames: np.ndarray, tmp_path: Path) -> None:
    for site in ("siteA", "siteB"):
        save_nifti(frames[:2].transpose(1, 2, 0), tmp_path / site / "t1.nii.gz")
    names = [v.name for v in nifti.read_volumes(tmp_path)]
    assert names == ["siteA__t1", "siteB__t1"]


def test_nifti_bad_input(frames: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no NIfTI files"):
        next(nifti.read_volumes(tmp_path))
    flat = save_nifti(frames[0], tmp_path / "flat.nii.gz")
    with pytest.raises(ValueError, match=r"flat\.nii\.gz.*3-D"):
        next(nifti.read_volumes(flat))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    with pytest.raises(ValueError, match=r"broken\.nii\.gz.*cannot read"):
        next(nifti.read_volumes(broken))


# --------------------------------------------------------------------------- DICOM

ROW, COL = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(0.5), -np.sin(0.5)])  # oblique plane
NORMAL = np.cross(ROW, COL)


def write_dicom(
    file: Path,
    pixels: np.ndarray,
    *,
    patient: str,
    series_uid: str,
    series_number: int,
    instance: int,
    position: np.ndarray | None = None,
    slice_location: float | None = None,
    trigger_time: float | None = None,
    explicit: bool = True,
    phase_encoding: str | None = None,
    image_type: list[str] | str | None = None,
    complex_component: str | None = None,
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian
    ds = FileDataset(str(file), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientID = patient
    ds.StudyInstanceUID = series_uid.rsplit(".", 1)[0] + ".1"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in (*ROW, *COL)]
    if slice_location is not None:
        ds.SliceLocation = slice_location
    if phase_encoding is not None:
        ds.InPlanePhaseEncodingDirection = phase_encoding
    if image_type is not None:
        ds.ImageType = image_type
    if complex_component is not None:
        ds.ComplexImageComponent = complex_component
    if trigger_time is not None:
        ds.TriggerTime = trigger_time
        ds.CardiacNumberOfImages = 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = 2
    ds.RescaleIntercept = -5
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    file.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(file, enforce_file_format=True)


@pytest.fixture()
def dicom_tree(frames: np.ndarray, tmp_path: Path) -> Path:
    """A cine series (4 oblique locations x 2 phases) and a plain 3-slice series, shuffled files.

    Cine: frame (location l, phase p) = frames[4p + l]; locations are written so that neither
    InstanceNumber nor the raw z coordinate gives the spatial order. Plain series: no
    ImagePositionPatient, only SliceLocation, in reverse instance order.
    """
    writes = []
    cine_uid, plain_uid = generate_uid(), generate_uid()
    spatial_rank = [2, 0, 3, 1]  # location l sits at rank spatial_rank[l] along the normal
    for l in range(4):
        for p in range(2):
            in_plane = np.array([-30.0 + 3 * l, 12.0, 50.0]) + 30.0 * l * COL
            position = in_plane + 8.0 * spatial_rank[l] * NORMAL
            writes.append(dict(
                pixels=frames[4 * p + l], patient="SCD0000101", series_uid=cine_uid, series_number=4,
                instance=1 + 2 * l + p, position=position, trigger_time=40.0 * p + 1.5 * l,
            ))
    for s in range(3):
        writes.append(dict(
            pixels=frames[5 + s], patient="SCD0000401", series_uid=plain_uid, series_number=2,
            instance=3 - s, slice_location=-10.0 + 10.0 * s, explicit=False,
        ))
    random.Random(0).shuffle(writes)
    for i, kwargs in enumerate(writes):
        write_dicom(tmp_path / f"sub{i % 2}" / f"IM{i:04d}", **kwargs)
    (tmp_path / "README.txt").write_text("not DICOM\n")
    (tmp_path / "sub0" / "notes.dcm").write_bytes(b"\0" * 200)
    return tmp_path


def test_dicom_groups_orders_and_rescales(dicom_tree: Path, frames: np.ndarray) -> None:
    volumes = list(dicom.read_volumes(dicom_tree))
    assert [(v.name, v.subject) for v in volumes] == [
        ("SCD0000101_series4_t00", "SCD0000101"),
        ("SCD0000101_series4_t01", "SCD0000101"),
        ("SCD0000401_series2", "SCD0000401"),
    ]
    rescaled = frames.astype(np.float32) * 2 - 5
    by_rank = [1, 3, 0, 2]  # location at each spatial rank (inverse of spatial_rank)
    for p in range(2):
        assert volumes[p].images.dtype == np.float32
        np.testing.assert_array_equal(volumes[p].images, rescaled[[4 * p + l for l in by_rank]])
    np.testing.assert_array_equal(volumes[2].images, rescaled[[5, 6, 7]])


def test_dicom_split_phases_off(dicom_tree: Path, frames: np.ndarray) -> None:
    cine = next(dicom.read_volumes(dicom_tree, split_phases=False))
    assert cine.name == "SCD0000101_series4"
    rescaled = frames.astype(np.float32) * 2 - 5
    np.testing.assert_array_equal(cine.images, rescaled[[1, 5, 3, 7, 0, 4, 2, 6]])  # location-major


def test_prepare_dicom_records_the_orientation_it_reads_in(dicom_tree: Path, tmp_path: Path) -> None:
    """A dataset prepared before ROW-encoded series were transposed (no entry) is other data to the checks."""
    assert main(["prepare", "dicom", str(dicom_tree), str(tmp_path / "cine"), "--mask", "recipe", "--crop", "48",
                 "--validation-fraction", "0.5"]) == 0
    manifest = json.loads((tmp_path / "cine" / "dataset.json").read_text())
    assert manifest["orientation"] == dicom.MANIFEST_ORIENTATION["orientation"]


def test_dicom_subject_falls_back_to_folder(frames: np.ndarray, tmp_path: Path) -> None:
    uid = generate_uid()
    for s in range(2):
        write_dicom(tmp_path / "case17" / f"{s}.dcm", frames[s], patient="", series_uid=uid,
                    series_number=1, instance=s + 1, slice_location=float(s))
    (volume,) = dicom.read_volumes(tmp_path)
    assert volume.subject == "case17"


def test_dicom_series_phase_encoded_along_rows_is_read_transposed(frames: np.ndarray, tmp_path: Path) -> None:
    """Its phase-encoding lines are image columns: transposed, they are the rows kdrecon's masks sample."""
    uid = generate_uid()
    for s in range(2):
        write_dicom(tmp_path / f"{s}.dcm", frames[s], patient="P", series_uid=uid, series_number=1, instance=s + 1,
                    slice_location=float(s), phase_encoding="ROW")
    (volume,) = dicom.read_volumes(tmp_path)
    np.testing.assert_array_equal(volume.images, (frames[:2].astype(np.float32) * 2 - 5).transpose(0, 2, 1))
    assert volume.images.flags.c_contiguous
    write_dicom(tmp_path / "2.dcm", frames[2], patient="P", series_uid=uid, series_number=1, instance=3,
                slice_location=2.0, phase_encoding="COL")
    with pytest.raises(ValueError, match=r"2.dcm: its InPlanePhaseEncodingDirection differs from .*0.dcm's in series"):
        next(dicom.read_volumes(tmp_path))


def test_dicom_bad_input(frames: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no DICOM image files"):
        next(dicom.read_volumes(tmp_path))
    (tmp_path / "a.dcm").write_text("hello")
    (tmp_path / "b.txt").write_text("world")
    with pytest.raises(ValueError, match=rf"{tmp_path.name}.*no DICOM image files"):
        next(dicom.read_volumes(tmp_path))
    uid = generate_uid()
    write_dicom(tmp_path / "s1", frames[0], patient="P", series_uid=uid, series_number=1, instance=1,
                slice_location=0.0)
    write_dicom(tmp_path / "s2", frames[1, :40], patient="P", series_uid=uid, series_number=1, instance=2,
                slice_location=5.0)
    with pytest.raises(ValueError, match=r"s2: image shape 40x56 differs"):
        next(dicom.read_volumes(tmp_path))


@pytest.mark.parametrize("image_type, component, refused", [
    (["ORIGINAL", "PRIMARY", "P", "ND"], None, "phase"),  # Siemens' phase image
    (["ORIGINAL", "PRIMARY", "R"], None, "real part"),
    (["DERIVED", "PRIMARY"], "IMAGINARY", "imaginary part"),  # the enhanced-MR attribute
    ("ORIGINAL", None, None),  # a single value: its letters are not values
    (["ORIGINAL", "PRIMARY", "M", "ND"], "MAGNITUDE", None),
])
def test_dicom_images_other_than_a_magnitude_are_refused(frames: np.ndarray, tmp_path: Path, image_type, component,
                                                        refused) -> None:
    write_dicom(tmp_path / "IM1", frames[0], patient="P", series_uid=generate_uid(), series_number=1, instance=1,
                slice_location=0.0, image_type=image_type, complex_component=component)
    if refused is None:
        assert next(dicom.read_volumes(tmp_path)).images.shape == (1, *frames[0].shape)
        return
    with pytest.raises(ValueError, match=rf"IM1: a {refused} image \(ImageType .*\), not a magnitude one"):
        next(dicom.read_volumes(tmp_path))


# --------------------------------------------------------------------------- fastMRI


def write_fastmri(file: Path, **datasets: np.ndarray) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(file, "w") as h5:
        for key, value in datasets.items():
            h5.create_dataset(key, data=value)
        h5.attrs["max"] = 1.0
    return file


def test_fastmri_kspace_reproduces_reconstruction(phantom_image: np.ndarray, tmp_path: Path) -> None:
    kspace = centred_kspace(phantom_image).astype(np.complex64)  # (2, 160, 320): readout oversampled
    target = phantom_image[:, :, 80:240]  # (2, 160, 160): oversampling removed
    file = write_fastmri(tmp_path / "file1000001.h5", kspace=kspace, reconstruction_esc=target)
    (from_recon,) = fastmri.read_volumes(file)
    (from_kspace,) = fastmri.read_volumes(file, image_source="kspace")
    assert from_recon.name == from_recon.subject == "file1000001"
    # Transposed: fastMRI's phase-encoding direction (its columns) along kdrecon's mask rows.
    transposed = np.swapaxes(target, -1, -2)
    np.testing.assert_array_equal(from_recon.images, transposed)
    assert from_kspace.images.dtype == np.float32 and from_kspace.images.shape == (2, 160, 160)
    np.testing.assert_allclose(from_kspace.images, transposed, rtol=0, atol=1e-5 * target.max())


def test_fastmri_kspace_without_reconstruction_crops_to_320(phantom_image: np.ndarray, tmp_path: Path) -> None:
    padded = np.pad(phantom_image, ((0, 0), (121, 120), (21, 20)))  # odd sizes: (2, 401, 361)
    write_fastmri(tmp_path / "full" / "file1000002.h5", kspace=centred_kspace(padded).astype(np.complex64))
    (volume,) = fastmri.read_volumes(tmp_path, image_source="kspace")
    expected = padded[:, 40:360, 20:340]  # fastMRI centre crop: start (n - 320) // 2
    np.testing.assert_allclose(volume.images, np.swapaxes(expected, -1, -2), rtol=0, atol=1e-5 * expected.max())
    with pytest.raises(ValueError, match=r"file1000002\.h5: no 'reconstruction_esc'; use --image-source kspace"):
        next(fastmri.read_volumes(tmp_path))


def write_test_split(file: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A file like fastMRI's test split: ``kspace`` with 3 of every 4 columns zeroed, their ``mask``, no
    ``reconstruction_esc``; returns the k-space and mask written."""
    kspace = centred_kspace(images).astype(np.complex64)
    lines = np.arange(kspace.shape[-1]) % 4 == 0
    write_fastmri(file, kspace=kspace * lines, mask=lines.astype(np.float32))
    return kspace * lines, lines


@pytest.mark.parametrize("image_source", ["reconstruction", "kspace"])
def test_fastmri_test_split_file_is_refused_as_a_target(phantom_image: np.ndarray, tmp_path: Path,
                                                        image_source: str) -> None:
    """Its k-space is undersampled, so its image is aliased: never a target, and no advice to use its k-space."""
    file = tmp_path / "file1000003.h5"
    kspace, lines = write_test_split(file, phantom_image)
    with pytest.raises(ValueError) as refusal:
        fastmri.read_volumes(file, image_source=image_source)  # the call itself, before any volume is read
    assert str(refusal.value) == (f"{file}: undersampled (a test- or challenge-split file: it has a 'mask'), so it "
                                  "cannot be a target; reconstruct it with `kdrecon reconstruct`")
    acquired, mask, acceleration = fastmri.read_acquired(file)  # how `kdrecon reconstruct` reads it
    np.testing.assert_array_equal(acquired, kspace)
    np.testing.assert_array_equal(mask, lines)
    assert acceleration is None


@pytest.mark.parametrize("image_source", ["reconstruction", "kspace"])
def test_prepare_fastmri_refuses_a_folder_holding_a_test_split_file(phantom_image: np.ndarray, tmp_path: Path,
                                                                    image_source: str) -> None:
    source = tmp_path / "singlecoil"
    for name in ("file1000001", "file1000002"):  # fully sampled, sorted before the test-split file
        write_fastmri(source / f"{name}.h5", kspace=centred_kspace(phantom_image).astype(np.complex64),
                      reconstruction_esc=phantom_image[:, :, 80:240])
    write_test_split(source / "file1000003.h5", phantom_image)
    arguments = ["prepare", "fastmri", source, tmp_path / "knee", "--image-source", image_source, "--mask", "recipe"]
    message = refused(arguments, tmp_path)
    assert message == (f"kdrecon: error: {source / 'file1000003.h5'}: undersampled (a test- or challenge-split file: "
                       "it has a 'mask'), so it cannot be a target; reconstruct it with `kdrecon reconstruct`\n")
    (source / "file1000003.h5").unlink()  # without it the same command prepares the dataset
    assert main([str(a) for a in arguments]) == 0
    manifest = json.loads((tmp_path / "knee" / "dataset.json").read_text())
    splits = manifest["splits"]
    assert [splits[split]["subjects"] for split in ("train", "validation")] == [["file1000001"], ["file1000002"]]
    # The images' orientation is recorded: a dataset prepared before fastMRI images were transposed (its
    # manifest without the entry) is other data to the checks that compare datasets.
    assert manifest["orientation"] == fastmri.MANIFEST_ORIENTATION["orientation"]
    identity = dataset_identity(tmp_path / "knee")
    del manifest["orientation"]
    (tmp_path / "knee" / "dataset.json").write_text(json.dumps(manifest))
    assert not same_data(identity, dataset_identity(tmp_path / "knee"))


def test_fastmri_bad_input(phantom_image: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no fastMRI h5 files"):
        next(fastmri.read_volumes(tmp_path))
    target = phantom_image[:, :, 80:240]
    no_kspace = write_fastmri(tmp_path / "no_kspace.h5", reconstruction_esc=target)
    with pytest.raises(ValueError, match=r"no_kspace\.h5: missing dataset 'kspace'"):
        next(fastmri.read_volumes(no_kspace))
    real = write_fastmri(tmp_path / "real.h5", kspace=phantom_image, reconstruction_esc=target)
    with pytest.raises(ValueError, match=r"real\.h5: 'kspace' must be complex"):
        next(fastmri.read_volumes(real))
    multicoil = write_fastmri(tmp_path / "multicoil.h5", kspace=centred_kspace(phantom_image)[None])
    with pytest.raises(ValueError, match=r"multicoil\.h5: 'kspace' must be single-coil"):
        next(fastmri.read_volumes(multicoil, image_source="kspace"))
    small = write_fastmri(tmp_path / "small.h5", kspace=centred_kspace(phantom_image))
    with pytest.raises(ValueError, match=r"small\.h5.*smaller than the crop 320x320"):
        next(fastmri.read_volumes(small, image_source="kspace"))
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"broken\.h5: cannot open"):
        next(fastmri.read_volumes(broken))
    with pytest.raises(ValueError, match="image_source"):
        next(fastmri.read_volumes(small, image_source="magnitude"))
