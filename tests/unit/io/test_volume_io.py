"""Whole scans in, masks out: a real Kaggle patient (bundled in ``samples/``) as NIfTI, DICOM series, multi-page TIFF
and zip must give the gallery's pixels, masks and predictions; bad volumes are refused with a message."""
from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from benchmarks import appserver
from brainseg.config import pipeline_settings
from brainseg.data.index import index_patient
from brainseg.errors import BrainsegError
from brainseg.evaluation.encodings import mr_header
from brainseg.inference.predictor import Predictor
from brainseg.io import intensity, volumes
from brainseg.io.slices import read_mask, read_slice
from brainseg.paths import SAMPLES_DIR, WEIGHTS_DIR

PATIENT = "TCGA_HT_7686_19950629"        # the smallest bundled patient (20 slices), with tumour
GALLERY_PAGE, VOLUME_PAGE = "brainseg/app/pages/gallery.py", "brainseg/app/pages/volume.py"
AFFINE = np.array([[-0.94, 0, 0, 100.0], [0, -0.94, 0, 120.0], [0, 0, 3.3, -40.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def patient() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The gallery's slices and masks of the patient, read as the gallery reads them."""
    records = index_patient(SAMPLES_DIR / PATIENT)
    images = [read_slice(r.image_path) for r in records]
    return images, [read_mask(r.mask_path, shape=i.shape[:2]) for r, i in zip(records, images)]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(WEIGHTS_DIR)


def nifti_bytes(stored: np.ndarray, affine: np.ndarray = AFFINE, compress: bool = True) -> bytes:
    raw = nib.Nifti1Image(stored, affine).to_bytes()
    return gzip.compress(raw) if compress else raw


def as_nifti(images: list[np.ndarray]) -> bytes:
    """The slices stored as x (column, towards L), y (row, towards P), z (slice), channel: an LPS NIfTI."""
    return nifti_bytes(np.stack(images).transpose(2, 1, 0, 3))


def dicom_slice(pixels: np.ndarray, position: float, number: int, series: str, study: str,
                description: str = "FLAIR", with_pixels: bool = True) -> bytes:
    """One axial MR slice (RGB or grayscale) as DICOM bytes, written by pydicom."""
    ds = mr_header(study, series, number)
    ds.SeriesNumber, ds.SeriesDescription, ds.PatientID = 3, description, PATIENT
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-120.0, -110.0, position]
    ds.PixelSpacing, ds.SliceThickness = [0.94, 0.94], 3.3
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8 if pixels.dtype == np.uint8 else 16
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    if with_pixels:
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def as_dicom(images: list[np.ndarray], description: str = "FLAIR") -> list[tuple[str, bytes]]:
    """A DICOM series, files shuffled (the reader sorts them by position along the slice normal)."""
    series, study = generate_uid(), generate_uid()
    files = [(f"IM{n:04d}.dcm", dicom_slice(image, 3.3 * n, n + 1, series, study, description))
             for n, image in enumerate(images)]
    return files[1::2] + files[::2]


def as_tiff(images: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    pages = [Image.fromarray(i) for i in images]
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_adobe_deflate")
    return buffer.getvalue()


def zipped(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()


def kaggle_zip() -> bytes:
    folder = SAMPLES_DIR / PATIENT
    return zipped([(f"{PATIENT}/{p.name}", p.read_bytes()) for p in sorted(folder.iterdir())])


def round_trip(volume: volumes.Volume, masks: list[np.ndarray]) -> nib.Nifti1Image:
    image = nib.Nifti1Image.from_bytes(gzip.decompress(volumes.mask_nifti(masks, volume.geometry)))
    assert image.get_data_dtype() == np.uint8 and image.shape == volume.geometry.shape
    assert np.allclose(image.affine, volume.geometry.affine)
    assert set(np.unique(np.asarray(image.dataobj))) <= {0, 1}
    return image


# ---- the four formats round-trip a real patient ------------------------------------------------------

@pytest.mark.parametrize("kind", ["nifti", "dicom", "tiff", "kaggle zip", "dicom zip"])
def test_each_format_gives_the_gallery_pixels_predictions_and_a_mask_nifti_back(kind: str, patient, predictor) -> None:
    images, truths = patient
    files = {"nifti": lambda: [("patient.nii.gz", as_nifti(images))],
             "dicom": lambda: as_dicom(images),
             "tiff": lambda: [("patient.tif", as_tiff(images))],
             "kaggle zip": lambda: [(f"{PATIENT}.zip", kaggle_zip())],
             "dicom zip": lambda: [("series.zip", zipped(as_dicom(images)))]}[kind]()
    mask = [("mask.nii.gz", as_nifti([np.repeat(t[..., None].astype(np.uint8), 3, 2) for t in truths]))] \
        if kind == "nifti" else ()

    volume = volumes.read_volume(files, mask)

    assert len(volume.images_u8) == len(images)
    assert all(np.array_equal(a, b) for a, b in zip(volume.images_u8, images)), "pixels differ from the gallery's"
    assert volume.channels == volumes.CHANNELS
    if kind in ("nifti", "kaggle zip"):
        assert all(np.array_equal(a, b) for a, b in zip(volume.truths, truths))
    settings = pipeline_settings()
    args = settings["seg_threshold"], settings["gate"], int(settings["min_area"])
    gallery_masks = [p.mask(*args) for p in predictor.predict_many(images)]
    masks = [p.mask(*args) for p in predictor.predict_many(volume.images_u8)]
    assert all(np.array_equal(a, b) for a, b in zip(masks, gallery_masks))
    assert sum(m.sum() for m in masks) > 0
    written = round_trip(volume, masks)
    back = volumes.read_volume([("mask.nii.gz", gzip.compress(written.to_bytes()))])
    assert all(np.array_equal(b[..., 0] > 0, m) for b, m in zip(back.images_u8, masks)) or \
        all(np.array_equal(b[..., 0] == 255, m) for b, m in zip(back.images_u8, masks))


def test_nifti_mask_lands_on_the_input_voxels_and_affine(patient) -> None:
    images, truths = patient
    stored_truth = np.stack(truths).transpose(2, 1, 0).astype(np.uint8)
    volume = volumes.read_volume([("patient.nii.gz", as_nifti(images))])
    written = round_trip(volume, truths)
    assert np.allclose(written.affine, AFFINE)
    assert np.array_equal(np.asarray(written.dataobj), stored_truth)


def test_dicom_mask_nifti_carries_the_series_geometry(patient) -> None:
    images, truths = patient
    volume = volumes.read_volume(as_dicom(images))
    written = round_trip(volume, truths)
    first_voxel_ras = written.affine @ np.array([0, 0, 0, 1.0])
    assert np.allclose(first_voxel_ras[:3], [120.0, 110.0, 0.0])       # LPS (-120, -110, 0) of slice 1
    assert np.allclose(volume.geometry.display_spacing(), (3.3, 0.94, 0.94))
    assert np.array_equal(np.asarray(written.dataobj), np.stack(truths).astype(np.uint8))


# ---- orientation, channels, intensities -------------------------------------------------------------

def test_a_ras_stored_volume_is_reoriented_to_the_same_axial_slices(patient) -> None:
    images, _ = patient
    ras = np.stack(images).transpose(2, 1, 0, 3)[::-1, ::-1]
    volume = volumes.read_volume([("ras.nii", nifti_bytes(ras, np.diag([0.94, 0.94, 3.3, 1]), compress=False))])
    assert volume.geometry.orientation == "RAS"
    assert all(np.array_equal(a, b) for a, b in zip(volume.images_u8, images))


def test_isotropic_sagittal_is_resliced_and_thick_sagittal_refused(patient) -> None:
    images, _ = patient
    flair = np.repeat(np.stack([i[..., 1] for i in images[:16]]), 4, axis=0)   # 64 x 256 x 256
    sagittal = np.ascontiguousarray(flair.transpose(0, 2, 1))   # axis 0 along x: a sagittal stack
    iso = volumes.read_volume([("sag.nii.gz", nifti_bytes(sagittal, np.diag([1.0, 1.0, 1.0, 1])))])
    assert len(iso.images_u8) == 256 and iso.images_u8[0].shape == (256, 64, 3)
    with pytest.raises(BrainsegError, match=r"acquired sagittally .*stretched 5\.0:1"):
        volumes.read_volume([("sag.nii.gz", nifti_bytes(sagittal, np.diag([5.0, 1.0, 1.0, 1])))])


def test_int16_volume_is_standardised_and_three_files_mapped_by_name(patient) -> None:
    images, _ = patient
    stored = np.stack(images).transpose(2, 1, 0, 3).astype(np.int16) * 40 - 300
    single = volumes.read_volume([("scan.nii.gz", nifti_bytes(np.ascontiguousarray(stored[..., 1])))])
    assert single.channels == ("FLAIR (copied)",) * 3 and "standardised" in single.notes[0]
    assert single.intensity == intensity.STANDARDISED
    assert all(np.array_equal(s[..., 0], s[..., 2]) for s in single.images_u8)
    parts = {name: nifti_bytes(np.ascontiguousarray(stored[..., c]))
             for name, c in (("sub1_T1c.nii.gz", 2), ("sub1_flair.nii.gz", 1), ("sub1_t1.nii.gz", 0))}
    three = volumes.read_volume(list(parts.items()))
    assert three.channels == ("sub1_t1.nii.gz", "sub1_flair.nii.gz", "sub1_T1c.nii.gz")
    assert np.array_equal(three.images_u8[5][..., 1], single.images_u8[5][..., 1])
    swapped = volumes.read_volume(list(parts.items()), order=("sub1_flair.nii.gz", "sub1_t1.nii.gz",
                                                                "sub1_T1c.nii.gz"))
    # each channel is standardised as the sequence it is said to be: the FLAIR file, taken as pre-contrast, is the
    # same picture on the pre-contrast scale
    moved, flair = swapped.images_u8[5][..., 0].astype(float), single.images_u8[5][..., 1].astype(float)
    assert np.corrcoef(moved.ravel(), flair.ravel())[0, 1] > 0.98
    with pytest.raises(BrainsegError, match="cannot tell the three sequences apart"):
        volumes.channel_rule(["a.nii", "b.nii", "c.nii"])


# ---- bad volumes ----------------------------------------------------------------------------------

def test_truncated_and_corrupt_nifti_are_refused(patient) -> None:
    data = as_nifti(patient[0])
    with pytest.raises(BrainsegError, match="truncated"):
        volumes.read_volume([("cut.nii.gz", data[:len(data) // 2])])
    corrupt = data[:200] + bytes(200) + data[400:]
    with pytest.raises(BrainsegError, match="corrupt|truncated"):
        volumes.read_volume([("bad.nii.gz", corrupt)])


def test_a_header_claiming_a_huge_volume_is_refused_before_allocating() -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 4096))
    header.set_data_dtype(np.int16)
    data = gzip.compress(header.binaryblock + b"\x00" * 4 + b"\x00" * 1000)
    with pytest.raises(BrainsegError, match=r"at most 67,108,864 voxels"):
        volumes.read_volume([("huge.nii.gz", data)])


def test_4d_nifti_with_no_channel_rule_is_refused() -> None:
    with pytest.raises(BrainsegError, match="4D volume of 5 volumes"):
        volumes.read_volume([("bold.nii.gz", nifti_bytes(np.zeros((32, 32, 4, 5), np.int16)))])


def test_zip_bomb_and_escaping_entries_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = zipped([("zeros.nii", bytes(3 * 2**20))])
    assert len(bomb) < 20_000
    monkeypatch.setattr(volumes, "MAX_UPLOAD_BYTES", 2**20)
    with pytest.raises(BrainsegError, match="unpacks to 3 MB; expected at most 1 MB"):
        volumes.read_volume([("bomb.zip", bomb)])
    monkeypatch.setattr(volumes, "MAX_ZIP_ENTRIES", 3)
    with pytest.raises(BrainsegError, match="5 files in the zip; expected at most 3"):
        volumes.read_volume([("many.zip", zipped([(f"{n}.dcm", b"x") for n in range(5)]))])
    for entry in ("../../etc/evil.dcm", "/abs/evil.dcm"):
        with pytest.raises(BrainsegError, match="points outside the archive"):
            volumes.read_volume([("evil.zip", zipped([(entry, b"x")]))])


def test_dicom_without_pixels_single_slice_and_mixed_series(patient) -> None:
    images, _ = patient
    series, study = generate_uid(), generate_uid()
    empty = dicom_slice(images[0], 0.0, 1, series, study, with_pixels=False)
    with pytest.raises(BrainsegError, match="without pixel data"):
        volumes.read_volume([("empty.dcm", empty)])
    one = volumes.read_volume([("one.dcm", dicom_slice(images[3], 0.0, 1, series, study))])
    assert len(one.images_u8) == 1 and one.notes == ("a single 2D DICOM: read as one slice",)
    assert np.array_equal(one.images_u8[0], images[3])
    unnamed = as_dicom(images[:3], "T1 axial") + as_dicom(images[:2], "T2 axial")
    with pytest.raises(BrainsegError, match=r"from 2 series .*'T1 axial'.*3 files.*'T2 axial'.*2 files.*\(0 are\)"):
        volumes.read_volume(unnamed)
    with pytest.raises(BrainsegError, match=r"from 2 series .*\(2 are\)"):
        volumes.read_volume(as_dicom(images[:3], "AX FLAIR") + as_dicom(images[:2], "COR FLAIR"))
    t2_flair = volumes.read_volume(as_dicom(images[:3], "AX T2 FLAIR") + as_dicom(images[:2], "AX T1 FLAIR"))
    assert len(t2_flair.images_u8) == 3 and "'AX T2 FLAIR'" in t2_flair.notes[0]


def test_an_exported_study_gives_its_flair_series(patient) -> None:
    """A scanner's or PACS's export: several series and objects without pixels (a DICOMDIR, a report)."""
    images, _ = patient
    flair = [image[..., 1] for image in images]
    t1 = [(f"S1/{name}", data) for name, data in as_dicom([image[..., 0] for image in images[:4]], "t1_se_tra")]
    study = t1 + [(f"S3/{name}", data) for name, data in as_dicom(flair, "AX T2 FLAIR fs")] + [
        ("DICOMDIR", dicom_slice(images[0], 0.0, 1, generate_uid(), generate_uid(), "report", with_pixels=False))]
    volume = volumes.read_volume([("study.zip", zipped(study))])
    assert len(volume.images_u8) == len(images) and volume.channels == ("FLAIR (copied)",) * 3
    assert all(np.array_equal(got[..., 0], want) for got, want in zip(volume.images_u8, flair))
    assert volume.notes[:2] == ("1 DICOM file without pixel data left out (a DICOMDIR, a report)",
                                f"series 3 'AX T2 FLAIR fs' ({volume.dicom_sources[0].SeriesInstanceUID}) taken, the "
                                "one series of 2 named FLAIR")
    assert {d.SeriesDescription for d in volume.dicom_sources} == {"AX T2 FLAIR fs"}


def site_data(package: str, *parts: str) -> Path:
    return Path(__import__(package).__file__).parent.joinpath(*parts)


@pytest.mark.parametrize("folder", [site_data("nibabel", "tests", "data"), site_data("pydicom", "data", "test_files")],
                         ids=["nibabel", "pydicom"])
def test_files_the_packages_ship_are_read_or_refused_with_a_message(folder: Path) -> None:
    outcomes = {"read": 0, "refused": 0}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_size < 20 * 2**20):
        try:
            volume = volumes.read_volume([(path.name, path.read_bytes())])
        except BrainsegError as err:
            assert path.name in str(err) or "upload" in str(err), str(err)
            outcomes["refused"] += 1
            continue
        assert volume.images_u8 and all(i.dtype == np.uint8 and i.shape[2] == 3 for i in volume.images_u8)
        outcomes["read"] += 1
    assert outcomes["read"] >= 3, outcomes


# ---- the app: an uploaded volume goes through the gallery's volume view ----------------------------------

@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch):
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[3]
    monkeypatch.delenv("BRAINSEG_DATA", raising=False)
    monkeypatch.chdir(root)
    return AppTest.from_file(str(root / "streamlit_app.py"), default_timeout=300)


def test_app_steps_an_uploaded_nifti_opens_3d_and_offers_the_mask(app, patient) -> None:
    images, truths = patient
    mask = as_nifti([np.repeat(t[..., None].astype(np.uint8), 3, 2) for t in truths])
    app.run().switch_page(VOLUME_PAGE).run()
    app.file_uploader(key="volume_files").set_value([("scan.nii.gz", as_nifti(images), "application/gzip")])
    app.file_uploader(key="volume_mask_files").set_value([("scan_mask.nii.gz", mask, "application/gzip")]).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    headings = [m.value for m in app.markdown if m.value.startswith("#### Slice ")]
    assert headings == [f"#### Slice {app.session_state.vol_slice} / {len(images)}"]
    assert any("slices like the training data" in c.value or "unlike" in c.value for c in [*app.caption, *app.warning])
    start = app.session_state.vol_slice
    next(b for b in app.button if b.key == "vol_next").click().run()
    assert app.session_state.vol_slice == min(start + 1, len(images))
    app.toggle(key="vol_patient_3d").set_value(True).run()
    assert not app.exception and not app.error
    assert "per-volume Dice" in " ".join(m.value for m in app.markdown)
    assert {"vol_mask_nifti", "vol_csv", "vol_patient_csv", "vol_patient_html"} <= {
        d.proto.id.rsplit("-", 1)[-1] for d in app.get("download_button")}


def test_app_refuses_a_bad_volume_with_a_message_and_keeps_the_gallery(app) -> None:
    app.run().switch_page(VOLUME_PAGE).run()
    app.file_uploader(key="volume_files").set_value([("cut.nii.gz", b"\x1f\x8b" + bytes(100), "application/gzip")])
    app.run()
    assert not app.exception
    assert len(app.error) == 1 and app.error[0].value.startswith("cut.nii.gz:")
    app.switch_page(GALLERY_PAGE).run()
    assert not app.exception and not app.error
    assert len([m for m in app.markdown if m.value.startswith("#### Slice ")]) == 1   # the gallery still shows


@pytest.mark.browser
def test_browser_uploads_a_nifti_steps_it_opens_3d_and_downloads_the_mask(tmp_path: Path, patient) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    images, _ = patient
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(as_nifti(images))
    with appserver.serve(tmp_path / "server.log") as server, sync_api.sync_playwright() as driver:
        browser = appserver.launch_chromium(driver)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True).new_page()
        page.set_default_timeout(appserver.STEP_MS)
        page.goto(server.url)
        appserver.shown_slice(page)
        appserver.wait_until_idle(page)
        appserver.open_page(page, "Upload a volume")
        panel = page.get_by_test_id("stMain")
        panel.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(str(scan))
        heading = panel.get_by_role("heading", name=appserver.SLICE_HEADING)
        heading.wait_for(timeout=appserver.FIRST_VIEW_MS)
        number, count = map(int, appserver.SLICE_HEADING.search(heading.inner_text()).groups())
        assert count == len(images)
        appserver.wait_until_idle(page)
        step = 1 if number < count else -1
        panel.get_by_role("button", name="Next ▶" if step == 1 else "◀ Previous").click()
        panel.get_by_role("heading", name=f"Slice {number + step} / {count}").wait_for()
        appserver.wait_until_idle(page)
        panel.get_by_text("Patient in 3D").click()
        panel.get_by_role("button", name="Patient report (HTML)").wait_for()
        panel.locator(".js-plotly-plot .gl-container, .js-plotly-plot canvas").first.wait_for(state="attached")  # 3D
        appserver.wait_until_idle(page)
        with page.expect_download() as download:
            panel.get_by_role("button", name="Predicted mask (NIfTI)").click()
        assert download.value.suggested_filename == "scan_mask.nii.gz"
        mask = nib.Nifti1Image.from_bytes(gzip.decompress(Path(download.value.path()).read_bytes()))
        browser.close()
    assert mask.shape == (256, 256, len(images)) and np.allclose(mask.affine, AFFINE)
    assert mask.get_data_dtype() == np.uint8 and np.asarray(mask.dataobj).sum() > 0
