"""Read whole scans from uploaded bytes into one :class:`Volume` record, and write a mask volume back as NIfTI.

Formats are told apart by content: NIfTI-1/2, a DICOM series (files or a zip), a multi-page TIFF, a zip of a Kaggle
patient folder; all in memory, nothing extracted to disk. Slices come out axial in the Kaggle display orientation,
``HxWx3 uint8`` in the models' channel order; the inverse permutation writes the mask in the input's own grid.
"""
from __future__ import annotations

import gzip
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

import nibabel as nib
import numpy as np
import pydicom
from nibabel.orientations import aff2axcodes, apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError

from brainseg.errors import BrainsegError
from brainseg.io import intensity
from brainseg.io.slices import MAX_ASPECT_RATIO, MIN_SIDE, read_mask, read_slice
from brainseg.preprocess import CHANNELS

DISPLAY_CODES = ("S", "P", "L")                         # axes of the slices: slice, row, column
MAX_VOXELS = 512 * 512 * 256                            # per channel volume, checked from the header
MAX_UPLOAD_BYTES = 1024 * 2**20                          # uncompressed bytes of one upload (all files, all entries)
MAX_ZIP_ENTRIES = 2000
MAX_PIXEL_RATIO = 2.0                                   # axial pixel sides after reslicing, longer / shorter
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")   # where a DICOM object holds an image

# Exceptions the DICOM and NIfTI libraries raise on malformed files (they have no common base class).
_READ_ERRORS = (InvalidDicomError, AttributeError, KeyError, IndexError, TypeError, ValueError, NotImplementedError,
                RuntimeError, OSError, EOFError, struct.error, zlib.error, nib.filebasedimages.ImageFileError,
                nib.spatialimages.HeaderDataError)


@dataclass(frozen=True)
class Geometry:
    """How the slices sit in the input's own grid, to write results back there."""

    affine: np.ndarray               # 4x4: index of the stored array -> RAS+ millimetres
    shape: tuple[int, int, int]      # spatial shape of the stored array
    dtype: str                       # stored voxel type, e.g. "int16"
    orientation: str                 # axis codes of the stored array, e.g. "RAS" ("LPS" is DICOM's row/col/slice)
    spacing: tuple[float, float, float]   # mm along the stored axes
    to_display: np.ndarray           # nibabel orientation transform: stored axes -> (slice, row, column)
    spacing_known: bool = True       # False for files without a world frame (Kaggle TIFFs): 1 mm a voxel assumed

    def display_spacing(self) -> tuple[float, float, float]:
        """mm between slices, between rows and between columns of the slices."""
        order = np.argsort(self.to_display[:, 0])
        return tuple(float(self.spacing[int(axis)]) for axis in order)

    def to_stored(self, display: np.ndarray) -> np.ndarray:
        """A ``DxHxW`` array in slice order, put back in the stored grid (the inverse permutation and flips)."""
        source = np.argsort(self.to_display[:, 0])           # the stored axis behind each display axis
        stored = apply_orientation(display, np.column_stack([source, self.to_display[source, 1]]))
        if stored.shape != self.shape:
            raise ValueError(f"{display.shape} in display order maps to {stored.shape}; expected {self.shape}")
        return stored


