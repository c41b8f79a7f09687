"""Images unlike the training data, for fitting the input check (outlier exposure); used by ``calibrate`` only.

Derived from training patients (resliced planes, single non-FLAIR sequences, permuted or inverted channels) and
real medical images that development packages ship (matplotlib, nilearn, dipy, pydicom, pydicom-data,
scikit-image). Nothing is downloaded; ``../shared/foreign`` is a test set and never read here.
"""
from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from brainseg.data.index import SliceRecord, by_patient
from brainseg.io.slices import read_slice
from brainseg.preprocess import MODEL_SIZE, brain_pixels

VIEW, SEQUENCE, ORDER, MODALITY = "other view", "other sequence", "channel order or inversion", "other modality"
FAMILIES = {  # family: the reason the check gives in words
    VIEW: "looks like another view (sagittal or coronal), not an axial slice",
    SEQUENCE: "looks like one MRI sequence other than FLAIR (the models need FLAIR, or all three)",
    ORDER: "channels look swapped or inverted: expected pre-contrast, FLAIR, post-contrast in that order",
    MODALITY: "looks like another modality or body part (CT, radiograph, ultrasound, photograph), not a brain MRI",
}


def to_u8(array: np.ndarray) -> np.ndarray:
    """Any 2D or HxWxC array to ``HxWx3 uint8`` by robust percentiles (0.5-99.5), as a viewer export would."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    low, high = np.percentile(array, [0.5, 99.5])
    scaled = np.clip((array - low) / max(high - low, 1e-6), 0, 1) * 255
    scaled = scaled.astype(np.uint8)
    return np.repeat(scaled[..., None], 3, axis=2) if scaled.ndim == 2 else np.ascontiguousarray(scaled[..., :3])


def resized(image_u8: np.ndarray) -> np.ndarray:
    """Stretched to 256x256 (bilinear), the size at which most of these images reach the app."""
    return np.asarray(Image.fromarray(image_u8).resize((MODEL_SIZE, MODEL_SIZE), Image.BILINEAR))


def reslices(volume_u8: np.ndarray, count: int = 3) -> Iterator[np.ndarray]:
    """Sagittal and coronal slices (``count`` each, around the middle) of a ``DxHxWx3`` axial volume."""
    depth, height, width = volume_u8.shape[:3]
    for position in np.linspace(0.35, 0.65, count):
        sagittal = volume_u8[::-1, :, int(position * width)]          # D x H x 3, superior slices on top
        coronal = volume_u8[::-1, int(position * height), :]
        yield resized(np.ascontiguousarray(sagittal))
        yield resized(np.ascontiguousarray(coronal))


def derived(records: Sequence[SliceRecord], per_patient: int = 4, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Negatives made from the given (training) patients' slices: reslices, single channels and reordered ones.

    Args:
        records: the patients' slices.
        per_patient: slices drawn per patient (among those with enough brain) to alter.
        seed: seed of the draws.

    Returns:
        ``(family, image)`` pairs, the images ``HxWx3 uint8`` (the reslices at 256x256).
    """
    rng = np.random.default_rng(seed)
    out: list[tuple[str, np.ndarray]] = []
    for rows in by_patient(records).values():
        volume = np.stack([read_slice(r.image_path) for r in rows])
        out += [(VIEW, image) for image in reslices(volume)]
        with_brain = [i for i in range(len(volume)) if brain_pixels(volume[i]).mean() > 0.15]
        for index in rng.choice(with_brain, size=min(per_patient, len(with_brain)), replace=False):
            image = volume[index]
            if not np.array_equal(image[..., 0], image[..., 1]):      # a real pre-contrast, not FLAIR filling in
                out.append((SEQUENCE, np.repeat(image[..., 0:1], 3, axis=2)))
            if not np.array_equal(image[..., 2], image[..., 1]):
                out.append((SEQUENCE, np.repeat(image[..., 2:3], 3, axis=2)))
            order = [(0, 2, 1), (1, 0, 2), (2, 1, 0), (1, 2, 0), (2, 0, 1)][int(rng.integers(5))]
            out.append((ORDER, np.ascontiguousarray(image[..., order])))
            out.append((ORDER, 255 - image))
    return out


