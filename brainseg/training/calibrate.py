"""Fit the input check (``brainseg calibrate``): its ranges and models on the training split, thresholds on the
validation patients; then measure it on the test split, altered LGG slices and foreign images.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from scipy.special import expit, logit, softmax
from tqdm import tqdm

from brainseg.check.assess import (
    CAUTION,
    CHECK_JSON,
    CHECK_TENSORS,
    FOREIGN,
    NEIGHBOURS,
    OK,
    ONE_SEQUENCE_SHARE,
    ContentModel,
    InputCheck,
    assess_many,
    content_features,
    feature_distance,
    mahalanobis,
    measure_brain,
    reslice_anisotropy,
    slice_statistics,
    t1_evidence,
    thumbnail,
    unit_rows,
)
from brainseg.check.sequence import SequenceModel, order_warning, to_tensors, volume_looks_t1
from brainseg.data.index import SliceRecord, by_patient
from brainseg.inference.predictor import Predictor
from brainseg.io.slices import SUFFIXES, encode_png, read_slice
from brainseg.models.weights import record_checksum, sha256
from brainseg.paths import WEIGHTS_DIR
from brainseg.preprocess import resize_image
from brainseg.training.sequence import (
    FLAIR,
    T1,
    grey_volumes,
    out_of_fold,
    slice_logits,
    train_members,
    volume_means,
    volume_threshold,
)

INTENSITY_STATISTICS = tuple(f"{kind}_{c}" for c in range(3) for kind in ("mean", "std"))
FALSE_ALARM_TARGET = 0.005  # share of validation slices the intensity layer may flag; the three learned scores
# together may flag as many of them and of their FLAIR-only copies
RESLICE_MARGIN = 1.5  # the reslice layer flags above this times the largest value of the validation slices
MARGINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)  # candidate widenings of the training range, as a share of its span


def principal_components(rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the first ``count`` principal directions (``count x D``) of ``NxD`` rows (calibration only)."""
    import torch

    x = torch.as_tensor(np.asarray(rows, np.float32))
    mean = x.mean(0)
    _, _, vectors = torch.linalg.svd(x - mean, full_matrices=False)
    return mean.numpy(), np.ascontiguousarray(vectors[:count].numpy())


def classifier_features(
    predictor: Predictor, images_u8: Sequence[np.ndarray], batch_size: int = 32, desc: str = "features"
) -> np.ndarray:
    """Pooled classifier features of many slices, as the Predictor computes them.

    Args:
        predictor: the models whose classifier runs.
        images_u8: ``HxWx3 uint8`` slices.
        batch_size: slices per classifier call.
        desc: the progress bar's label.

    Returns:
        ``NxD`` features, one row per slice.
    """
    chunks = []
    for start in tqdm(range(0, len(images_u8), batch_size), desc=desc, unit="batch"):
        features, _ = predictor.classifier_outputs(predictor.batch(images_u8[start : start + batch_size]))
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
SHRINK = 0.1  # covariance shrinkage towards the identity for the one-class distance