@dataclass(frozen=True)
class Volume:
    """One uploaded scan: axial slices in order, an optional mask volume, and the geometry to write back."""

    name: str
    format: str                       # "NIfTI", "DICOM series", "multi-page TIFF", "Kaggle patient zip"
    images_u8: list[np.ndarray]       # D slices, HxWx3 uint8, (pre-contrast, FLAIR, post-contrast); read-only
    truths: list[np.ndarray] | None   # D masks, HxW bool, when a mask came with the scan
    geometry: Geometry
    channels: tuple[str, str, str]    # where each model channel came from
    notes: tuple[str, ...] = field(default=())   # what the reader decided (reslicing, intensity mapping)
    intensity: str = intensity.AS_STORED         # how the stored values became 8-bit (io.intensity)
    # A DICOM series: each file's header (no pixel data), in the stored grid's slice order, so that
    # ``geometry.to_stored(masks)[k]`` is on the pixel grid of ``dicom_sources[k]``; None for other formats.
    dicom_sources: tuple[pydicom.Dataset, ...] | None = None

    @property
    def numbers(self) -> list[int]:
        return list(range(1, len(self.images_u8) + 1))

    @property
    def batch_size(self) -> int:
        """Slices per prediction batch: 16 of 256x256 or fewer larger ones (4 of 512x512), which bounds the
        slices' probabilities held at once (measured: 512x512x200 peaks at +438 MB instead of +546 MB); a power
        of two, one of the batch shapes the engines are warmed up on."""
        height, width = self.images_u8[0].shape[:2]
        return 1 << (max(1, min(16, 16 * 256 * 256 // (height * width))).bit_length() - 1)


@dataclass(frozen=True)
class _Raw:
    """A decoded volume before intensity mapping: ``DxHxWxC`` in display order, C = 1 or 3."""

    data: np.ndarray
    geometry: Geometry
    notes: tuple[str, ...] = ()
    dicom_sources: tuple[pydicom.Dataset, ...] | None = None   # headers in stored slice order (DICOM only)


# ---- content sniffing ------------------------------------------------------------------------------

def sniff(data: bytes) -> str:
    """``"zip"``, ``"gzip"``, ``"nifti"``, ``"dicom"``, ``"tiff"`` or ``""`` from the first bytes."""
    head = data[:348]
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(data) >= 348 and (head[344:348] in (b"n+1\x00", b"ni1\x00") or data[4:8] == b"n+2\x00"):
        return "nifti"
    if data[128:132] == b"DICM":
        return "dicom"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return ""


def is_volume(data: bytes) -> bool:
    """True for bytes that :func:`read_volume` reads as a scan (not a single 2D slice image)."""
    kind = sniff(data)
    if kind != "tiff":
        return bool(kind)
    try:
        return getattr(Image.open(io.BytesIO(data)), "n_frames", 1) > 1
    except (UnidentifiedImageError, OSError, ValueError):
        return False


# ---- geometry helpers ------------------------------------------------------------------------------

def _geometry(affine: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, name: str,
              single_slice: bool = False) -> Geometry:
    """Geometry of a stored array; refuses a volume whose axial pixels would be far from square.
    ``single_slice``: a ``1xHxW`` image is shown as stored, whatever its plane (there is nothing to reslice)."""
    affine = np.asarray(affine, np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise BrainsegError(f"{name}: the header's voxel-to-world matrix is degenerate; expected a valid affine")
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    to_display = np.array([[0, 1], [1, 1], [2, 1]], float) if single_slice else \
        ornt_transform(io_orientation(affine), axcodes2ornt(DISPLAY_CODES))
    geometry = Geometry(affine, tuple(int(s) for s in shape[:3]), str(np.dtype(dtype)), "".join(aff2axcodes(affine)),
                        spacing, to_display)
    if single_slice:
        return geometry
    _, row_mm, col_mm = geometry.display_spacing()
    if max(row_mm, col_mm) / min(row_mm, col_mm) > MAX_PIXEL_RATIO:
        plane = {"L": "sagittally", "R": "sagittally", "A": "coronally", "P": "coronally"}.get(
            geometry.orientation[int(np.argmax(spacing))], "with anisotropic voxels")
        raise BrainsegError(
            f"{name}: acquired {plane} ({' x '.join(f'{s:.2f}' for s in spacing)} mm voxels, axes "
            f"{geometry.orientation}); resliced to axial its pixels would be {row_mm:.2f} x {col_mm:.2f} mm, "
            f"stretched {max(row_mm, col_mm) / min(row_mm, col_mm):.1f}:1 (at most {MAX_PIXEL_RATIO:g}:1), unlike the "
            "axial training slices; expected an axial scan or a near-isotropic 3D one")
    return geometry


def _display(stored: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Stored ``XxYxZ[xC]`` array -> ``DxHxW[xC]`` slices (a view: permutation and flips only)."""
    return apply_orientation(stored, geometry.to_display)


def _check_slices(shape: tuple[int, ...], name: str) -> None:
    depth, height, width = shape[:3]
    voxels = depth * height * width
    if voxels > MAX_VOXELS:
        raise BrainsegError(f"{name}: {'x'.join(map(str, shape[:3]))} = {voxels:,} voxels is too large; expected at "
                            f"most {MAX_VOXELS:,} voxels (e.g. 512x512x256)")
    if min(height, width) < MIN_SIDE or depth < 1:
        raise BrainsegError(f"{name}: axial slices of {width}x{height} are too small; expected at least {MIN_SIDE} "
                            "pixels a side")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise BrainsegError(f"{name}: axial slices of {width}x{height}; expected roughly square slices (at most "
                            f"{MAX_ASPECT_RATIO:g}:1)")


# ---- intensities and channels ----------------------------------------------------------------------

def channel_rule(names: Sequence[str]) -> tuple[str, str, str]:
    """Three file names in model order (pre-contrast, FLAIR, post-contrast), by what the names contain:
    ``flair`` is FLAIR; ``post``, ``t1c``, ``t1ce``, ``gd``, ``contrast`` or ``ce`` is post-contrast; ``pre`` or
    ``t1`` (not those) is pre-contrast. Raises when the names do not give one of each."""
    def role(name: str) -> str | None:
        low = re.sub(r"\.(nii(\.gz)?|gz|tiff?|dcm|zip)$", "", name.lower())
        if "flair" in low:
            return "FLAIR"
        if re.search(r"post|t1c|t1ce|t1gd|gd|contrast|(^|[^a-z])ce([^a-z]|$)", low):
            return "post-contrast"
        if re.search(r"pre|t1", low):
            return "pre-contrast"
        return None
    if len(names) != 3:
        raise BrainsegError(f"{len(names)} volumes; expected 1 (taken as FLAIR) or 3 (pre-contrast, FLAIR, "
                            "post-contrast)")
    roles = {name: role(name) for name in names}
    ordered = [next((n for n in names if roles[n] == channel), None) for channel in CHANNELS]
    if None in ordered or len(set(ordered)) != 3:
        found = ", ".join(f"{n}: {r or 'no match'}" for n, r in roles.items())
        raise BrainsegError(f"cannot tell the three sequences apart by name ({found}); expected names containing "
                            "'pre'/'t1', 'flair' and 'post'/'t1c'/'gd', or choose the order yourself")
    return tuple(ordered)  # type: ignore[return-value]


def _slices_u8(raw: _Raw, roles: Sequence[int]) -> list[np.ndarray]:
    """``HxWx3 uint8`` slices of a raw volume: 8-bit data as stored, any other dtype standardised per channel volume
    (``roles``: the model channel each raw channel is, e.g. FLAIR for a single volume) by :mod:`brainseg.io.intensity`.
    One channel is repeated to three as a read-only view (a third of the memory)."""
    if raw.data.dtype == np.uint8:
        mapped = [raw.data[..., c] for c in range(raw.data.shape[3])]
    else:
        landmarks = intensity.load()
        points = [intensity.landmarks_of(raw.data[..., c], landmarks.head_percentiles)
                  for c in range(raw.data.shape[3])]
        mapped = [np.stack([intensity.standardise(plane, landmarks.volume[role], points[c])
                            for plane in raw.data[..., c]]) for c, role in enumerate(roles)]
    slices = []
    for index in range(raw.data.shape[0]):
        channels = [np.ascontiguousarray(channel[index]) for channel in mapped]
        slices.append(np.broadcast_to(channels[0][..., None], channels[0].shape + (3,)) if len(channels) == 1
                      else np.stack(channels, axis=2))
    return slices


def _intensity(raw: _Raw) -> tuple[str, tuple[str, ...]]:
    """How a raw volume's values become 8-bit, and the note the reader adds about it."""
    if raw.data.dtype == np.uint8:
        return intensity.AS_STORED, ()
    return intensity.STANDARDISED, (f"{raw.geometry.dtype} intensities {intensity.STANDARDISED}, per sequence",)


# ---- NIfTI ---------------------------------------------------------------------------------------

def _gunzip(data: bytes, name: str, limit: int, head: bool = False) -> bytes:
    """Decompress at most ``limit`` bytes (a gzip bomb stops there; ``head``: just the first ``limit`` bytes);
    corrupt data raises BrainsegError."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit if head else limit + 1)
    except zlib.error as err:
        raise BrainsegError(f"{name}: the gzip data is corrupt ({err}); expected a .nii.gz file") from None
    if len(out) > limit and not head:
        raise BrainsegError(f"{name}: decompresses to more than {limit / 2**20:,.0f} MB; expected at most "
                            f"{MAX_VOXELS:,} voxels a volume")
    return out


def _nifti_header(head: bytes, name: str) -> nib.Nifti1Header:
    """The NIfTI-1 or -2 header of the first bytes; refuses a size over the voxel limit before any allocation."""
    header_class = nib.Nifti2Header if len(head) >= 540 and head[4:8] == b"n+2\x00" else nib.Nifti1Header
    try:
        header = header_class.from_fileobj(io.BytesIO(head[:header_class.template_dtype.itemsize]))
        shape = header.get_data_shape()
        dtype = header.get_data_dtype()
    except _READ_ERRORS as err:
        raise BrainsegError(f"{name}: not a readable NIfTI header ({err})") from None
    spatial = int(np.prod(shape[:3], dtype=np.float64)) if len(shape) >= 3 else 0
    if len(shape) < 3 or spatial > MAX_VOXELS or any(s <= 0 for s in shape):
        raise BrainsegError(f"{name}: the header claims a {'x'.join(map(str, shape))} volume; expected a 3D or 4D "
                            f"volume of at most {MAX_VOXELS:,} voxels (e.g. 512x512x256)")
    volumes = int(np.prod(shape[3:], dtype=np.float64))
    if volumes not in (1, 3):
        raise BrainsegError(f"{name}: a 4D volume of {volumes} volumes; expected 1 (taken as FLAIR) or 3 "
                            "(pre-contrast, FLAIR, post-contrast, in that order)")
    if dtype.fields is not None or dtype.kind == "c":
        raise BrainsegError(f"{name}: voxel type {dtype} is not supported; expected integer or float voxels")
    return header


def read_nifti(data: bytes, name: str) -> _Raw:
    """A NIfTI-1/2 file (``.nii`` or ``.nii.gz`` bytes) as a raw volume in display order."""
    head = _gunzip(data[:65536], name, 540, head=True) if sniff(data) == "gzip" else data[:540]
    if len(head) < 348:
        raise BrainsegError(f"{name}: {len(head)} bytes is too short for a NIfTI header (348 bytes)")
    header = _nifti_header(head, name)
    needed = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    raw_bytes = _gunzip(data, name, needed) if sniff(data) == "gzip" else data
    if len(raw_bytes) < needed:
        raise BrainsegError(f"{name}: the file is truncated: {len(raw_bytes):,} of the {needed:,} bytes its header "
                            "announces")
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    try:
        image = image_class.from_bytes(raw_bytes)
        proxy, affine = image.dataobj, image.affine
        if (proxy.slope, proxy.inter) == (1.0, 0.0):   # unscaled: a view of the bytes, no copy of the voxels
            stored = np.ndarray(proxy.shape, proxy.dtype, raw_bytes, int(proxy.offset), order=proxy.order)
        else:
            stored = np.asanyarray(proxy)
    except _READ_ERRORS as err:
        raise BrainsegError(f"{name}: cannot be read as NIfTI ({err})") from None
    stored = stored.reshape(stored.shape[:3] + (-1,))
    geometry = _geometry(affine, stored.shape, header.get_data_dtype(), name)
    display = _display(stored, geometry)
    _check_slices(display.shape, name)
    return _Raw(display, geometry)


# ---- DICOM ---------------------------------------------------------------------------------------

def _dicom_dataset(data: bytes, name: str) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), force=False)
    except _READ_ERRORS as err:
        raise BrainsegError(f"{name}: not a readable DICOM file ({err})") from None


def _has_pixels(dataset: pydicom.Dataset) -> bool:
    return any(keyword in dataset for keyword in PIXEL_KEYWORDS)


def _named_flair(dataset: pydicom.Dataset) -> bool:
    """Whether a series' description names a (T2) FLAIR; a "T1 FLAIR" is T1-weighted."""
    description = str(dataset.get("SeriesDescription", "")).lower()
    return "flair" in description and not re.search(r"t1(?![0-9])", description)


def _image_series(datasets: Sequence[tuple[str, pydicom.Dataset]]) -> tuple[list[tuple[str, pydicom.Dataset]],
                                                                             tuple[str, ...]]:
    """The files of the one image series an upload holds, and notes on what was left out.

    A study exported from a scanner or PACS holds several series and objects without pixels (a DICOMDIR, reports):
    those objects are left out, and of several series the one whose description names a T2 FLAIR is taken, the
    only sequence the models read alone. Refused: no image at all, or several series and not exactly one FLAIR."""
    images = [(name, d) for name, d in datasets if _has_pixels(d)]
    if not images:
        name, dataset = datasets[0]
        raise BrainsegError(f"{name}: a DICOM file without pixel data (modality {dataset.get('Modality', '?')}, "
                            f"{dataset.get('SOPClassUID', 'unknown class')}); expected an MR image slice")
    left_out = len(datasets) - len(images)
    notes = (f"{left_out} DICOM file{'s' * (left_out > 1)} without pixel data left out (a DICOMDIR, a report)",) \
        if left_out else ()
    series: dict[str, list[tuple[str, pydicom.Dataset]]] = {}
    for name, dataset in images:
        series.setdefault(_series_label(dataset), []).append((name, dataset))
    if len(series) == 1:
        return images, notes
    flair = [label for label, files in series.items() if _named_flair(files[0][1])]
    if len(flair) == 1:
        return series[flair[0]], notes + (f"{flair[0]} taken, the one series of {len(series)} named FLAIR",)
    found = "; ".join(f"{label}: {len(files)} files" for label, files in series.items())
    raise BrainsegError(f"{len(images)} DICOM images from {len(series)} series ({found}); expected one series per "
                        f"upload, or one series named FLAIR among them ({len(flair)} are)")


def _series_label(dataset: pydicom.Dataset) -> str:
    description = dataset.get("SeriesDescription", "") or "no description"
    return f"series {dataset.get('SeriesNumber', '?')} '{description}' ({dataset.get('SeriesInstanceUID', 'no UID')})"


def _slice_normal(dataset: pydicom.Dataset) -> np.ndarray | None:
    orientation = dataset.get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6 or dataset.get("ImagePositionPatient") is None:
        return None
    return np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))


def _dicom_pixels(dataset: pydicom.Dataset, name: str) -> np.ndarray:
    """``HxWxC`` pixels of one slice, rescaled (slope/intercept) and MONOCHROME1 inverted."""
    try:
        pixels = dataset.pixel_array
    except _READ_ERRORS as err:
        raise BrainsegError(f"{name}: the DICOM pixel data cannot be decoded ({err})") from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3 and pixels.shape[-1] != 3 or pixels.ndim > 3:
        raise BrainsegError(f"{name}: a multi-frame DICOM ({pixels.shape[0]} frames); expected one file per slice")
    if pixels.ndim == 3 and photometric not in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        raise BrainsegError(f"{name}: photometric interpretation {photometric} is not supported")
    slope, intercept = float(dataset.get("RescaleSlope", 1) or 1), float(dataset.get("RescaleIntercept", 0) or 0)
    if (slope, intercept) != (1.0, 0.0):
        pixels = pixels.astype(np.float32) * slope + intercept
    if photometric == "MONOCHROME1":
        pixels = float(2 ** int(dataset.get("BitsStored", 16)) - 1) - pixels.astype(np.float32)
    return pixels if pixels.ndim == 3 else pixels[..., None]


def read_dicom_series(files: Sequence[tuple[str, bytes]]) -> _Raw:
    """One DICOM series (one file a slice) as a raw volume: sorted along the slice normal by
    ImagePositionPatient, by InstanceNumber when positions are missing; of an exported study, its FLAIR series
    (:func:`_image_series`)."""
    datasets, series_notes = _image_series([(name, _dicom_dataset(data, name)) for name, data in files])
    first_name, first = datasets[0]
    rows, columns = int(first.get("Rows", 0)), int(first.get("Columns", 0))
    _check_slices((len(datasets), rows, columns), first_name)
    frames = [int(d.get("NumberOfFrames", 1) or 1) for _, d in datasets]
    if max(frames) > 1:
        raise BrainsegError(f"{first_name}: a multi-frame DICOM ({max(frames)} frames); expected one file per slice")
    for name, dataset in datasets:
        if (int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))) != (rows, columns):
            raise BrainsegError(f"{name}: {dataset.get('Columns')}x{dataset.get('Rows')} pixels; expected "
                                f"{columns}x{rows} like {first_name}")
    normal = _slice_normal(first)
    if normal is not None and all(_slice_normal(d) is not None for _, d in datasets):
        positions = [float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))) for _, d in datasets]
        order = sorted(range(len(datasets)), key=lambda i: positions[i])
    else:
        positions = []
        order = sorted(range(len(datasets)), key=lambda i: int(datasets[i][1].get("InstanceNumber", i) or i))
    stored = np.stack([_dicom_pixels(datasets[i][1], datasets[i][0]) for i in order])   # slice, row, column, C
    affine = _dicom_affine([datasets[i][1] for i in order], bool(positions))
    geometry = _geometry(affine, stored.shape, stored.dtype, first_name, single_slice=len(datasets) == 1)
    display = _display(stored, geometry)
    notes = series_notes + (("a single 2D DICOM: read as one slice",) if len(datasets) == 1 else ())
    for _, dataset in datasets:   # keep the headers (for a DICOM SEG), not the pixels
        for keyword in PIXEL_KEYWORDS:
            if keyword in dataset:
                delattr(dataset, keyword)
    return _Raw(display, geometry, notes, tuple(datasets[i][1] for i in order))


