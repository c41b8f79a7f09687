"""The input check: is a slice like the training data? A score, a verdict and the reasons behind it.

Two layers, calibrated by ``python -m brainseg calibrate`` and shipped in ``weights/``:

- structure and statistics of the pixels: size and aspect against the dataset's 256x256, identical
  channels (one MRI sequence instead of three), per-channel brightness and contrast over the brain
  against the training split's range;
- learned: the cosine distance from the classifier's pooled 2048-d features to their 10 nearest
  training-split neighbours (it separated foreign images better than a shrunk-covariance Mahalanobis
  distance or the energy score; see :func:`measure`).

Ranges come from training-split slices, thresholds from the validation patients; never the test split.
``assess`` is pure and cheap (a few ms a slice); :class:`brainseg.inference.Predictor` runs it on every slice.
"""
from __future__ import annotations

import argparse
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image
from scipy.special import softmax
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from brainseg.data import SliceRecord, index_dataset, load_split, select
from brainseg.errors import BrainsegError
from brainseg.io import SUFFIXES, encode_png, read_slice
from brainseg.preprocess import MODEL_SIZE, brain_pixels, resize_image
from brainseg.weights import WEIGHTS_DIR, record_checksum, sha256, verify

if TYPE_CHECKING:
    from brainseg.inference import Predictor

CHECK_JSON = "input_check.json"
CHECK_TENSORS = "input_check.safetensors"
OK, CAUTION, FOREIGN = "ok", "caution", "foreign"
CHANNELS = ("pre-contrast", "FLAIR", "post-contrast")
INTENSITY_STATISTICS = tuple(f"{kind}_{c}" for c in range(3) for kind in ("mean", "std"))
NEIGHBOURS = 10
IDENTICAL_LEVEL = 2          # uint8: channels closer than this at a pixel count as identical there
ONE_SEQUENCE_SHARE = 0.9     # share of brain pixels with identical channels that makes a slice one sequence
FALSE_ALARM_TARGET = 0.005   # share of validation slices each layer may flag
MARGINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)   # candidate widenings of the training range, as a share of its span


@dataclass(frozen=True)
class InputCheck:
    """The check's answer for one slice."""

    score: float                 # feature distance / validation threshold: above 1 is unlike the validation slices
    verdict: str                 # "ok", "caution" (only size/aspect differ) or "foreign"
    reasons: tuple[str, ...]     # what is unlike the training data, in words; empty when ok

    @property
    def flagged(self) -> bool:
        return self.verdict != OK


@dataclass(frozen=True)
class Calibration:
    """Everything ``assess`` needs, as written by :func:`calibrate`."""

    low: dict[str, float]            # accepted range of each intensity statistic
    high: dict[str, float]
    distance_threshold: float        # k-NN cosine distance above which a slice is unlike the data
    train_features: np.ndarray       # NxD float32, unit rows: the training-split neighbours
    classifier_sha256: str
    content: ContentModel | None = None   # learned against negatives (brainseg.negatives); None in old calibrations


@dataclass(frozen=True)
class ContentModel:
    """Softmax regression over content features: class 0 is LGG, the others the negative families."""

    families: tuple[str, ...]        # class names after "lgg", keys of brainseg.negatives.FAMILIES
    reasons: tuple[str, ...]         # the reason in words for each family
    pca_mean: np.ndarray             # D float32: classifier features are centred and projected ...
    pca_components: np.ndarray       # KxD: ... on the training slices' principal components
    thumbnail_mean: np.ndarray       # 768: 16x16x3 thumbnails likewise
    thumbnail_components: np.ndarray  # Kx768
    feature_mean: np.ndarray         # F: content features standardised ...
    feature_std: np.ndarray          # F
    weights: np.ndarray              # CxF
    bias: np.ndarray                 # C
    threshold: float                 # probability of "not LGG" above which a slice is flagged (validation)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """``BxC`` class probabilities of ``BxF`` content-feature rows."""
        x = (np.asarray(rows, np.float32) - self.feature_mean) / self.feature_std
        return softmax(x @ self.weights.T + self.bias, axis=1)


