"""Which subjects a split holds and when two splits' subjects are the same patients
(kdrecon.data.subjects): the check that keeps training subjects out of a validation score."""

from kdrecon.data.dataset import sample_directory
from kdrecon.data.prepare import PrepareOptions, prepare_dataset
from kdrecon.data.sources import sunnybrook
from kdrecon.data.subjects import SplitSubjects, seen_subjects, subjects_of_split


def test_the_samples_splits_are_its_subject_files():
    train, validation = subjects_of_split("sample", "train"), subjects_of_split("sample", "validation")
    assert train.subjects == ("SCD0000101", "SCD0000201", "SCD0000301")
    assert validation.subjects == ("SCD0000401",)
    assert train.format == "sunnybrook"


def test_a_prepared_datasets_split_is_read_from_its_manifest(tmp_path):
    options = PrepareOptions(crop=48, mask="recipe", validation_subjects=["SCD0000101"],
                             source=f"sunnybrook:{sample_directory()}")
    dataset = prepare_dataset(sunnybrook.read_volumes(sample_directory(), phases=[0]), tmp_path / "data", options)
    assert subjects_of_split(dataset, "validation") == SplitSubjects(f"sunnybrook:{sample_directory()}", ("SCD0000101",))
    assert subjects_of_split(dataset, "train").subjects == ("SCD0000201", "SCD0000301", "SCD0000401")
    assert subjects_of_split(tmp_path / "gone", "train") is None


def test_subjects_are_compared_within_one_source_or_one_public_dataset():
    trained = SplitSubjects("nifti:/scans/site-a", ("sub01", "sub02"))
    assert seen_subjects(trained, SplitSubjects("nifti:/scans/site-a", ("sub02", "sub03"))) == ["sub02"]
    assert seen_subjects(trained, SplitSubjects("nifti:/scans/site-b", ("sub02",))) == []  # other people, same names
    assert seen_subjects(SplitSubjects("unknown", ("sub02",)), SplitSubjects("unknown", ("sub02",))) == []
    # Sunnybrook's SCD numbers and fastMRI's file names name the same patients wherever the files lie.
    public = SplitSubjects("sunnybrook:/data/scd", ("SCD0000101", "SCD0000201"))
    assert seen_subjects(public, SplitSubjects("sunnybrook:/home/me/scd", ("SCD0000201", "SCD0000401"))) == ["SCD0000201"]
    assert seen_subjects(public, SplitSubjects("nifti:/data/scd", ("SCD0000201",))) == []


def test_a_record_round_trips_and_an_old_file_has_none():
    subjects = SplitSubjects("fastmri:/knee", ("file1000001",))
    assert SplitSubjects.from_record(subjects.as_record()) == subjects
    assert SplitSubjects.from_record(None) is None and SplitSubjects.from_record({"source": "x"}) is None
