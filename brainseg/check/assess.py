"""The input check: is a slice like the training data? A score, a verdict and the reasons behind it.

Layers (fitted by ``brainseg calibrate``, shipped in ``weights/``): pixel structure and statistics, the distance of
the classifier's features to the training slices, a content model against known kinds of foreign images, and, once
per volume, the grey-sequence networks. ``assess`` is pure and cheap; the Predictor runs it on every slice.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file
from scipy.special import softmax

from brainseg.check.sequence import SequenceModel, from_tensors, order_warning, sequence_logit, volume_warning
from brainseg.errors import BrainsegError
from brainseg.models.weights import sha256, verify
from brainseg.paths import WEIGHTS_DIR
from brainseg.preprocess import CHANNELS, MODEL_SIZE, brain_pixels, histogram_moments, resize_image

CHECK_JSON = "input_check.json"
CHECK_TENSORS = "input_check.safetensors"
OK, CAUTION, FOREIGN = "ok", "caution", "foreign"
NEIGHBOURS = 10
IDENTICAL_LEVEL = 2          # uint8: channels closer than this at a pixel count as identical there
ONE_SEQUENCE_SHARE = 0.9     # share of brain pixels with identical channels that makes a slice one sequence
# A scan's slices (an uploaded volume) within these sides and this aspect carry no size reason: the scanner's matrix,
# which the models' resize absorbs (validation per-volume Dice within 0.003 on average, 192-1024 a side, 1.25:1;
# docs/experiments.md "2026-12-08"); beyond them, and for single-slice uploads, the size still counts
SCAN_SIDES = (192, 1024)
SCAN_ASPECT = 1.25


@dataclass(frozen=True)
class InputCheck:
    """The check's answer for one slice."""

    score: float                 # feature distance / validation threshold: above 1 is unlike the validation slices
    verdict: str                 # "ok", "caution" (only size/aspect differ) or "foreign"
    reasons: tuple[str, ...]     # what is unlike the training data, in words; empty when ok
    one_sequence: bool = False   # channels identical over the brain: one MRI sequence (taken as FLAIR)

    @property
    def flagged(self) -> bool:
        return self.verdict != OK


@dataclass(frozen=True)
class CheckSummary:
    """The input check over a volume's slices: how many were checked and how many were flagged."""

    checked: int
    flagged: int

    def sentence(self) -> str:
        """E.g. ``"12 of 60 slices unlike the training data"`` ("" when nothing was checked)."""
        if not self.checked:
            return ""
        if self.flagged:
            return f"{self.flagged} of {self.checked} slices unlike the training data"
        return f"all {self.checked} slices like the training data"


def summarise(checks: Sequence[InputCheck | None]) -> CheckSummary:
    """Count the slices checked and flagged (a slice predicted without a calibration has ``None``)."""
    checked = [c for c in checks if c is not None]
    return CheckSummary(len(checked), sum(c.flagged for c in checked))


@dataclass(frozen=True)
class Calibration:
    """Everything ``assess`` needs, as written by :func:`brainseg.calibrate.calibrate`."""

    low: dict[str, float]            # accepted range of each intensity statistic
    high: dict[str, float]
    distance_threshold: float        # k-NN cosine distance above which a slice is unlike the data
    train_features: np.ndarray       # NxD float32, unit rows: the training-split neighbours
    classifier_sha256: str
    content: ContentModel | None = None
    reslice_threshold: float = float("inf")  # reslice_anisotropy above which a slice is a reformatted view
    sequence: SequenceModel | None = None  # grey slices: T1 or FLAIR? (brainseg.check.sequence); None in old ones
    sequence_threshold: float = float("inf")  # the volume mean logit above which a grey volume looks like T1