@dataclass(frozen=True)
class BrainPixels:
    """A slice at the model's 256x256 and its brain pixels: what the pixel layers of the check measure."""

    resized: np.ndarray    # 256x256x3 uint8
    brain: np.ndarray      # 256x256 bool
    pixels_u8: np.ndarray  # Nx3 uint8: the brain's pixels (every pixel when the brain has fewer than 64)
    spread: np.ndarray     # N uint8: max - min over the channels at each of those pixels


def measure_brain(image_u8: np.ndarray) -> BrainPixels:
    resized = resize_image(image_u8)
    brain = brain_pixels(resized)
    pixels_u8 = resized[brain] if brain.sum() >= 64 else resized.reshape(-1, 3)
    red, green, blue = pixels_u8.T   # elementwise over the channels: 5x faster than a reduction along axis 1
    return BrainPixels(resized, brain, pixels_u8,
                       np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue))


def slice_statistics(image_u8: np.ndarray | BrainPixels) -> dict[str, float]:
    """Channel structure and per-channel brightness (mean) and contrast (std) over brain pixels, in 0..1,
    measured at the model's 256x256 as the models see it."""
    measured = image_u8 if isinstance(image_u8, BrainPixels) else measure_brain(image_u8)
    pixels = measured.pixels_u8.astype(np.float32)
    statistics = {"identical_channels": float((measured.spread <= IDENTICAL_LEVEL).mean())}
    for c in range(3):
        statistics[f"mean_{c}"] = float(pixels[:, c].mean() / 255.0)
        statistics[f"std_{c}"] = float(pixels[:, c].std() / 255.0)
    return statistics


HISTOGRAM_BINS = 16