def _site_file(package: str, *parts: str) -> Path | None:
    """A file inside an installed package, found without importing it (dipy's import takes seconds); None when
    the package or the file is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*parts)
    return path if path.exists() else None


def _dicom_pixels(path: Path) -> np.ndarray:
    """The pixels of a DICOM file; of a multi-frame one, its middle frame."""
    import pydicom
    pixels = pydicom.dcmread(path).pixel_array
    return pixels if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 3) else pixels[len(pixels) // 2]


def _mni_slices() -> list[tuple[str, np.ndarray]]:
    path = _site_file("nilearn", "datasets", "data", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    if path is None:
        return []
    import nibabel
    volume = np.asarray(nibabel.as_closest_canonical(nibabel.load(path)).dataobj, dtype=np.float32)  # x, y, z
    out = []
    for position in np.linspace(0.3, 0.7, 5):
        out.append((VIEW, np.rot90(volume[int(position * volume.shape[0])])))          # sagittal
        out.append((VIEW, np.rot90(volume[:, int(position * volume.shape[1])])))       # coronal
        out.append((SEQUENCE, np.rot90(volume[:, :, int(position * volume.shape[2])])))  # axial T1, one sequence
    return out


def _dipy_slices() -> list[tuple[str, str, np.ndarray]]:
    """dipy's coronal T1 slice and the axial slices of its diffusion b0 volume (T2-weighted: one sequence)."""
    out = []
    coronal = _site_file("dipy", "data", "files", "t1_coronal_slice.npy")
    if coronal is not None:
        out.append((VIEW, "dipy t1_coronal_slice.npy (coronal T1)", np.load(coronal)))
    b0 = _site_file("dipy", "data", "files", "S0_10slices.nii.gz")
    if b0 is not None:
        import nibabel
        volume = np.asarray(nibabel.as_closest_canonical(nibabel.load(b0)).dataobj, dtype=np.float32)[..., 0]
        out += [(SEQUENCE, "dipy S0_10slices.nii.gz (axial diffusion b0)", np.rot90(volume[:, :, z]))
                for z in range(2, volume.shape[2] - 2)]
    return out


def packaged() -> list[tuple[str, str, np.ndarray]]:
    """``(family, source, image)`` for the medical images installed packages ship; missing packages are skipped."""
    sources: list[tuple[str, str, Callable[[], np.ndarray]]] = []
    sample = _site_file("matplotlib", "mpl-data", "sample_data", "s1045.ima.gz")
    if sample is not None:
        sources.append((VIEW, "matplotlib s1045.ima.gz (sagittal head MRI)", lambda: np.frombuffer(
            gzip.decompress(sample.read_bytes()), "<u2").reshape(256, 256)))
    for name, family in (("CT_small.dcm", MODALITY), ("MR_small.dcm", SEQUENCE)):
        path = _site_file("pydicom", "data", "test_files", name)
        if path is not None:
            sources.append((family, f"pydicom {name}", lambda path=path: _dicom_pixels(path)))
    for name, family in (("RG1_UNCI.dcm", MODALITY), ("693_UNCI.dcm", MODALITY), ("MR2_UNCI.dcm", MODALITY),
                         ("US1_UNCI.dcm", MODALITY), ("RG3_UNCI.dcm", MODALITY),
                         ("MR-SIEMENS-DICOM-WithOverlays.dcm", MODALITY), ("color3d_jpeg_baseline.dcm", MODALITY)):
        path = _site_file("pydicom_data", "data_store", "data", name) or _site_file("data_store", "data", name)
        if path is not None:
            sources.append((family, f"pydicom-data {name}", lambda path=path: _dicom_pixels(path)))
    try:
        from skimage import data
        # colour photographs too (the wheel ships them): an upload of a colour picture is not a grey one
        for name in ("retina", "shepp_logan_phantom", "immunohistochemistry", "camera", "moon", "astronaut",
                     "chelsea", "coffee", "rocket", "hubble_deep_field"):
            sources.append((MODALITY, f"scikit-image {name}", getattr(data, name)))
    except ImportError:
        pass
    out = []
    for family, source, load in sources:
        try:
            out.append((family, source, to_u8(load())))
        except (OSError, ValueError, RuntimeError, AttributeError):
            continue   # a package whose file cannot be decoded here is one negative fewer, not a failure
    out += [(family, "nilearn MNI152 T1 template", to_u8(image)) for family, image in _mni_slices()]
    out += [(family, source, to_u8(image)) for family, source, image in _dipy_slices()]
    return out


def augmented(image_u8: np.ndarray, copies: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The image and ``copies - 1`` variants (flips, crops, gamma), all at 256x256: few real negatives go further.

    Args:
        image_u8: ``HxWx3 uint8`` image.
        copies: how many images in all, the original included.
        rng: the random source of the crops, flips and gammas.

    Returns:
        ``copies`` images, ``256x256x3 uint8``.
    """
    out = [resized(image_u8)]
    height, width = image_u8.shape[:2]
    for _ in range(copies - 1):
        top, left = int(rng.uniform(0, 0.15) * height), int(rng.uniform(0, 0.15) * width)
        crop = image_u8[top:height - int(rng.uniform(0, 0.15) * height), left:width - int(rng.uniform(0, 0.15) * width)]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        gamma = rng.uniform(0.7, 1.4)
        out.append(resized(np.ascontiguousarray((255 * (crop / 255.0) ** gamma).astype(np.uint8))))
    return out


def negatives(train: Sequence[SliceRecord], seed: int = 0, copies: int = 8) -> list[tuple[str, str, np.ndarray]]:
    """Every negative: those derived from the training slices and the packaged images' variants.

    Args:
        train: the slices negatives are derived from (training patients).
        seed: seed of the derivation and the variants.
        copies: images made of each packaged image, the original included (:func:`augmented`).

    Returns:
        ``(family, source, 256x256x3 uint8)`` triples; ``source`` is "derived" or the package file.
    """
    rng = np.random.default_rng(seed)
    out = [(family, "derived", image) for family, image in derived(train, seed=seed)]
    for family, source, image in packaged():
        out += [(family, source, variant) for variant in augmented(image, copies, rng)]
    return out