@dataclass(frozen=True)
class ContentModel:
    """Two scores over content features, each with its threshold (chosen together on validation):

    - a softmax regression, class 0 LGG and the others the negative families: P(not LGG);
    - a one-class Mahalanobis distance to the LGG training rows (standardised, shrunk covariance): it does not
      depend on which negatives were seen, so it also fires on kinds none of them resembles."""

    families: tuple[str, ...]  # class names after "lgg", keys of brainseg.training.negatives.FAMILIES
    reasons: tuple[str, ...]  # the reason in words for each family
    pca_mean: np.ndarray  # D float32: classifier features are centred and projected ...
    pca_components: np.ndarray  # KxD: ... on the training slices' principal components
    thumbnail_mean: np.ndarray  # 768: 16x16x3 thumbnails likewise
    thumbnail_components: np.ndarray  # Kx768
    feature_mean: np.ndarray  # F: content features standardised ...
    feature_std: np.ndarray  # F
    weights: np.ndarray  # CxF
    bias: np.ndarray  # C
    threshold: float  # probability of "not LGG" above which a slice is flagged (validation)
    lgg_mean: np.ndarray  # F: the LGG training rows' mean ...
    lgg_std: np.ndarray  # F: ... and spread, for the one-class distance
    lgg_precision: np.ndarray  # FxF: inverse of their shrunk covariance (standardised rows)
    distance_threshold: float  # one-class distance above which a slice is flagged (validation)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """``BxC`` class probabilities of ``BxF`` content-feature rows."""
        x = (np.asarray(rows, np.float32) - self.feature_mean) / self.feature_std
        return softmax(x @ self.weights.T + self.bias, axis=1)

    def distances(self, rows: np.ndarray) -> np.ndarray:
        """``B`` one-class distances of ``BxF`` content-feature rows to the LGG training rows."""
        return mahalanobis(rows, self.lgg_mean, self.lgg_std, self.lgg_precision)


def mahalanobis(rows: np.ndarray, mean: np.ndarray, std: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distances of rows, standardised, under the precision of the standardised reference rows.

    Args:
        rows: ``BxF`` rows to measure.
        mean: ``F`` mean the rows are standardised by (subtracted).
        std: ``F`` spread the rows are standardised by (divided).
        precision: ``FxF`` inverse covariance of the standardised reference rows.

    Returns:
        ``B`` squared distances.
    """
    z = (np.asarray(rows, np.float32) - mean) / std
    return np.einsum("ij,jk,ik->i", z, precision, z)


@dataclass(frozen=True)
class BrainPixels:
    """A slice at the model's 256x256 and its brain pixels: what the pixel layers of the check measure."""

    resized: np.ndarray  # 256x256x3 uint8
    brain: np.ndarray  # 256x256 bool
    channels: np.ndarray  # 3xN uint8: the brain's pixels, a row per channel (every pixel when the brain has < 64)
    spread: np.ndarray  # N uint8: max - min over the channels at each of those pixels
    histograms: np.ndarray  # 3x256 int64: each channel's count of every value over those pixels


_CHANNEL_OFFSETS = np.arange(3, dtype=np.uint16)[:, None] * 256


def measure_brain(image_u8: np.ndarray) -> BrainPixels:
    resized = resize_image(image_u8)
    brain = brain_pixels(resized)
    pixels = resized.reshape(-1, 3)
    if brain.sum() >= 64:
        pixels = pixels.take(np.flatnonzero(brain), axis=0)  # 4x faster than indexing with the mask
    channels = np.ascontiguousarray(pixels.T)
    red, green, blue = channels
    histograms = np.bincount((channels + _CHANNEL_OFFSETS).ravel(), minlength=3 * 256).reshape(3, 256)
    return BrainPixels(
        resized,
        brain,
        channels,
        np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue),
        histograms,
    )


def slice_statistics(image_u8: np.ndarray | BrainPixels) -> dict[str, float]:
    """Channel structure and per-channel brightness (mean) and contrast (std) over brain pixels, in 0..1,
    measured at the model's 256x256 as the models see it."""
    measured = image_u8 if isinstance(image_u8, BrainPixels) else measure_brain(image_u8)
    mean, std = histogram_moments(measured.histograms)
    statistics = {
        "identical_channels": float((measured.spread <= IDENTICAL_LEVEL).mean()),
        "reslice_anisotropy": reslice_anisotropy(measured),
    }
    for c in range(3):
        statistics[f"mean_{c}"] = float(mean[c] / 255.0)
        statistics[f"std_{c}"] = float(std[c] / 255.0)
    return statistics


