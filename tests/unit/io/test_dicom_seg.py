"""DICOM SEG out: series written by pydicom in three orientations, an asymmetric mask in display order, and the SEG
read back with pydicom and highdicom: each frame must hold the mask at its source instance's own pixels (found from
the headers' world coordinates, not from the reader's permutation), referencing exactly the series' instances."""
from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import MRImageStorage, generate_uid

from brainseg import __version__
from brainseg.errors import BrainsegError
from brainseg.evaluation.encodings import dicom_series, mr_header, nifti
from brainseg.io.dicom_seg import dicom_seg
from brainseg.io.volumes import read_volume

# name: (ImageOrientationPatient, PixelSpacing, step between files (LPS mm), files, rows, columns)
SERIES = {
    "axial": ((1, 0, 0, 0, 1, 0), 0.94, (0, 0, 3.3), 6, 40, 48),
    "axial, flipped rows and columns, stored top down": ((-1, 0, 0, 0, -1, 0), 0.94, (0, 0, -3.0), 6, 40, 48),
    "isotropic sagittal (resliced to axial)": ((0, 1, 0, 0, 0, -1), 1.0, (1.0, 0, 0), 24, 32, 40),
}


def dicom_files(orientation: tuple, spacing: float, step: tuple, files: int, rows: int, columns: int,
                patient: bool = True) -> list[tuple[str, bytes]]:
    """A 16-bit MR series, one file a slice, in shuffled file order."""
    rng = np.random.default_rng(files)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    written = []
    for index in range(files):
        ds = mr_header(study, series, index + 1, frame)
        if patient:
            ds.PatientID, ds.PatientName, ds.StudyID, ds.AccessionNumber = "BS-001", "Test^Patient", "1", "A1"
            ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "19700101", "O", "20260101", "120000"
        ds.SeriesNumber = 4
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = list(np.array([-20.0, -25.0, 10.0]) + index * np.asarray(step, float))
        ds.PixelSpacing, ds.SliceThickness = [spacing, spacing], float(np.linalg.norm(step))
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, (rows, columns)).astype(np.uint16).tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        written.append((f"IM{index + 1:04d}.dcm", buffer.getvalue()))
    return written[1::2] + written[::2]


def asymmetric_masks(shape: tuple[int, int, int]) -> np.ndarray:
    """``DxHxW bool``: random blobs, denser towards the last slice, row and column, none on the first two slices."""
    depth, height, width = shape
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 1, depth)[:, None, None] * np.linspace(0, 1, height)[:, None] * np.linspace(0, 1, width)
    masks = rng.random(shape) < 0.9 * ramp
    masks[:2] = False
    return masks


def world_grid(header: pydicom.Dataset) -> np.ndarray:
    """LPS mm of each pixel centre of one instance: ``rows x columns x 3``."""
    orientation = np.asarray(header.ImageOrientationPatient, float)
    row_mm, column_mm = (float(v) for v in header.PixelSpacing)
    r, c = np.mgrid[:int(header.Rows), :int(header.Columns)]
    return (np.asarray(header.ImagePositionPatient, float) + c[..., None] * column_mm * orientation[:3]
            + r[..., None] * row_mm * orientation[3:])


def expected_frames(headers: list[pydicom.Dataset], masks: np.ndarray) -> dict[str, np.ndarray]:
    """Each instance's mask, looked up by world position: display slices run inferior to superior (LPS z up),
    rows anterior to posterior (y up), columns right to left (x up)."""
    grids = {h.SOPInstanceUID: world_grid(h) for h in headers}
    points = np.concatenate([g.reshape(-1, 3) for g in grids.values()]).round(3)
    axes = [np.unique(points[:, axis]) for axis in range(3)]          # x, y, z values in ascending order
    assert tuple(len(a) for a in axes[::-1]) == masks.shape
    frames = {}
    for uid, grid in grids.items():
        x, y, z = (np.searchsorted(axes[a], grid[..., a].round(3)) for a in range(3))
        frames[uid] = masks[z, y, x]
    return frames


def read_frames(data: bytes) -> tuple[pydicom.Dataset, dict[str, np.ndarray]]:
    """The SEG's dataset and its frames by referenced source instance (pydicom, not highdicom)."""
    seg = pydicom.dcmread(io.BytesIO(data))
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    frames = {}
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        segment = group if "SegmentIdentificationSequence" in group else shared   # one segment: may be shared
        assert segment.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert uid not in frames
        frames[uid] = frame.astype(bool)
    return seg, frames