def _dicom_affine(ordered: Sequence[pydicom.Dataset], has_positions: bool) -> np.ndarray:
    """4x4 from (slice, row, column) indices to RAS+ mm, from the direction cosines, pixel spacing and the
    positions of the first and last slices (LPS in DICOM, flipped to RAS like NIfTI)."""
    first = ordered[0]
    orientation = first.get("ImageOrientationPatient")
    row_mm, col_mm = (float(v) for v in first.get("PixelSpacing", (1.0, 1.0)))
    along_row = np.asarray(orientation[:3] if orientation else (1, 0, 0), float)     # column index grows this way
    along_col = np.asarray(orientation[3:] if orientation else (0, 1, 0), float)     # row index grows this way
    normal = np.cross(along_row, along_col)
    origin = np.asarray(first.get("ImagePositionPatient", (0, 0, 0)), float)
    if len(ordered) > 1 and has_positions:
        last = np.asarray(ordered[-1].ImagePositionPatient, float)
        step = (last - origin) / (len(ordered) - 1)
        if np.linalg.norm(step) < 1e-6:
            step = normal * float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
    else:
        step = normal * float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = step, along_col * row_mm, along_row * col_mm, origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


# ---- TIFF and zipped Kaggle patients -----------------------------------------------------------------

def read_tiff_pages(data: bytes, name: str) -> _Raw:
    """A multi-page TIFF, one page a slice in page order, without geometry (1 mm a voxel)."""
    try:
        image = Image.open(io.BytesIO(data))
        pages = getattr(image, "n_frames", 1)
        width, height = image.size
        _check_slices((pages, height, width), name)
        planes = []
        for page in range(pages):
            image.seek(page)
            if image.size != (width, height):
                raise BrainsegError(f"{name}: page {page + 1} is {image.size[0]}x{image.size[1]}; expected "
                                    f"{width}x{height} like page 1")
            frame = image.convert("RGB") if image.mode in ("P", "RGBA", "CMYK", "YCbCr", "LA", "1") else image
            planes.append(np.asarray(frame))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as err:
        raise BrainsegError(f"{name}: cannot be read as a multi-page TIFF ({err})") from None
    stored = np.stack([p if p.ndim == 3 else p[..., None] for p in planes])
    return _Raw(stored, _grid_geometry(stored.shape, stored.dtype))