def reslice_anisotropy(measured: BrainPixels) -> float:
    """How much smoother the slice is along one axis than along the other: |log| of the ratio of its mean absolute
    second differences down the columns and along the rows (sum of the channels at 256x256, over the brain).

    Near 0 for a slice acquired in its own plane, whatever its orientation; large for a view reformatted from a
    volume of thicker slices (a sagittal or coronal view of an axial volume), which is interpolated, so piecewise
    linear, along the slice direction: validation slices at most 0.63, sagittal and coronal reslices of training
    patients at least 1.84. 0 when the brain has fewer than 64 pixels."""
    inner = measured.brain[1:-1, 1:-1]
    count = int(np.count_nonzero(inner))
    if count < 64:
        return 0.0
    resized = measured.resized
    total = resized[..., 0].astype(np.int16)  # in place on int16 throughout: 0.16 ms (a float version took 0.85)
    total += resized[..., 1]
    total += resized[..., 2]
    centre = 2 * total[1:-1, 1:-1]
    means = []
    for second in (total[2:, 1:-1] + total[:-2, 1:-1], total[1:-1, 2:] + total[1:-1, :-2]):  # down, along
        second -= centre
        np.abs(second, out=second)
        second *= inner
        means.append(float(second.sum(dtype=np.int64)) / count)
    return abs(float(np.log((means[0] + 1e-3) / (means[1] + 1e-3))))


HISTOGRAM_BINS = 16


