"""The predicted masks of a DICOM series as a DICOM Segmentation (highdicom): binary, one segment "tumour",
referencing the source series' instances, so that PACS viewers (OHIF, 3D Slicer, ...) show it on the scan."""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from brainseg import __version__
from brainseg.errors import BrainsegError
from brainseg.io.volumes import Volume

SERIES_NUMBER = 900                     # the SEG's own series number, one the scanner's series rarely use
SEGMENT_LABEL = "tumour"
# Patient and study attributes the SEG copies from the first source: type 2 (present, may be empty), yet some
# anonymised or generated series leave them out.
STUDY_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                  "StudyDate", "StudyTime")


def _algorithm(parameters: Mapping[str, object] | None = None) -> hd.AlgorithmIdentificationSequence:
    """brainseg as the segmenting algorithm: its version, family Artificial Intelligence, and the pipeline's
    settings as parameters (e.g. ``{"seg_threshold": 0.7}``, written as text)."""
    written = {name: str(value) for name, value in (parameters or {}).items()}
    return hd.AlgorithmIdentificationSequence(name="brainseg", family=codes.DCM.ArtificialIntelligence,
                                              version=__version__, parameters=written or None)


def dicom_seg(volume: Volume, masks: Sequence[np.ndarray], parameters: Mapping[str, object] | None = None) -> bytes:
    """A binary DICOM SEG of the predicted masks on the series ``volume`` was read from.

    Args:
        volume: a volume read from a DICOM series (it holds the source headers, ``Volume.dicom_sources``).
        masks: the pipeline's ``HxW bool`` mask per slice, in display (slice) order.
        parameters: the pipeline settings to record with the algorithm (name: value).

    Returns:
        The SEG file's bytes (explicit VR little endian; frames without tumour are left out, unless every one is).
    """
    if not volume.dicom_sources:
        raise BrainsegError(f"{volume.name}: a DICOM SEG needs a DICOM series as input; this scan is a "
                            f"{volume.format}, so its mask comes as NIfTI only")
    stored = volume.geometry.to_stored(np.stack([np.asarray(m, bool) for m in masks]))  # one frame per source
    sources = [_with_study(volume.dicom_sources[0]), *volume.dicom_sources[1:]]
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(parameters), anatomic_regions=[codes.SCT.Brain])
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=stored.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
            series_instance_uid=hd.UID(), series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="brainseg", manufacturer_model_name="brainseg ResUNet", software_versions=__version__,
            device_serial_number="none", content_label="TUMOUR", content_qualification="RESEARCH",
            series_description="brainseg tumour (research)", omit_empty_frames=bool(stored.any()))
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise BrainsegError(f"{volume.name}: the DICOM series lacks what a DICOM SEG needs ({err})") from None
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def _with_study(header: pydicom.Dataset) -> pydicom.Dataset:
    """``header``, or a copy of it with the missing :data:`STUDY_KEYWORDS` present and empty (the volume's own
    header stays as read)."""
    missing = [keyword for keyword in STUDY_KEYWORDS if keyword not in header]
    if not missing:
        return header
    copy = pydicom.Dataset()
    copy.update(header)
    for keyword in missing:
        setattr(copy, keyword, "")
    return copy