def _grid_geometry(shape: tuple[int, ...], dtype: np.dtype) -> Geometry:
    """Geometry of slices stored already in display order, 1 mm a voxel (files without a world frame)."""
    affine = np.eye(4)
    affine[:3, :3] = [[0, 0, -1], [0, -1, 0], [1, 0, 0]]   # slice -> S, row -> P, column -> L
    return replace(_geometry(affine, shape, dtype, "slices"), spacing_known=False)


def slice_geometry(height: int, width: int) -> Geometry:
    """Geometry of one slice file (a ``1xHxW`` volume in display order, 1 mm a voxel), to write a map of it as NIfTI."""
    return _grid_geometry((1, height, width), np.uint8)


def _zip_entries(data: bytes, name: str) -> list[tuple[str, bytes]]:
    """The files of a zip, read in memory; entry count, declared sizes and paths checked before inflating."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as err:
        raise BrainsegError(f"{name}: not a readable zip file ({err})") from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise BrainsegError(f"{name}: {len(infos):,} files in the zip; expected at most {MAX_ZIP_ENTRIES:,}")
    total = sum(i.file_size for i in infos)
    if total > MAX_UPLOAD_BYTES:
        raise BrainsegError(f"{name}: unpacks to {total / 2**20:,.0f} MB; expected at most "
                            f"{MAX_UPLOAD_BYTES // 2**20:,} MB uncompressed")
    for info in infos:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", info.filename):
            raise BrainsegError(f"{name}: entry {info.filename!r} points outside the archive; expected relative paths "
                                "(nothing is extracted, but such a zip is refused)")
    entries = []
    for info in infos:
        if info.filename.startswith("__MACOSX/") or PurePosixPath(info.filename).name.startswith("."):
            continue
        try:
            with archive.open(info) as handle:
                content = handle.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, ValueError, zlib.error, NotImplementedError, RuntimeError) as err:
            raise BrainsegError(f"{name}: entry {info.filename} cannot be read ({err})") from None
        if len(content) != info.file_size:
            raise BrainsegError(f"{name}: entry {info.filename} holds more or less than its declared size")
        entries.append((info.filename, content))
    return entries


_KAGGLE_NAME = re.compile(r"^(?P<patient>.+)_(?P<number>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)


def read_kaggle_zip(entries: Sequence[tuple[str, bytes]], name: str) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Slices and masks of a zipped Kaggle patient folder, by :func:`read_slice` / :func:`read_mask`, in
    slice-number order; returns images, masks and the patient's name."""
    slices: dict[int, tuple[str, bytes]] = {}
    masks: dict[int, tuple[str, bytes]] = {}
    patients = set()
    for entry, content in entries:
        match = _KAGGLE_NAME.match(PurePosixPath(entry).name)
        if match:
            patients.add(match["patient"])
            (masks if match["mask"] else slices)[int(match["number"])] = (entry, content)
    if len(patients) != 1 or not slices:
        raise BrainsegError(f"{name}: {len(patients)} patients in the zip ({', '.join(sorted(patients)[:3])}); "
                            "expected one Kaggle patient folder of <patient>_<n>.tif slices (and _mask.tif)")
    images = [read_slice(slices[n][1], slices[n][0]) for n in sorted(slices)]
    if any(image.shape != images[0].shape for image in images):
        raise BrainsegError(f"{name}: slices of different sizes; expected one patient's slices")
    every_mask = all(n in masks for n in slices)   # masks are used only when every slice has one
    truths = [read_mask(masks[n][1], masks[n][0], image.shape[:2])
              for n, image in zip(sorted(slices), images)] if every_mask else []
    return images, truths, patients.pop()