def pixel_features(image_u8: np.ndarray | BrainPixels) -> np.ndarray:
    """What the pixels look like at 256x256: per-channel brain histograms (16 bins each), brain share, share of
    identical channels and the three channel correlations over the brain (53 values)."""
    measured = image_u8 if isinstance(image_u8, BrainPixels) else measure_brain(image_u8)
    counts = measured.histograms.reshape(3, HISTOGRAM_BINS, 256 // HISTOGRAM_BINS).sum(axis=2)
    histograms = counts / measured.channels.shape[1]
    channels = measured.channels.astype(np.float32)
    centred = channels - channels.mean(axis=1, keepdims=True)
    products = centred @ centred.T
    scale = np.sqrt(np.diag(products)) + 1e-6
    correlation = products / np.outer(scale, scale)
    return np.concatenate(
        [
            *histograms,
            [measured.brain.mean(), (measured.spread <= IDENTICAL_LEVEL).mean()],
            [correlation[0, 1], correlation[1, 2], correlation[0, 2]],
        ]
    ).astype(np.float32)


THUMBNAIL = 16


def thumbnail(image_u8: np.ndarray | BrainPixels) -> np.ndarray:
    """The slice at 256x256 averaged down to ``16x16x3`` in 0..1, flattened: the layout of the picture."""
    resized = image_u8.resized if isinstance(image_u8, BrainPixels) else resize_image(image_u8)
    small = Image.fromarray(resized).resize((THUMBNAIL, THUMBNAIL), Image.BOX)
    return (np.asarray(small, np.float32) / 255.0).reshape(-1)


def layout_features(image_u8: np.ndarray | BrainPixels, model: ContentModel) -> np.ndarray:
    """The thumbnail projected on the training slices' principal components."""
    return (thumbnail(image_u8) - model.thumbnail_mean) @ model.thumbnail_components.T


def content_row(pixels: np.ndarray, layout: np.ndarray, features: np.ndarray, model: ContentModel) -> np.ndarray:
    """The content model's input: :func:`pixel_features`, the classifier's pooled features projected on the
    training slices' principal components, and :func:`layout_features`.

    Args:
        pixels: the slice's :func:`pixel_features` (53 values).
        layout: the slice's :func:`layout_features`.
        features: ``D`` classifier pooled features of the slice.
        model: the content model, whose ``pca_mean`` and ``pca_components`` project ``features``.

    Returns:
        The ``F`` content-feature row: pixels, projected features and layout, concatenated.
    """
    projected = (np.asarray(features, np.float32) - model.pca_mean) @ model.pca_components.T
    return np.concatenate([pixels, projected, layout])


def content_features(image_u8: np.ndarray | BrainPixels, features: np.ndarray, model: ContentModel) -> np.ndarray:
    """:func:`content_row` of one slice and its classifier features.

    Args:
        image_u8: ``HxWx3 uint8`` slice, or its :class:`BrainPixels` already measured.
        features: ``D`` classifier pooled features of the slice.
        model: the content model.

    Returns:
        The ``F`` content-feature row.
    """
    return content_row(pixel_features(image_u8), layout_features(image_u8, model), features, model)


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """``NxD`` float32 rows scaled to length 1 (rows of zeros stay zero)."""
    rows = np.asarray(rows, np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def feature_distance(features: np.ndarray, train_features: np.ndarray) -> np.ndarray:
    """``B``: cosine distance of each ``BxD`` feature row to its ``NEIGHBOURS``-th nearest training row."""
    similarity = unit_rows(features) @ train_features.T
    k = min(NEIGHBOURS, train_features.shape[0])
    return 1.0 - np.partition(similarity, -k, axis=1)[:, -k]


def t1_evidence(
    images_u8: Sequence[np.ndarray], one_sequence: Sequence[bool], calibration: Calibration
) -> list[float | None]:
    """Each one-sequence slice's evidence that it is a T1, not FLAIR: the grey-sequence model's logit (on the slice
    at 256x256, as the models see it) less the volume threshold, which :func:`brainseg.check.sequence.volume_looks_t1`
    judges together.

    Args:
        images_u8: the volume's ``HxWx3 uint8`` slices.
        one_sequence: per slice, whether it is one MRI sequence (identical channels); only those are scored.
        calibration: the shipped calibration: its ``sequence`` model and ``sequence_threshold``.

    Returns:
        Per slice, the evidence, or None for a slice of three sequences, with too little brain, or without a
        sequence model.
    """
    if calibration.sequence is None:
        return [None] * len(images_u8)
    logits = [
        sequence_logit(resize_image(image)[..., 1], calibration.sequence) if grey else None
        for image, grey in zip(images_u8, one_sequence)
    ]
    return [None if logit is None else logit - calibration.sequence_threshold for logit in logits]


def volume_sequence_warning(
    checks: Sequence[InputCheck | None], images_u8: Sequence[np.ndarray], calibration: Calibration | None
) -> str:
    """What the check says of a whole volume's sequences, as a sentence: a grey volume that looks T1
    (:func:`brainseg.check.sequence.volume_warning`), or three channels that look out of order
    (:func:`brainseg.check.sequence.order_warning`), with the shipped sequence model.

    Args:
        checks: the slices' input checks (their ``one_sequence`` marks the grey slices); ``None`` for an unchecked one.
        images_u8: the volume's ``HxWx3 uint8`` slices, in slice order.
        calibration: the shipped calibration, or ``None``; without it or its sequence model the answer is ``""``.

    Returns:
        The sentence, or ``""`` when there is nothing to say.
    """
    if calibration is None or calibration.sequence is None:
        return ""
    grey = volume_warning(
        t1_evidence(images_u8, [check is not None and check.one_sequence for check in checks], calibration)
    )
    if grey:
        return f"This volume is {grey}."
    order = order_warning(images_u8, calibration.sequence, calibration.sequence_threshold)
    return f"This volume has {order}." if order else ""


def _intensity_reasons(statistics: dict[str, float], calibration: Calibration) -> list[str]:
    reasons = []
    for c, channel in enumerate(CHANNELS):
        for kind, word in (("mean", "brightness"), ("std", "contrast")):
            name = f"{kind}_{c}"
            value, low, high = statistics[name], calibration.low[name], calibration.high[name]
            if not low <= value <= high:
                side = "higher" if value > high else "lower"
                reasons.append(
                    f"{word} of the {channel} channel is {side} than in any training slice "
                    f"({value:.2f}, training range {low:.2f}-{high:.2f})"
                )
    return reasons


def assess(image_u8: np.ndarray, features: np.ndarray, calibration: Calibration) -> InputCheck:
    """The check for one slice and its classifier features (from the same forward pass).

    Args:
        image_u8: ``HxWx3 uint8`` slice.
        features: ``D`` classifier pooled features of the slice.
        calibration: the shipped calibration.

    Returns:
        The slice's input check.
    """
    return assess_many([image_u8], np.asarray(features)[None], calibration)[0]


@dataclass(frozen=True)
class PixelMeasures:
    """What the check measures on a slice's pixels alone, without the networks (so it may run beside them)."""

    shape: tuple[int, int]
    statistics: dict[str, float]  # slice_statistics
    pixels: np.ndarray | None  # pixel_features, and ...
    layout: np.ndarray | None  # ... layout_features: None without a content model


def measure_pixels(image_u8: np.ndarray, calibration: Calibration) -> PixelMeasures:
    """The pixel layers' measures of one ``HxWx3 uint8`` slice (at 256x256, as the models see it)."""
    measured, content = measure_brain(image_u8), calibration.content
    statistics = slice_statistics(measured)
    return PixelMeasures(
        image_u8.shape[:2],
        statistics,
        None if content is None else pixel_features(measured),
        None if content is None else layout_features(measured, content),
    )


def judge_many(measures: Sequence[PixelMeasures], features: np.ndarray, calibration: Calibration,
               scan: bool = False) -> list[InputCheck]:
    """The check of each slice of a batch from its pixel measures and its row of classifier features: the products
    with the training rows run once for the batch (reading them once per slice was a third of the check's time).

    Args:
        measures: each slice's :class:`PixelMeasures`, in batch order.
        features: ``BxD`` classifier pooled features, a row per slice.
        calibration: the shipped calibration.
        scan: the slices are one uploaded volume's, whose size is judged by :func:`judge_size` as a scan's.

    Returns:
        One input check per slice.
    """
    ratios = feature_distance(features, calibration.train_features) / calibration.distance_threshold
    content = calibration.content
    if content is not None:
        rows = np.stack([content_row(m.pixels, m.layout, f, content) for m, f in zip(measures, features)])
        probabilities, distances = content.probabilities(rows), content.distances(rows) / content.distance_threshold
    return [
        _verdict(
            m.shape,
            m.statistics,
            float(ratio),
            calibration,
            None if content is None else (probabilities[i], float(distances[i])),
            scan,
        )
        for i, (m, ratio) in enumerate(zip(measures, ratios))
    ]


def assess_many(images_u8: Sequence[np.ndarray], features: np.ndarray, calibration: Calibration) -> list[InputCheck]:
    """The check for each slice of a batch and its row of classifier features.

    Args:
        images_u8: the batch's ``HxWx3 uint8`` slices.
        features: ``BxD`` classifier pooled features, a row per slice.
        calibration: the shipped calibration.

    Returns:
        One input check per slice.
    """
    return judge_many([measure_pixels(image, calibration) for image in images_u8], features, calibration)


def judge_size(shape: tuple[int, int], scan: bool = False) -> list[str]:
    """What a slice's size tells, in words: a size other than the training slices' 256x256, a shape other than square.

    A single slice of another size is likely a screenshot or a picture, so any difference counts. A scan's slices
    (``scan``) are the scanner's matrix: within :data:`SCAN_SIDES` and :data:`SCAN_ASPECT` they say nothing."""
    height, width = shape
    longer, shorter = max(height, width), min(height, width)
    if scan and SCAN_SIDES[0] <= shorter and longer <= SCAN_SIDES[1] and longer <= SCAN_ASPECT * shorter:
        return []
    reasons = []
    if (height, width) != (MODEL_SIZE, MODEL_SIZE):
        reasons.append(f"size {width}x{height}; every training slice is {MODEL_SIZE}x{MODEL_SIZE}")
    if longer > 1.05 * shorter:
        reasons.append("not square: it is stretched to a square before the models see it")
    return reasons


def _verdict(
    shape: tuple[int, int],
    statistics: dict[str, float],
    ratio: float,
    calibration: Calibration,
    content_scores: tuple[np.ndarray, float] | None,
    scan: bool = False,
) -> InputCheck:
    """Verdict and reasons of one slice from its size (judged as a scan's with ``scan``), pixel statistics, feature
    distance ratio and content scores (class probabilities and one-class distance ratio)."""
    size_reasons, strong_reasons = judge_size(shape, scan), []
    if ratio > 1.0:
        strong_reasons.append(
            "does not look like the axial brain MRI slices the model was trained on "
            f"(feature distance {ratio:.1f}x the validation threshold): another view, "
            "sequence or scanner, or not an MRI at all"
        )
    strong_reasons += _intensity_reasons(statistics, calibration)
    anisotropy = statistics["reslice_anisotropy"]
    if anisotropy > calibration.reslice_threshold:
        strong_reasons.append(
            "looks like a view reformatted from thicker slices (sagittal or coronal from an axial "
            "volume): far smoother along one axis than along the other (anisotropy "
            f"{anisotropy:.2f}, threshold {calibration.reslice_threshold:.2f})"
        )
        ratio = max(ratio, anisotropy / calibration.reslice_threshold)
    if content_scores is not None:
        content = calibration.content
        probabilities, distance = content_scores
        family = content.reasons[int(np.argmax(probabilities[1:]))]
        if 1.0 - probabilities[0] > content.threshold:
            strong_reasons.append(
                f"{family} (content check: {100 * (1 - probabilities[0]):.0f}% unlike the training slices)"
            )
            ratio = max(ratio, float((1.0 - probabilities[0]) / content.threshold))
        elif distance > 1.0:
            strong_reasons.append(
                f"its content (brain histograms, layout, classifier features) is unlike every "
                f"training slice ({distance:.1f}x the validation threshold); nearest kind: {family}"
            )
            ratio = max(ratio, distance)
    one_sequence = statistics["identical_channels"] >= ONE_SEQUENCE_SHARE
    if not size_reasons and not strong_reasons:
        return InputCheck(ratio, OK, (), one_sequence)
    sequence_reason = (
        [
            "one MRI sequence (the three channels are identical); the model expects three: "
            "pre-contrast, FLAIR and post-contrast"
        ]
        if one_sequence
        else []
    )
    verdict = FOREIGN if strong_reasons or one_sequence else CAUTION
    return InputCheck(ratio, verdict, tuple(strong_reasons + sequence_reason + size_reasons), one_sequence)


# ---- the shipped calibration --------------------------------------------------------------------------------


def load_calibration(weights_dir: str | Path = WEIGHTS_DIR) -> Calibration | None:
    """The shipped calibration; None when absent. Refuses one made for other classifier weights."""
    weights_dir = Path(weights_dir)
    json_path = weights_dir / CHECK_JSON
    if not json_path.exists():
        return None
    try:
        payload = json.loads(json_path.read_text())
        verify(weights_dir / CHECK_TENSORS)
        tensors = load_file(str(weights_dir / CHECK_TENSORS))
        content = (
            ContentModel(
                tuple(payload["content_families"]),
                tuple(payload["content_reasons"]),
                tensors["pca_mean"],
                tensors["pca_components"],
                tensors["thumbnail_mean"],
                tensors["thumbnail_components"],
                tensors["feature_mean"],
                tensors["feature_std"],
                tensors["weights"],
                tensors["bias"],
                float(payload["content_threshold"]),
                tensors["lgg_mean"],
                tensors["lgg_std"],
                tensors["lgg_precision"],
                float(payload["content_distance_threshold"]),
            )
            if "content_families" in payload
            else None
        )
        calibration = Calibration(
            payload["low"],
            payload["high"],
            float(payload["distance_threshold"]),
            tensors["train_features"].astype(np.float32),
            payload["classifier_sha256"],
            content,
            float(payload.get("reslice_threshold", "inf")),
            from_tensors(tensors),
            float(payload.get("sequence_threshold", "inf")),
        )
    except (OSError, ValueError, KeyError) as err:
        raise BrainsegError(
            f"{json_path}: not a readable input-check calibration ({err}); "
            "rerun python -m brainseg calibrate --data DIR"
        ) from None
    if calibration.classifier_sha256 != sha256(weights_dir / "classifier.safetensors"):
        raise BrainsegError(
            f"{json_path}: calibrated for other classifier weights; rerun python -m brainseg calibrate --data DIR"
        )
    return calibration