def fit_softmax(rows: np.ndarray, labels: np.ndarray, classes: int, l2: float = L2) -> tuple[np.ndarray, ...]:
    """Standardisation and a class-balanced, L2-regularised softmax regression (L-BFGS) on rows (calibration only).

    Args:
        rows: ``NxF`` content-feature rows.
        labels: ``N`` class indices in ``0 .. classes - 1``.
        classes: the number of classes ``C``.
        l2: weight of the L2 penalty on the weights.

    Returns:
        Mean ``F``, std ``F``, weights ``CxF`` and bias ``C``.
    """
    import torch

    x = torch.as_tensor(rows, dtype=torch.float32)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-4)
    x = (x - mean) / std
    y = torch.as_tensor(labels, dtype=torch.long)
    counts = torch.bincount(y, minlength=classes).float().clamp_min(1)
    weight = counts.sum() / (classes * counts)
    weights = torch.zeros(classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights.T + bias, y, weight=weight) + l2 * (weights**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return tuple(np.ascontiguousarray(t.detach().numpy()) for t in (mean, std, weights, bias))


def _not_lgg(model: tuple[np.ndarray, ...], rows: np.ndarray) -> np.ndarray:
    mean, std, weights, bias = model
    x = (np.asarray(rows, np.float32) - mean) / std
    return 1.0 - softmax(x @ weights.T + bias, axis=1)[:, 0]


def fit_one_class(lgg_rows: np.ndarray, shrink: float = SHRINK) -> tuple[np.ndarray, ...]:
    """Mean, spread and precision (inverse shrunk covariance of the standardised rows) of ``NxF`` LGG content
    rows: the one-class part of :class:`~brainseg.check.assess.ContentModel` (unclipped: clipping the rows at
    5, 10 or 20 sd caught fewer left-out package images at the same validation false alarms)."""
    rows = np.asarray(lgg_rows, np.float64)
    mean, std = rows.mean(0), np.maximum(rows.std(0), 1e-4)
    z = (rows - mean) / std
    covariance = (1 - shrink) * np.cov(z.T) + shrink * np.eye(z.shape[1])
    return tuple(np.ascontiguousarray(a, np.float32) for a in (mean, std, np.linalg.inv(covariance)))


def validation_threshold(scores: np.ndarray, groups: np.ndarray) -> float:
    """The score above which at most FALSE_ALARM_TARGET of each group of validation rows lies (the groups:
    three-channel slices and their FLAIR-only copies, so that neither kind of upload is flagged more)."""
    return float(max(np.quantile(scores[groups == g], 1 - FALSE_ALARM_TARGET) for g in np.unique(groups)))


def joint_thresholds(scores: Sequence[np.ndarray], groups: np.ndarray) -> list[float]:
    """Thresholds for several scores of the validation rows, chosen together: each score less its own
    :func:`validation_threshold`, then the largest of those excesses thresholded again, so that between them they
    flag at most FALSE_ALARM_TARGET of each group. Scores on a log scale (log-odds, log distances): a ratio to the
    threshold would leave a probability no room above it."""
    scales = [validation_threshold(score, groups) for score in scores]
    joint = validation_threshold(np.max([score - scale for score, scale in zip(scores, scales)], axis=0), groups)
    return [scale + joint for scale in scales]


def fit_content(
    rows: np.ndarray,
    labels: np.ndarray,
    one_class: tuple[np.ndarray, ...],
    val_rows: np.ndarray,
    val_neighbour_distance: np.ndarray,
    val_groups: np.ndarray,
    classes: int,
) -> tuple[tuple, float, float, float]:
    """The softmax regression and the thresholds of the three learned scores, chosen together on validation
    (:func:`joint_thresholds`): P(not LGG), the one-class distance and the k-NN feature distance.

    Args:
        rows: ``NxF`` training content rows, LGG and negatives.
        labels: ``N`` class indices: 0 LGG, then one per negative family.
        one_class: mean, spread and precision of the LGG rows (:func:`fit_one_class`).
        val_rows: ``VxF`` validation content rows.
        val_neighbour_distance: ``V`` k-NN cosine feature distances of the validation rows.
        val_groups: ``V`` group per validation row (three-channel slices, FLAIR-only copies).
        classes: the number of classes.

    Returns:
        The regression (:func:`fit_softmax`), and the thresholds of P(not LGG), the one-class distance and the
        k-NN feature distance.
    """
    model = fit_softmax(rows, labels, classes)
    log_odds = logit(np.clip(_not_lgg(model, val_rows), 1e-7, 1 - 1e-7))
    thresholds = joint_thresholds(
        [log_odds, np.log(mahalanobis(val_rows, *one_class)), np.log(val_neighbour_distance)], val_groups
    )
    return model, float(expit(thresholds[0])), float(np.exp(thresholds[1])), float(np.exp(thresholds[2]))


def leave_one_type_out(
    rows: np.ndarray,
    labels: np.ndarray,
    types: Sequence[str],
    one_class: tuple[np.ndarray, ...],
    val_rows: np.ndarray,
    val_neighbour_distance: np.ndarray,
    val_groups: np.ndarray,
    classes: int,
    resliced: np.ndarray,
) -> dict[str, dict]:
    """For each type of negative: fit without it, thresholds on validation, and the share of it flagged (by either
    content score, or by the reslice layer, which learns from no negative; the one-class part never sees negatives
    either).

    Args:
        rows: ``NxF`` training content rows, LGG and negatives.
        labels: ``N`` class indices: 0 LGG, then one per negative family.
        types: ``N`` row types: ``"lgg"`` or ``"<family>: derived"`` / ``"<family>: packaged"``.
        one_class: mean, spread and precision of the LGG rows (:func:`fit_one_class`).
        val_rows: ``VxF`` validation content rows.
        val_neighbour_distance: ``V`` k-NN cosine feature distances of the validation rows.
        val_groups: ``V`` group per validation row (three-channel slices, FLAIR-only copies).
        classes: the number of classes.
        resliced: ``N`` bool, per row: whether the reslice layer flags it.

    Returns:
        By negative type: ``images``, ``flagged``, ``flagged_by_content`` and ``flagged_by_reslice``.
    """
    types = np.asarray(types)
    result = {}
    for kind in sorted(set(types[labels > 0])):
        keep = types != kind
        model, threshold, distance_threshold, _ = fit_content(
            rows[keep], labels[keep], one_class, val_rows, val_neighbour_distance, val_groups, classes
        )
        left_out = rows[types == kind]
        content = (_not_lgg(model, left_out) > threshold) | (mahalanobis(left_out, *one_class) > distance_threshold)
        reslice = resliced[types == kind]
        result[kind] = {
            "images": int(len(left_out)),
            "flagged": float((content | reslice).mean()),
            "flagged_by_content": float(content.mean()),
            "flagged_by_reslice": float(reslice.mean()),
        }
    return result


def calibrate(
    predictor: Predictor,
    train: Sequence[SliceRecord],
    val: Sequence[SliceRecord],
    folds: Sequence[Sequence[str]],
    weights_dir: str | Path = WEIGHTS_DIR,
    negative_records: Sequence[SliceRecord] | None = None,
) -> dict:
    """Fit ranges, neighbours and the content model on ``train``, thresholds on ``val``, the grey-sequence members
    on the development folds; write them to ``weights_dir``.

    Args:
        predictor: the models whose classifier features the check uses.
        train: the training slices.
        val: the validation slices.
        folds: the held-out patients of each development fold (patients of ``negative_records`` and ``val``).
        weights_dir: where the classifier is and the calibration is written.
        negative_records: the slices negatives are made from (besides package-shipped images); ``None``: ``train``.

    Returns:
        The payload written to ``input_check.json``.
    """
    from brainseg.training.negatives import FAMILIES, negatives  # development-only packages are imported there, lazily

    weights_dir = Path(weights_dir)
    train_images = [read_slice(r.image_path) for r in train]
    val_images = [read_slice(r.image_path) for r in val]
    train_statistics = [slice_statistics(image) for image in train_images]
    train_stats = np.array([[s[n] for n in INTENSITY_STATISTICS] for s in train_statistics])
    val_statistics = [slice_statistics(image) for image in val_images]
    val_stats = np.array([[s[n] for n in INTENSITY_STATISTICS] for s in val_statistics])
    low, high = np.quantile(train_stats, 0.001, axis=0), np.quantile(train_stats, 0.999, axis=0)
    margin = _smallest_margin(val_stats, low, high)
    low, high = np.clip(low - margin * (high - low), 0, 1), np.clip(high + margin * (high - low), 0, 1)
    train_raw = classifier_features(predictor, train_images, desc="train")
    neighbours = unit_rows(train_raw)
    val_raw = classifier_features(predictor, val_images, desc="val")

    flair = [np.repeat(image[..., 1:2], 3, axis=2) for image in train_images[::2]]  # FLAIR-only uploads are LGG too
    val_flair = [np.repeat(image[..., 1:2], 3, axis=2) for image in val_images]
    made = negatives(negative_records if negative_records is not None else train)
    sequence_model, sequence_threshold, sequence_validation = fit_sequence(
        [*(negative_records if negative_records is not None else train), *val], folds
    )
    reslice_threshold = RESLICE_MARGIN * max(
        [s["reslice_anisotropy"] for s in val_statistics]
        + [reslice_anisotropy(measure_brain(image)) for image in val_flair]
    )
    resliced = np.array([reslice_anisotropy(measure_brain(image)) > reslice_threshold for _, _, image in made])
    families = tuple(FAMILIES)
    pca_mean, pca_components = principal_components(train_raw, PCA_COMPONENTS)
    thumbnail_mean, thumbnail_components = principal_components(
        np.stack([thumbnail(i) for i in train_images]), PCA_COMPONENTS
    )
    projection = ContentModel(
        families,
        tuple(FAMILIES[f] for f in families),
        pca_mean,
        pca_components,
        thumbnail_mean,
        thumbnail_components,
        *([np.zeros(0, np.float32)] * 4),
        0.0,
        *([np.zeros(0, np.float32)] * 3),
        0.0,
    )

    def rows_of(images: Sequence[np.ndarray], raw: np.ndarray | None = None, desc: str = "content") -> np.ndarray:
        raw = classifier_features(predictor, images, desc=desc) if raw is None else raw
        return np.stack([content_features(i, f, projection) for i, f in zip(images, raw)])

    positive_rows = np.concatenate([rows_of(train_images, train_raw), rows_of(flair, desc="FLAIR-only")])
    negative_rows = rows_of([image for _, _, image in made], desc="negatives")
    rows = np.concatenate([positive_rows, negative_rows])
    labels = np.array([0] * len(positive_rows) + [1 + families.index(family) for family, _, _ in made])
    types = ["lgg"] * len(positive_rows) + [
        f"{family}: {'derived' if source == 'derived' else 'packaged'}" for family, source, _ in made
    ]
    resliced_rows = np.concatenate([np.zeros(len(positive_rows), bool), resliced])
    val_flair_raw = classifier_features(predictor, val_flair, desc="val FLAIR-only")
    val_rows = np.concatenate([rows_of(val_images, val_raw), rows_of(val_flair, val_flair_raw)])
    val_distance = feature_distance(np.concatenate([val_raw, val_flair_raw]), neighbours)
    classes = 1 + len(families)
    one_class = fit_one_class(positive_rows)
    val_groups = np.repeat([0, 1], [len(val_images), len(val_flair)])
    (mean, std, weights, bias), threshold, distance_threshold, neighbour_threshold = fit_content(
        rows, labels, one_class, val_rows, val_distance, val_groups, classes
    )
    payload = {
        "method": "intensity ranges: training quantiles 0.1%-99.9% widened by a margin chosen on validation; "
        f"reslice layer: checks.reslice_anisotropy above {RESLICE_MARGIN:g}x its largest value on the "
        "validation slices and their FLAIR-only copies; "
        f"learned: (1) cosine distance to the {NEIGHBOURS}th nearest training feature; content, on brain "
        f"histograms, channel structure and {PCA_COMPONENTS} principal components each of the "
        "classifier's pooled features and of 16x16 thumbnails: (2) a softmax regression of LGG (three "
        "channels and FLAIR-only) against negatives made from training patients and package-shipped "
        "images (brainseg.training.negatives), (3) a one-class Mahalanobis distance to the LGG training rows "
        f"(standardised, covariance shrunk {SHRINK:g} towards the identity); the thresholds of (1)-(3) "
        "together (log-odds and log distances, each less its validation quantile, the largest excess at "
        f"the validation quantile) so that between them they flag at most {100 * FALSE_ALARM_TARGET:g}% "
        "of the validation slices and at most as many of their FLAIR-only copies",
        "classifier_sha256": sha256(weights_dir / "classifier.safetensors"),
        "train_slices": len(train),
        "val_slices": len(val),
        "train_one_sequence_share": float(
            np.mean([s["identical_channels"] >= ONE_SEQUENCE_SHARE for s in train_statistics])
        ),
        "margin": margin,
        "reslice_threshold": reslice_threshold,
        "sequence_threshold": sequence_threshold,
        "sequence_validation": sequence_validation,
        "low": dict(zip(INTENSITY_STATISTICS, low.round(4).tolist())),
        "high": dict(zip(INTENSITY_STATISTICS, high.round(4).tolist())),
        "distance_threshold": neighbour_threshold,
        "content_families": list(families),
        "content_reasons": [FAMILIES[f] for f in families],
        "content_threshold": threshold,
        "content_distance_threshold": distance_threshold,
        "content_training": {
            "lgg": int((labels == 0).sum()),
            **{t: int(sum(1 for x in types if x == t)) for t in sorted(set(types) - {"lgg"})},
        },
        "content_sources": sorted({source for _, source, _ in made}),
        "leave_one_type_out": leave_one_type_out(
            rows, labels, types, one_class, val_rows, val_distance, val_groups, classes, resliced_rows
        ),
    }
    save_file(
        {
            "train_features": neighbours.astype(np.float16),
            "pca_mean": pca_mean,
            "pca_components": pca_components,
            "thumbnail_mean": thumbnail_mean,
            "thumbnail_components": thumbnail_components,
            "feature_mean": mean,
            "feature_std": std,
            "weights": weights,
            "bias": bias,
            "lgg_mean": one_class[0],
            "lgg_std": one_class[1],
            "lgg_precision": one_class[2],
            **to_tensors(sequence_model),
        },
        str(weights_dir / CHECK_TENSORS),
    )
    record_checksum(weights_dir / CHECK_TENSORS)
    (weights_dir / CHECK_JSON).write_text(json.dumps(payload, indent=1) + "\n")
    return payload


def fit_sequence(
    development: Sequence[SliceRecord], folds: Sequence[Sequence[str]]
) -> tuple[SequenceModel, float, dict]:
    """The grey-sequence members, one per fold of the ``development`` patients; the volume threshold from their
    out-of-fold logits (:func:`brainseg.training.sequence.volume_threshold`); and what the out-of-fold members
    did with it, on grey volumes and on channel order."""
    volumes = grey_volumes(development)
    model = train_members(volumes, folds)
    member_of = out_of_fold(model, folds)
    means = volume_means(slice_logits(volumes, member_of))
    threshold = volume_threshold(means)
    return (
        model,
        threshold,
        {
            "rule": "members trained on the development folds; a volume looks T1 when its mean logit is above the "
            "midpoint between the highest FLAIR and the lowest T1 volume, out of fold (at the highest FLAIR "
            "volume where they overlap)",
            "flair_volumes": [round(m, 3) for _, label, m in means if label == FLAIR],
            "t1_volumes": [round(m, 3) for _, label, m in means if label == T1],
            "t1_volumes_flagged": f"{sum(m > threshold for _, label, m in means if label == T1)}/"
            f"{sum(label == T1 for _, label, _ in means)}",
            "channel_order": order_counts(development, member_of, threshold),
        },
    )


def sequence_volumes(predictor: Predictor, records: Sequence[SliceRecord]) -> dict[str, str]:
    """How many of the patients' grey FLAIR and grey T1 volumes the check says look like T1 (the app's
    :func:`~brainseg.check.sequence.volume_looks_t1` over each grey slice's ``t1_evidence``)."""
    counts = {FLAIR: [0, 0], T1: [0, 0]}
    for _, label, slices in tqdm(grey_volumes(records), desc="grey volumes", unit="volume"):
        evidence = t1_evidence(
            [np.repeat(grey[..., None], 3, axis=2) for grey in slices], [True] * len(slices), predictor.input_check
        )
        counts[label][0] += volume_looks_t1(evidence)
        counts[label][1] += 1
    return {
        "flair_volumes_flagged": f"{counts[FLAIR][0]}/{counts[FLAIR][1]}",
        "t1_volumes_flagged": f"{counts[T1][0]}/{counts[T1][1]}",
    }


PERMUTATIONS = ((0, 2, 1), (1, 0, 2), (2, 1, 0), (1, 2, 0), (2, 0, 1))  # every channel order but the dataset's


def order_counts(records: Sequence[SliceRecord], model_of: Callable[[str], SequenceModel], threshold: float) -> dict:
    """How often :func:`brainseg.check.sequence.order_warning` (with ``model_of(patient)``) warns about the patients'
    three-channel volumes as they are, in the other orders that put another sequence in the middle, and in those that
    leave FLAIR there (pre- and post-contrast swapped, or a copy of FLAIR that the dataset filled in for a missing
    sequence moved to the middle).

    Args:
        records: the patients' slices.
        model_of: the grey-sequence model to use for a patient (e.g. its out-of-fold member).
        threshold: the volume mean logit above which a channel looks T1.

    Returns:
        ``as_is_warned``, ``flair_moved_warned`` and ``flair_in_middle_warned`` as ``"warned/total"``, and
        ``as_is_warned_patients``.
    """
    counts = {"as_is": [0, 0], "flair_moved": [0, 0], "flair_in_middle": [0, 0]}
    warned_as_is = []
    for patient, rows in tqdm(by_patient(records).items(), desc="channel order", unit="patient"):
        volume = [read_slice(r.image_path) for r in rows]
        for order in [(0, 1, 2), *PERMUTATIONS]:
            permuted = [np.ascontiguousarray(image[..., order]) for image in volume]
            if order != (0, 1, 2) and all(np.array_equal(a, b) for a, b in zip(permuted, volume)):
                continue  # every slice unchanged (a filled channel swapped with FLAIR)
            flair_in_middle = all(np.array_equal(a[..., 1], b[..., 1]) for a, b in zip(permuted, volume))
            kind = "as_is" if order == (0, 1, 2) else "flair_in_middle" if flair_in_middle else "flair_moved"
            warned = bool(order_warning(permuted, model_of(patient), threshold))
            counts[kind][0] += warned
            counts[kind][1] += 1
            if warned and kind == "as_is":
                warned_as_is.append(patient)
    return {
        **{f"{kind}_warned": f"{hit}/{total}" for kind, (hit, total) in counts.items()},
        "as_is_warned_patients": warned_as_is,
    }


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
        "cropped to a non-square 224x192": np.ascontiguousarray(
            image_u8[height // 8 : -height // 8, width // 16 : -width // 16]
        ),
        "downsized to 128x128": np.asarray(Image.fromarray(image_u8).resize((128, 128), Image.BILINEAR)),
    }


EXPECTED = {  # variant: verdicts it may get
    "rotated 90 degrees": (OK,),
    "flipped left-right": (OK,),
    "FLAIR copied into all three channels": (OK,),
    "JPEG quality 75": (OK,),
    "cropped to a non-square 224x192": (CAUTION, FOREIGN),
    "downsized to 128x128": (CAUTION, FOREIGN),
}


def check_images(predictor: Predictor, images_u8: Sequence[np.ndarray], batch_size: int = 32) -> list[InputCheck]:
    """The check alone (classifier forward pass only) for many slices: what calibration and measurement use.

    Args:
        predictor: the models, with a loaded input check.
        images_u8: ``HxWx3 uint8`` slices.
        batch_size: slices per batch.

    Returns:
        One input check per slice.
    """
    features = classifier_features(predictor, images_u8, batch_size, desc="check")
    return [
        check
        for start in range(0, len(images_u8), batch_size)
        for check in assess_many(
            images_u8[start : start + batch_size], features[start : start + batch_size], predictor.input_check
        )
    ]


def measure(
    predictor: Predictor, test: Sequence[SliceRecord], foreign_dir: Path | None, samples: Sequence[SliceRecord] = ()
) -> dict:
    """False alarms on ``test`` (every slice, as they are and altered by each of :func:`variants`) and on the
    tumour slices of ``samples``; the verdict of every foreign image, as uploaded and resized to 256x256.

    Args:
        predictor: the models, with a loaded input check.
        test: the test slices.
        foreign_dir: a folder of foreign images (``SUFFIXES`` files); ``None`` skips them.
        samples: slices whose tumour slices are checked too (the bundled samples).

    Returns:
        The figures: test false alarms, each variant's flagged count, grey-volume and channel-order counts (with a
        sequence model), the samples' and the foreign images' verdicts.
    """
    images = [read_slice(r.image_path) for r in test]
    checks = check_images(predictor, images)
    flagged = [r.name for r, c in zip(test, checks) if c.flagged]
    result: dict = {
        "test_slices": len(test),
        "test_flagged": len(flagged),
        "test_false_alarm_rate": len(flagged) / max(len(test), 1),
        "test_flagged_files": flagged,
    }
    result["variants"] = {}
    for name in EXPECTED:
        verdicts = [c.verdict for c in check_images(predictor, [variants(image)[name] for image in images])]
        result["variants"][name] = {
            "slices": len(verdicts),
            "flagged": sum(v != OK for v in verdicts),
            "expected": "/".join(EXPECTED[name]),
        }
    result["test_flair_only_flagged"] = result["variants"]["FLAIR copied into all three channels"]["flagged"]
    if predictor.input_check.sequence is not None:
        result["test_grey_volumes"] = sequence_volumes(predictor, test)
        check = predictor.input_check
        result["test_channel_order"] = order_counts(test, lambda _: check.sequence, check.sequence_threshold)
    tumour = [read_slice(r.image_path) for r in samples if r.tumour]
    result["sample_tumour_slices"] = len(tumour)
    result["sample_tumour_flagged"] = sum(c.flagged for c in check_images(predictor, tumour)) if tumour else 0
    if foreign_dir is not None:
        files = sorted(p for p in Path(foreign_dir).iterdir() if p.suffix.lower() in SUFFIXES)
        uploads = [read_slice(p) for p in files]
        for key, batch in (
            ("foreign", uploads),
            (
                "foreign_resized_256",
                [resize_image(read_slice(encode_png(resize_image(image)), name="png")) for image in uploads],
            ),
        ):
            found = check_images(predictor, batch)
            result[key] = {
                p.name: {"verdict": c.verdict, "score": round(c.score, 3), "reasons": list(c.reasons)}
                for p, c in zip(files, found)
            }
            result[f"{key}_flagged"] = f"{sum(c.flagged for c in found)}/{len(found)}"
    return result


def summary(result: dict) -> str:
    """Markdown lines for the model card."""
    lines = [
        f"- False alarms on the test split: {result['test_flagged']} of {result['test_slices']} slices "
        f"({100 * result['test_false_alarm_rate']:.1f}%)."
    ]
    lines.append(
        f"- The same test slices with only their FLAIR channel (copied to three): "
        f"{result['test_flair_only_flagged']} flagged."
    )
    if "test_grey_volumes" in result:
        grey = result["test_grey_volumes"]
        lines.append(
            f"- Test patients as grey single-sequence volumes, said to look like T1: FLAIR "
            f"{grey['flair_volumes_flagged']}, T1 (pre- or post-contrast) {grey['t1_volumes_flagged']}."
        )
    if "test_channel_order" in result:
        order = result["test_channel_order"]
        lines.append(
            f"- Test patients' three-channel volumes said to be out of order: as they are "
            f"{order['as_is_warned']}, FLAIR moved out of the middle {order['flair_moved_warned']}, "
            f"FLAIR (or a copy of it) left in the middle {order['flair_in_middle_warned']}."
        )
    lines.append(
        f"- Bundled sample patients' tumour slices: {result['sample_tumour_flagged']} of "
        f"{result['sample_tumour_slices']} flagged."
    )
    if "foreign_resized_256" in result:
        lines.append(f"- Foreign images resized to 256x256 (PNG): {result['foreign_resized_256_flagged']} flagged.")
    if "foreign" in result:
        lines.append(f"- Foreign images flagged as uploaded: {result['foreign_flagged']}.")
        lines += [
            f"  - {name}: {entry['verdict']}: {'; '.join(entry['reasons'])}"
            for name, entry in result["foreign"].items()
        ]
    lines.append("- LGG test slices altered (flagged / slices, expected verdict):")
    lines += [
        f"  - {name}: {v['flagged']}/{v['slices']} (expected {v['expected']})" for name, v in result["variants"].items()
    ]
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------------------------