def pixel_features(image_u8: np.ndarray | BrainPixels) -> np.ndarray:
    """What the pixels look like at 256x256: per-channel brain histograms (16 bins each), brain share, share of
    identical channels and the three channel correlations over the brain (53 values)."""
    measured = image_u8 if isinstance(image_u8, BrainPixels) else measure_brain(image_u8)
    pixels_u8 = measured.pixels_u8
    histograms = [np.bincount(pixels_u8[:, c] // (256 // HISTOGRAM_BINS), minlength=HISTOGRAM_BINS) / len(pixels_u8)
                  for c in range(3)]
    pixels = pixels_u8.astype(np.float32)
    centred = pixels - pixels.mean(axis=0)
    scale = np.sqrt((centred ** 2).sum(axis=0)) + 1e-6
    correlation = (centred.T @ centred) / np.outer(scale, scale)
    return np.concatenate([*histograms, [measured.brain.mean(), (measured.spread <= IDENTICAL_LEVEL).mean()],
                           [correlation[0, 1], correlation[1, 2], correlation[0, 2]]]).astype(np.float32)


THUMBNAIL = 16


def thumbnail(image_u8: np.ndarray | BrainPixels) -> np.ndarray:
    """The slice at 256x256 averaged down to ``16x16x3`` in 0..1, flattened: the layout of the picture."""
    resized = image_u8.resized if isinstance(image_u8, BrainPixels) else resize_image(image_u8)
    small = Image.fromarray(resized).resize((THUMBNAIL, THUMBNAIL), Image.BOX)
    return (np.asarray(small, np.float32) / 255.0).reshape(-1)


def principal_components(rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the first ``count`` principal directions (``count x D``) of ``NxD`` rows (calibration only)."""
    import torch
    x = torch.as_tensor(np.asarray(rows, np.float32))
    mean = x.mean(0)
    _, _, vectors = torch.linalg.svd(x - mean, full_matrices=False)
    return mean.numpy(), np.ascontiguousarray(vectors[:count].numpy())


def content_features(image_u8: np.ndarray | BrainPixels, features: np.ndarray, model: ContentModel) -> np.ndarray:
    """Pixel features, the thumbnail and the classifier's pooled features, each projected on the training slices'
    principal components."""
    projected = (np.asarray(features, np.float32) - model.pca_mean) @ model.pca_components.T
    layout = (thumbnail(image_u8) - model.thumbnail_mean) @ model.thumbnail_components.T
    return np.concatenate([pixel_features(image_u8), projected, layout])


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """``NxD`` float32 rows scaled to length 1 (rows of zeros stay zero)."""
    rows = np.asarray(rows, np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def feature_distance(features: np.ndarray, train_features: np.ndarray) -> np.ndarray:
    """``B``: cosine distance of each ``BxD`` feature row to its ``NEIGHBOURS``-th nearest training row."""
    similarity = unit_rows(features) @ train_features.T
    k = min(NEIGHBOURS, train_features.shape[0])
    return 1.0 - np.partition(similarity, -k, axis=1)[:, -k]


def _intensity_reasons(statistics: dict[str, float], calibration: Calibration) -> list[str]:
    reasons = []
    for c, channel in enumerate(CHANNELS):
        for kind, word in (("mean", "brightness"), ("std", "contrast")):
            name = f"{kind}_{c}"
            value, low, high = statistics[name], calibration.low[name], calibration.high[name]
            if not low <= value <= high:
                side = "higher" if value > high else "lower"
                reasons.append(f"{word} of the {channel} channel is {side} than in any training slice "
                               f"({value:.2f}, training range {low:.2f}-{high:.2f})")
    return reasons


def assess(image_u8: np.ndarray, features: np.ndarray, calibration: Calibration) -> InputCheck:
    """The check for one ``HxWx3 uint8`` slice and its classifier features ``D`` (from the same forward pass)."""
    height, width = image_u8.shape[:2]
    measured = measure_brain(image_u8)   # once: the layers below see the slice at the model's size
    statistics = slice_statistics(measured)
    ratio = float(feature_distance(features[None], calibration.train_features)[0] / calibration.distance_threshold)
    size_reasons, strong_reasons = [], []
    if (height, width) != (MODEL_SIZE, MODEL_SIZE):
        size_reasons.append(f"size {width}x{height}; every training slice is {MODEL_SIZE}x{MODEL_SIZE}")
    if max(height, width) > 1.05 * min(height, width):
        size_reasons.append("not square: it is stretched to a square before the models see it")
    if ratio > 1.0:
        strong_reasons.append("does not look like the axial brain MRI slices the model was trained on "
                              f"(feature distance {ratio:.1f}x the validation threshold): another view, "
                              "sequence or scanner, or not an MRI at all")
    strong_reasons += _intensity_reasons(statistics, calibration)
    content = calibration.content
    if content is not None:
        row = content_features(measured, features, content)
        probabilities = content.probabilities(row[None])[0]
        if 1.0 - probabilities[0] > content.threshold:
            family = int(np.argmax(probabilities[1:]))
            strong_reasons.append(f"{content.reasons[family]} (content check: {100 * (1 - probabilities[0]):.0f}% "
                                  "unlike the training slices)")
            ratio = max(ratio, float((1.0 - probabilities[0]) / content.threshold))
    one_sequence = statistics["identical_channels"] >= ONE_SEQUENCE_SHARE
    if not size_reasons and not strong_reasons:
        return InputCheck(ratio, OK, ())
    sequence_reason = ["one MRI sequence (the three channels are identical); the model expects three: "
                       "pre-contrast, FLAIR and post-contrast"] if one_sequence else []
    verdict = FOREIGN if strong_reasons or one_sequence else CAUTION
    return InputCheck(ratio, verdict, tuple(strong_reasons + sequence_reason + size_reasons))


# ---- calibration --------------------------------------------------------------------------------

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
        content = ContentModel(tuple(payload["content_families"]), tuple(payload["content_reasons"]),
                               tensors["pca_mean"], tensors["pca_components"], tensors["thumbnail_mean"],
                               tensors["thumbnail_components"], tensors["feature_mean"],
                               tensors["feature_std"], tensors["weights"], tensors["bias"],
                               float(payload["content_threshold"])) if "content_families" in payload else None
        calibration = Calibration(payload["low"], payload["high"], float(payload["distance_threshold"]),
                                  tensors["train_features"].astype(np.float32), payload["classifier_sha256"],
                                  content)
    except (OSError, ValueError, KeyError) as err:
        raise BrainsegError(f"{json_path}: not a readable input-check calibration ({err}); "
                            "rerun python -m brainseg calibrate --data DIR") from None
    if calibration.classifier_sha256 != sha256(weights_dir / "classifier.safetensors"):
        raise BrainsegError(f"{json_path}: calibrated for other classifier weights; "
                            "rerun python -m brainseg calibrate --data DIR")
    return calibration


def classifier_features(predictor: Predictor, images_u8: Sequence[np.ndarray], batch_size: int = 32,
                        desc: str = "features") -> np.ndarray:
    """``NxD`` pooled classifier features of many slices, as the Predictor computes them."""
    chunks = []
    for start in tqdm(range(0, len(images_u8), batch_size), desc=desc, unit="batch"):
        features, _ = predictor.classifier_outputs(predictor.batch(images_u8[start:start + batch_size]))
        chunks.append(features)
    return np.concatenate(chunks)


def _smallest_margin(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """The smallest margin (share of the range's span) that flags at most FALSE_ALARM_TARGET of ``values``."""
    span = high - low
    for margin in MARGINS:
        outside = ((values < low - margin * span) | (values > high + margin * span)).any(axis=1)
        if outside.mean() <= FALSE_ALARM_TARGET:
            return margin
    return MARGINS[-1]


PCA_COMPONENTS = 24
L2 = 1e-2


def fit_softmax(rows: np.ndarray, labels: np.ndarray, classes: int, l2: float = L2) -> tuple[np.ndarray, ...]:
    """Standardisation and a class-balanced, L2-regularised softmax regression (L-BFGS) on ``NxF`` rows: mean,
    std, weights ``CxF`` and bias ``C`` (calibration only)."""
    import torch
    x = torch.as_tensor(rows, dtype=torch.float32)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-4)
    x = (x - mean) / std
    y = torch.as_tensor(labels, dtype=torch.long)
    counts = torch.bincount(y, minlength=classes).float().clamp_min(1)
    weight = (counts.sum() / (classes * counts))
    weights = torch.zeros(classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights.T + bias, y, weight=weight) + l2 * (weights ** 2).sum()
        loss.backward()
        return loss
    optimiser.step(closure)
    return tuple(np.ascontiguousarray(t.detach().numpy()) for t in (mean, std, weights, bias))


def _not_lgg(model: tuple[np.ndarray, ...], rows: np.ndarray) -> np.ndarray:
    mean, std, weights, bias = model
    x = (np.asarray(rows, np.float32) - mean) / std
    return 1.0 - softmax(x @ weights.T + bias, axis=1)[:, 0]


def fit_content(rows: np.ndarray, labels: np.ndarray, val_rows: np.ndarray, classes: int) -> tuple[tuple, float]:
    """The content model and its threshold: the validation quantile that flags FALSE_ALARM_TARGET of LGG slices."""
    model = fit_softmax(rows, labels, classes)
    return model, float(np.quantile(_not_lgg(model, val_rows), 1 - FALSE_ALARM_TARGET))


def leave_one_type_out(rows: np.ndarray, labels: np.ndarray, types: Sequence[str], val_rows: np.ndarray,
                       classes: int) -> dict[str, dict]:
    """For each type of negative: fit without it, threshold on validation, and the share of it flagged."""
    types = np.asarray(types)
    result = {}
    for kind in sorted(set(types[labels > 0])):
        keep = types != kind
        model, threshold = fit_content(rows[keep], labels[keep], val_rows, classes)
        scores = _not_lgg(model, rows[types == kind])
        result[kind] = {"images": int((types == kind).sum()), "flagged": float((scores > threshold).mean())}
    return result


def calibrate(predictor: Predictor, train: Sequence[SliceRecord], val: Sequence[SliceRecord],
              weights_dir: str | Path = WEIGHTS_DIR, negative_records: Sequence[SliceRecord] | None = None) -> dict:
    """Fit ranges, neighbours and the content model on ``train`` (negatives made from ``negative_records``,
    default ``train``, and from package-shipped images), thresholds on ``val``; write them to ``weights_dir``."""
    from brainseg.negatives import FAMILIES, negatives  # development-only packages are imported there, lazily
    weights_dir = Path(weights_dir)
    train_images = [read_slice(r.image_path) for r in train]
    val_images = [read_slice(r.image_path) for r in val]
    train_statistics = [slice_statistics(image) for image in train_images]
    train_stats = np.array([[s[n] for n in INTENSITY_STATISTICS] for s in train_statistics])
    val_stats = np.array([[slice_statistics(image)[n] for n in INTENSITY_STATISTICS] for image in val_images])
    low, high = np.quantile(train_stats, 0.001, axis=0), np.quantile(train_stats, 0.999, axis=0)
    margin = _smallest_margin(val_stats, low, high)
    low, high = np.clip(low - margin * (high - low), 0, 1), np.clip(high + margin * (high - low), 0, 1)
    train_raw = classifier_features(predictor, train_images, desc="train")
    neighbours = unit_rows(train_raw)
    val_raw = classifier_features(predictor, val_images, desc="val")
    val_distance = feature_distance(val_raw, neighbours)

    flair = [np.repeat(image[..., 1:2], 3, axis=2) for image in train_images[::2]]   # FLAIR-only uploads are LGG too
    val_flair = [np.repeat(image[..., 1:2], 3, axis=2) for image in val_images]
    made = negatives(negative_records if negative_records is not None else train)
    families = tuple(FAMILIES)
    pca_mean, pca_components = principal_components(train_raw, PCA_COMPONENTS)
    thumbnail_mean, thumbnail_components = principal_components(np.stack([thumbnail(i) for i in train_images]),
                                                                PCA_COMPONENTS)
    projection = ContentModel(families, tuple(FAMILIES[f] for f in families), pca_mean, pca_components,
                              thumbnail_mean, thumbnail_components, *([np.zeros(0, np.float32)] * 4), 0.0)

    def rows_of(images: Sequence[np.ndarray], raw: np.ndarray | None = None, desc: str = "content") -> np.ndarray:
        raw = classifier_features(predictor, images, desc=desc) if raw is None else raw
        return np.stack([content_features(i, f, projection) for i, f in zip(images, raw)])

    positive_rows = np.concatenate([rows_of(train_images, train_raw), rows_of(flair, desc="FLAIR-only")])
    negative_rows = rows_of([image for _, _, image in made], desc="negatives")
    rows = np.concatenate([positive_rows, negative_rows])
    labels = np.array([0] * len(positive_rows) + [1 + families.index(family) for family, _, _ in made])
    types = ["lgg"] * len(positive_rows) + [f"{family}: {'derived' if source == 'derived' else 'packaged'}"
                                            for family, source, _ in made]
    val_rows = np.concatenate([rows_of(val_images, val_raw), rows_of(val_flair, desc="val FLAIR-only")])
    classes = 1 + len(families)
    (mean, std, weights, bias), threshold = fit_content(rows, labels, val_rows, classes)
    payload = {
        "method": "intensity ranges: training quantiles 0.1%-99.9% widened by a margin chosen on validation; "
                  f"learned: cosine distance to the {NEIGHBOURS}th nearest training feature, threshold = "
                  f"validation quantile {1 - FALSE_ALARM_TARGET:.3f}; content: softmax regression on brain "
                  f"histograms, channel structure and {PCA_COMPONENTS} principal components each of the classifier's "
                  "pooled features and of 16x16 thumbnails, LGG (three channels and FLAIR-only) against negatives made from training "
                  "patients and package-shipped images (brainseg.negatives), threshold = validation quantile "
                  f"{1 - FALSE_ALARM_TARGET:.3f} of P(not LGG) over validation slices and their FLAIR-only copies",
        "classifier_sha256": sha256(weights_dir / "classifier.safetensors"),
        "train_slices": len(train), "val_slices": len(val),
        "train_one_sequence_share": float(np.mean([s["identical_channels"] >= ONE_SEQUENCE_SHARE
                                                   for s in train_statistics])),
        "margin": margin,
        "low": dict(zip(INTENSITY_STATISTICS, low.round(4).tolist())),
        "high": dict(zip(INTENSITY_STATISTICS, high.round(4).tolist())),
        "distance_threshold": float(np.quantile(val_distance, 1 - FALSE_ALARM_TARGET)),
        "content_families": list(families),
        "content_reasons": [FAMILIES[f] for f in families],
        "content_threshold": threshold,
        "content_training": {"lgg": int((labels == 0).sum()),
                             **{t: int(sum(1 for x in types if x == t)) for t in sorted(set(types) - {"lgg"})}},
        "content_sources": sorted({source for _, source, _ in made}),
        "leave_one_type_out": leave_one_type_out(rows, labels, types, val_rows, classes),
    }
    save_file({"train_features": neighbours.astype(np.float16), "pca_mean": pca_mean, "pca_components": pca_components,
               "thumbnail_mean": thumbnail_mean, "thumbnail_components": thumbnail_components, "feature_mean": mean,
               "feature_std": std, "weights": weights, "bias": bias}, str(weights_dir / CHECK_TENSORS))
    record_checksum(weights_dir / CHECK_TENSORS)
    (weights_dir / CHECK_JSON).write_text(json.dumps(payload, indent=1) + "\n")
    return payload


# ---- measurement ----------------------------------------------------------------------------------

def variants(image_u8: np.ndarray) -> dict[str, np.ndarray]:
    """Altered copies of an LGG slice, named by what was done; ``EXPECTED`` says which should pass."""
    height, width = image_u8.shape[:2]
    jpeg = io.BytesIO()
    Image.fromarray(image_u8).save(jpeg, format="JPEG", quality=75)
    return {
        "rotated 90 degrees": np.ascontiguousarray(np.rot90(image_u8)),
        "flipped left-right": np.ascontiguousarray(image_u8[:, ::-1]),
        "FLAIR copied into all three channels": np.repeat(image_u8[..., 1:2], 3, axis=2),
        "JPEG quality 75": read_slice(jpeg.getvalue(), name="jpeg"),
        "cropped to a non-square 224x192": np.ascontiguousarray(image_u8[height // 8:-height // 8, width // 16:-width // 16]),
        "downsized to 128x128": np.asarray(Image.fromarray(image_u8).resize((128, 128), Image.BILINEAR)),
    }


EXPECTED = {  # variant: verdicts it may get
    "rotated 90 degrees": (OK,), "flipped left-right": (OK,), "FLAIR copied into all three channels": (OK,),
    "JPEG quality 75": (OK,), "cropped to a non-square 224x192": (CAUTION, FOREIGN),
    "downsized to 128x128": (CAUTION, FOREIGN),
}


def check_images(predictor: Predictor, images_u8: Sequence[np.ndarray], batch_size: int = 32) -> list[InputCheck]:
    """The check alone (classifier forward pass only) for many slices: what calibration and measurement use."""
    features = classifier_features(predictor, images_u8, batch_size, desc="check")
    return [assess(image, row, predictor.input_check) for image, row in zip(images_u8, features)]


def measure(predictor: Predictor, test: Sequence[SliceRecord], foreign_dir: Path | None) -> dict:
    """False alarms on ``test`` (every slice), the verdict of every foreign image and of LGG variants."""
    images = [read_slice(r.image_path) for r in test]
    checks = check_images(predictor, images)
    flagged = [r.name for r, c in zip(test, checks) if c.flagged]
    result: dict = {"test_slices": len(test), "test_flagged": len(flagged),
                    "test_false_alarm_rate": len(flagged) / max(len(test), 1), "test_flagged_files": flagged}
    picks = images[len(images) // 2::max(len(images) // 8, 1)][:8]
    result["variants"] = {}
    for name in EXPECTED:
        verdicts = [c.verdict for c in check_images(predictor, [variants(image)[name] for image in picks])]
        result["variants"][name] = {"slices": len(verdicts), "flagged": sum(v != OK for v in verdicts),
                                    "expected": "/".join(EXPECTED[name])}
    flair_checks = check_images(predictor, [np.repeat(image[..., 1:2], 3, axis=2) for image in images])
    result["test_flair_only_flagged"] = sum(c.flagged for c in flair_checks)
    if foreign_dir is not None:
        files = sorted(p for p in Path(foreign_dir).iterdir() if p.suffix.lower() in SUFFIXES)
        uploads = [read_slice(p) for p in files]
        for key, batch in (("foreign", uploads), ("foreign_resized_256", [resize_image(read_slice(
                encode_png(resize_image(image)), name="png")) for image in uploads])):
            found = check_images(predictor, batch)
            result[key] = {p.name: {"verdict": c.verdict, "score": round(c.score, 3), "reasons": list(c.reasons)}
                           for p, c in zip(files, found)}
            result[f"{key}_flagged"] = f"{sum(c.flagged for c in found)}/{len(found)}"
    return result


def summary(result: dict) -> str:
    """Markdown lines for the model card."""
    lines = [f"- False alarms on the test split: {result['test_flagged']} of {result['test_slices']} slices "
             f"({100 * result['test_false_alarm_rate']:.1f}%)."]
    if "test_flair_only_flagged" in result:
        lines.append(f"- The same test slices with only their FLAIR channel (copied to three): "
                     f"{result['test_flair_only_flagged']} flagged.")
    if "foreign_resized_256" in result:
        lines.append(f"- Foreign images resized to 256x256 (PNG): {result['foreign_resized_256_flagged']} flagged.")
    if "foreign" in result:
        lines.append(f"- Foreign images flagged as uploaded: {result['foreign_flagged']}.")
        lines += [f"  - {name}: {entry['verdict']}: {'; '.join(entry['reasons'])}" for name, entry in result["foreign"].items()]
    lines.append("- LGG test slices altered (flagged / slices, expected verdict):")
    lines += [f"  - {name}: {v['flagged']}/{v['slices']} (expected {v['expected']})" for name, v in result["variants"].items()]
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"))
    parser.add_argument("--weights", default=str(WEIGHTS_DIR), help="folder with the safetensors files; output goes here")
    parser.add_argument("--every", type=int, default=3, help="use every Nth training slice (default 3)")
    parser.add_argument("--foreign", help="folder of non-LGG images to report on (e.g. ../shared/foreign)")
    parser.add_argument("--no-measure", action="store_true", help="skip the test-split measurement")


def run(args: argparse.Namespace) -> dict:
    from brainseg.inference import Predictor  # inference imports this module for assess()
    records = index_dataset(args.data)
    split = load_split(args.split_file)
    predictor = Predictor(args.weights, check=False)
    train = select(records, split["train"])
    payload = calibrate(predictor, train[::args.every], select(records, split["val"]), args.weights, train)
    print(json.dumps({k: v for k, v in payload.items() if k not in ("method", "content_reasons")}, indent=1))
    if args.no_measure:
        return payload
    predictor = Predictor(args.weights)
    result = measure(predictor, select(records, split["test"]), Path(args.foreign) if args.foreign else None)
    (Path(args.weights) / "input_check_measurement.json").write_text(json.dumps(result, indent=1) + "\n")
    print(summary(result))
    return payload