@pytest.mark.parametrize("kind", list(SERIES))
def test_each_frame_holds_the_mask_on_its_source_instance_pixels(kind: str) -> None:
    files = dicom_files(*SERIES[kind])
    headers = {h.SOPInstanceUID: h for h in (pydicom.dcmread(io.BytesIO(data)) for _, data in files)}
    volume = read_volume(files)
    assert volume.dicom_sources is not None and len(volume.dicom_sources) == len(files)
    assert not any("PixelData" in d for d in volume.dicom_sources)
    masks = asymmetric_masks((len(volume.images_u8),) + volume.images_u8[0].shape[:2])

    seg, frames = read_frames(dicom_seg(volume, list(masks), {"seg_threshold": 0.7}))

    expected = expected_frames(list(headers.values()), masks)
    assert set(frames) <= set(headers)
    for uid, truth in expected.items():
        frame = frames.get(uid, np.zeros_like(truth))     # frames without tumour are left out
        assert np.array_equal(frame, truth), f"instance {headers[uid].InstanceNumber} differs"
    assert {uid for uid, truth in expected.items() if truth.any()} == set(frames)
    for group in seg.PerFrameFunctionalGroupsSequence:
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose(group.PlanePositionSequence[0].ImagePositionPatient, headers[uid].ImagePositionPatient)


def test_the_seg_references_the_series_and_names_the_segment_and_algorithm() -> None:
    files = dicom_files(*SERIES["axial"])
    sources = [pydicom.dcmread(io.BytesIO(data)) for _, data in files]
    volume = read_volume(files)
    masks = asymmetric_masks((len(volume.images_u8),) + volume.images_u8[0].shape[:2])
    settings = {"seg_threshold": 0.7, "gate": 0.2, "min_area": 75, "largest_3d_component": True}

    data = dicom_seg(volume, list(masks), settings)

    seg = hd.seg.segread(io.BytesIO(data))
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert (seg.StudyInstanceUID, seg.FrameOfReferenceUID, seg.PatientID) == (
        sources[0].StudyInstanceUID, sources[0].FrameOfReferenceUID, "BS-001")
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence
    assert [r.SeriesInstanceUID for r in referenced] == [sources[0].SeriesInstanceUID]
    assert sorted(i.ReferencedSOPInstanceUID for i in referenced[0].ReferencedInstanceSequence) == \
        sorted(s.SOPInstanceUID for s in sources)
    assert {i.ReferencedSOPClassUID for i in referenced[0].ReferencedInstanceSequence} == {MRImageStorage}
    assert seg.get_segment_numbers() == [1]
    segment = seg.get_segment_description(1)
    assert segment.segment_label == "tumour" and segment.algorithm_type.value == "AUTOMATIC"
    assert segment.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
    assert segment.segmented_property_type == codes.SCT.Neoplasm
    algorithm = segment.algorithm_identification[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("brainseg", __version__)
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == codes.DCM.ArtificialIntelligence.value
    assert "seg_threshold=0.7" in algorithm.AlgorithmParameters and "min_area=75" in algorithm.AlgorithmParameters


def test_an_empty_prediction_keeps_every_frame_and_a_series_without_patient_module_is_written() -> None:
    stored = np.random.default_rng(0).integers(0, 4000, (5, 32, 32)).astype(np.uint16)
    volume = read_volume([("series.zip", dicom_series(stored))])   # no PatientID, StudyID, ... as some exports
    assert "PatientID" not in volume.dicom_sources[0]

    seg, frames = read_frames(dicom_seg(volume, [np.zeros((32, 32), bool)] * 5))

    assert len(frames) == 5 and not any(frame.any() for frame in frames.values())
    assert seg.PatientID == "" and "PatientID" not in volume.dicom_sources[0]   # the read header stays as read


def test_a_volume_that_is_not_a_dicom_series_is_refused_with_a_message() -> None:
    volume = read_volume([("scan.nii.gz", nifti(np.zeros((32, 32, 4), np.uint8)))])
    assert volume.dicom_sources is None
    with pytest.raises(BrainsegError, match=r"scan: a DICOM SEG needs a DICOM series .* NIfTI"):
        dicom_seg(volume, [np.zeros((32, 32), bool)] * 4)


def test_the_app_offers_a_dicom_seg_for_a_series_only_and_probabilities_always(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[3]
    monkeypatch.delenv("BRAINSEG_DATA", raising=False)
    monkeypatch.chdir(root)
    app = AppTest.from_file(str(root / "streamlit_app.py"), default_timeout=300)
    app.run().switch_page("brainseg/app/pages/volume.py").run()
    files = [(name, data, "application/dicom") for name, data in dicom_files(*SERIES["axial"])]
    app.file_uploader(key="volume_files").set_value(files).run()

    assert not app.exception and not app.error, [*app.exception, *app.error]
    downloads = {d.proto.id.rsplit("-", 1)[-1]: d.proto.label for d in app.get("download_button")}
    assert downloads.get("vol_dicom_seg") == "Predicted mask (DICOM SEG)"
    assert {"vol_mask_nifti", "vol_probability_nifti"} <= set(downloads)
    app.file_uploader(key="volume_files").set_value([("scan.nii.gz", nifti(np.zeros((48, 40, 6), np.uint16)),
                                                      "application/gzip")]).run()
    assert not app.exception and not app.error, [*app.exception, *app.error]
    downloads = {d.proto.id.rsplit("-", 1)[-1] for d in app.get("download_button")}
    assert "vol_probability_nifti" in downloads and "vol_dicom_seg" not in downloads