# ---- one entry point -------------------------------------------------------------------------------

def _raw_of(files: Sequence[tuple[str, bytes]], name: str) -> tuple[str, _Raw]:
    """Format and raw volume of files holding one scan (one NIfTI or TIFF, or one DICOM series)."""
    kinds = {sniff(data) for _, data in files}
    if kinds == {"dicom"}:
        return "DICOM series", read_dicom_series(files)
    if len(files) == 1 and kinds <= {"nifti", "gzip"}:
        return "NIfTI", read_nifti(files[0][1], files[0][0])
    if len(files) == 1 and kinds == {"tiff"}:
        return "multi-page TIFF", read_tiff_pages(files[0][1], files[0][0])
    raise BrainsegError(f"{name}: not a volume this app reads; expected a NIfTI (.nii, .nii.gz), a DICOM series "
                        "(.dcm files or a .zip of them), a multi-page TIFF or a .zip of a Kaggle patient folder")


def _expand(files: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Files with every zip replaced by its entries; the total uncompressed size is bounded."""
    expanded = []
    for name, data in files:
        if not data:
            raise BrainsegError(f"{name}: the file is empty (0 bytes)")
        expanded.extend(_zip_entries(data, name) if sniff(data) == "zip" else [(name, data)])
    if sum(len(data) for _, data in expanded) > MAX_UPLOAD_BYTES:
        raise BrainsegError(f"the upload holds more than {MAX_UPLOAD_BYTES // 2**20:,} MB; expected one scan")
    return expanded


def read_volume(files: Sequence[tuple[str, bytes]], mask: Sequence[tuple[str, bytes]] = (),
                order: Sequence[str] | None = None) -> Volume:
    """One scan from uploaded files: one NIfTI / multi-page TIFF / zip, a DICOM series, or three single-volume
    files (one per sequence).

    Args:
        files: the scan's uploaded ``(name, bytes)`` files.
        mask: an optional mask scan's ``(name, bytes)`` files, in the same grid (non-zero = tumour).
        order: for three single-volume files, their names as pre-contrast, FLAIR, post-contrast; ``None``:
            mapped by :func:`channel_rule`.

    Returns:
        The scan: its ``HxWx3 uint8`` slices, truths (``None`` without a mask), geometry and channels.
    """
    if not files:
        raise BrainsegError("no files uploaded; expected a NIfTI, a DICOM series, a multi-page TIFF or a zip")
    name = files[0][0] if len(files) == 1 else f"{files[0][0]} and {len(files) - 1} more"
    expanded = _expand(files)
    if len(expanded) > 1 and all(sniff(data) == "tiff" for _, data in expanded):
        images, truths, patient = read_kaggle_zip(expanded, name)
        geometry = _grid_geometry((len(images),) + images[0].shape[:2], np.uint8)
        return Volume(patient, "Kaggle patient zip", images, truths or None, geometry, CHANNELS)
    groups = [expanded] if {sniff(d) for _, d in expanded} == {"dicom"} or len(expanded) == 1 else \
        [[f] for f in expanded]
    if len(groups) not in (1, 3):
        raise BrainsegError(f"{name}: {len(groups)} files; expected one scan, a DICOM series, or three volumes "
                            "(pre-contrast, FLAIR, post-contrast)")
    if len(groups) == 3:
        names = [g[0][0] for g in groups]
        chosen = tuple(order) if order else channel_rule(names)
        if sorted(chosen) != sorted(names):
            raise BrainsegError(f"channel order {', '.join(chosen)}: expected each of {', '.join(names)} once")
        raws = {n: _raw_of(g, n) for n, g in zip(names, groups)}
        parts = [raws[n][1] for n in chosen]
        if any(p.data.shape != parts[0].data.shape or p.data.shape[3] != 1 or
               not np.allclose(p.geometry.affine, parts[0].geometry.affine, atol=1e-3) for p in parts):
            raise BrainsegError(f"{name}: the three volumes differ in grid (shape or affine) or are not single "
                                "volumes; expected three co-registered sequences of one scan")
        slices = [np.ascontiguousarray(np.concatenate(planes, axis=2))
                  for planes in zip(*[_slices_u8(p, (role,)) for role, p in enumerate(parts)])]
        slices = [s[..., ::3] for s in slices]    # each part gives its channel three times
        kind, geometry, sources = raws[chosen[0]][0], parts[0].geometry, None
        mapping, notes = _intensity(parts[0])
        channels: tuple[str, str, str] = tuple(chosen)  # type: ignore[assignment]
    else:
        kind, raw = _raw_of(groups[0], name)
        slices = _slices_u8(raw, (0, 1, 2) if raw.data.shape[3] == 3 else (intensity.FLAIR,))
        geometry, (mapping, notes) = raw.geometry, _intensity(raw)
        notes = raw.notes + notes
        channels = CHANNELS if raw.data.shape[3] == 3 else ("FLAIR (copied)",) * 3
        sources = raw.dicom_sources
    truths = _mask_slices(mask, geometry, name) if mask else None
    return Volume(_stem(files[0][0]), kind, slices, truths, geometry, channels, notes, mapping, dicom_sources=sources)


def _mask_slices(mask: Sequence[tuple[str, bytes]], geometry: Geometry, name: str) -> list[np.ndarray]:
    """An uploaded mask scan as ``HxW bool`` slices (non-zero = tumour), checked against the image's grid."""
    mask_name = mask[0][0]
    _, raw = _raw_of(_expand(mask), mask_name)
    if raw.geometry.shape != geometry.shape or not np.allclose(raw.geometry.affine, geometry.affine, atol=1e-3):
        raise BrainsegError(f"{mask_name}: mask grid {raw.geometry.shape} does not match the scan's "
                            f"{geometry.shape} (shape and affine); expected the mask of {name}")
    return [np.asarray(plane.any(axis=2) if plane.dtype == bool else (plane != 0).any(axis=2)) for plane in raw.data]


def _stem(name: str) -> str:
    base = PurePosixPath(name.replace("\\", "/")).name
    return re.sub(r"(\.nii\.gz|\.nii|\.gz|\.zip|\.tiff?|\.dcm)$", "", base, flags=re.IGNORECASE) or "volume"


# ---- writing results back ------------------------------------------------------------------------

def mask_nifti(masks: Sequence[np.ndarray], geometry: Geometry) -> bytes:
    """``.nii.gz`` bytes of the predicted masks (``HxW bool`` in slice order) in the input's own grid and affine,
    uint8 0/1."""
    return _nifti_gz(np.stack([np.asarray(m, bool) for m in masks]).astype(np.uint8), geometry)


def probability_nifti(probabilities: Sequence[np.ndarray], geometry: Geometry) -> bytes:
    """``.nii.gz`` bytes of the segmenter's per-pixel tumour probabilities (``HxW``, one per slice in slice order,
    :attr:`~brainseg.inference.predictor.Prediction.probability`) in the input's own grid and affine, float32 in
    [0, 1]. The raw segmenter output, before the threshold, the classifier gate, the minimum area and the largest-3D
    rule: thresholding it gives the pipeline's mask only where those leave a slice alone."""
    return _nifti_gz(np.clip(np.stack(probabilities).astype(np.float32), 0.0, 1.0), geometry)


def _nifti_gz(display: np.ndarray, geometry: Geometry) -> bytes:
    """``.nii.gz`` bytes of a ``DxHxW`` array in slice order, put back in the input's grid, with its affine."""
    image = nib.Nifti1Image(np.ascontiguousarray(geometry.to_stored(display)), geometry.affine)
    image.header.set_data_dtype(display.dtype)
    image.header.set_xyzt_units("mm")
    image.set_qform(geometry.affine, code=1)
    image.set_sform(geometry.affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=6)
