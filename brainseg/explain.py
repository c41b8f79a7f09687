"""Why the classifier decided (class activation maps) and how sure the segmenter is (test-time augmentation).

Everything runs through a loaded :class:`brainseg.inference.Predictor` (its models, device and precision):

- ``activation_maps(predictor, images_u8) -> list[HxW float32]``: LayerCAM (default) or Grad-CAM of the
  classifier's tumour log-odds at a ResNet50 stage, scaled to 0..1, at each image's own size
  (:func:`brainseg.viz.cam_overlay` blends one into the slice). Written here rather than taken from the ``grad-cam`` package, which imports
  scikit-learn, OpenCV and matplotlib (117 MB of the app server's memory); tests check both agree.
- ``tta_predict_many(predictor, images_u8, members)``: the segmenter run on flipped (and optionally shifted)
  copies, mapped back and averaged; the members' spread is the per-pixel uncertainty.
- ``python -m brainseg explain``: heat-map hit rates and TTA against the plain model on a split.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from brainseg.data import SliceRecord, by_patient
from brainseg.evaluate import Evaluated, evaluation_records, report
from brainseg.inference import Prediction, Predictor, pipeline_settings
from brainseg.io import read_mask, read_slice
from brainseg.preprocess import brain_pixels, restore_size
from brainseg.weights import WEIGHTS_DIR

# ---- class activation maps -----------------------------------------------------------------------

STAGES = ("layer1", "layer2", "layer3", "layer4")
CAM_METHODS = ("layercam", "gradcam")
SHIPPED_CAM = ("layercam", "layer1")   # chosen on the validation patients: python -m brainseg explain --split val


def activation_maps(predictor: Predictor, images_u8: Sequence[np.ndarray], method: str = SHIPPED_CAM[0],
                    layer: str = SHIPPED_CAM[1]) -> list[np.ndarray]:
    """``HxW float32`` heat maps in 0..1 of what raised the classifier's tumour log-odds, one per image.

    ``method`` "layercam" (Jiang et al. 2021) weighs each activation of ``backbone.<layer>`` by its positive
    gradient, pixel by pixel; "gradcam" (Selvaraju et al. 2017) weighs each channel by its mean gradient.
    The target is the tumour logit minus the no-tumour logit. The stages up to ``layer`` run without a graph
    and ``torch.autograd.grad`` asks for the gradient of their output alone: no hooks and no ``.grad`` on the
    shared classifier, so concurrent predictions of other sessions are untouched. A map is all zeros where
    nothing pushed towards "tumour" (positive evidence only).
    """
    if method not in CAM_METHODS or layer not in STAGES:
        raise ValueError(f"unknown map {method!r} at {layer!r}: methods {CAM_METHODS}, layers {STAGES}")
    backbone, depth = predictor.classifier.backbone, STAGES.index(layer) + 1
    batch = predictor.tensors(images_u8)
    with torch.no_grad(), predictor.autocast():
        features = backbone.maxpool(backbone.act1(backbone.bn1(backbone.conv1(predictor.classifier.resize(batch)))))
        for stage in STAGES[:depth]:
            features = getattr(backbone, stage)(features)
    activations = features.float().requires_grad_()
    with torch.enable_grad(), predictor.autocast():
        deeper = activations
        for stage in STAGES[depth:]:
            deeper = getattr(backbone, stage)(deeper)
        logits = predictor.classifier.head(deeper.float()).float()
        gradients, = torch.autograd.grad((logits[:, 1] - logits[:, 0]).sum(), activations)
    activations = activations.detach()
    if method == "layercam":
        maps = (gradients.clamp(min=0) * activations).sum(1)
    else:
        maps = (gradients.mean((2, 3), keepdim=True) * activations).sum(1)
    maps = F.interpolate(maps.clamp(min=0)[:, None], size=batch.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = maps.amin((1, 2), keepdim=True)
    maps = ((maps - low) / (maps.amax((1, 2), keepdim=True) - low + 1e-7)).cpu().numpy()
    return [restore_size(heat, image.shape[:2]) for heat, image in zip(maps, images_u8)]


def peak_in_tumour(heat: np.ndarray, truth: np.ndarray) -> bool:
    """True when the heat map's highest pixel lies inside the true tumour mask."""
    return bool(truth.flat[int(np.argmax(heat))])


def cam_hit_rates(records: Sequence[SliceRecord], predictor: Predictor, gate: float,
                  maps: Sequence[tuple[str, str]] = (SHIPPED_CAM,), batch_size: int = 8) -> dict:
    """How often each map's peak (``(method, layer)`` of :func:`activation_maps`) falls inside the true
    tumour, over the tumour slices of ``records``.

    ``chance`` is what a uniformly random brain pixel would score (mean tumour share of the brain), the
    floor a map must beat to show it looks at the tumour at all; ``hit_rate_called`` counts only the
    slices whose classifier probability reaches ``gate``.
    """
    tumour = [r for r in records if r.tumour]
    names = [f"{method}/{layer}" for method, layer in maps]
    hits: dict[str, list[bool]] = {name: [] for name in names}
    chance, classified = [], []
    for start in range(0, len(tumour), batch_size):
        chunk = tumour[start:start + batch_size]
        images = [read_slice(r.image_path) for r in chunk]
        truths = [read_mask(r.mask_path, shape=image.shape[:2]) for r, image in zip(chunk, images)]
        for name, (method, layer) in zip(names, maps):
            hits[name] += [peak_in_tumour(heat, truth)
                           for heat, truth in zip(activation_maps(predictor, images, method, layer), truths)]
        chance += [truth.sum() / max(int(brain_pixels(image).sum()), 1) for image, truth in zip(images, truths)]
        classified += [p.tumour_probability for p in predictor.predict_many(images, batch_size)]
    called = np.array(classified) >= gate

    def rates(name: str) -> dict[str, float]:
        found = np.array(hits[name], bool)
        return {"hit_rate": float(found.mean()) if len(found) else float("nan"),
                "hit_rate_called": float(found[called].mean()) if called.any() else float("nan")}

    return {
        "aggregation": "per slice, tumour slices only: share whose heat-map peak pixel lies inside the true mask",
        "target": "tumour logit minus no-tumour logit",
        "patients": len(by_patient(tumour)),
        "tumour_slices": len(tumour),
        "called_tumour_slices": int(called.sum()),
        "chance": float(np.mean(chance)) if len(tumour) else float("nan"),
        "shipped": "/".join(SHIPPED_CAM),
        "maps": {name: rates(name) for name in names},
    }


# ---- test-time augmentation ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Augmentation:
    """One TTA member: flip left-right and/or up-down, then shift by ``(dy, dx)`` model pixels.

    Shifts roll the image round; at a few pixels only background wraps over the edges.
    """

    flip_lr: bool = False
    flip_ud: bool = False
    shift: tuple[int, int] = (0, 0)

    def _flip_dims(self) -> list[int]:
        return [dim for dim, flip in ((-1, self.flip_lr), (-2, self.flip_ud)) if flip]

    def apply(self, batch: torch.Tensor) -> torch.Tensor:
        """``Bx...xHxW`` batch -> augmented batch."""
        dims = self._flip_dims()
        batch = batch.flip(dims) if dims else batch
        return batch.roll(self.shift, dims=(-2, -1)) if any(self.shift) else batch

    def undo(self, batch: torch.Tensor) -> torch.Tensor:
        """Map an output of the augmented batch back onto the original pixel grid."""
        batch = batch.roll((-self.shift[0], -self.shift[1]), dims=(-2, -1)) if any(self.shift) else batch
        dims = self._flip_dims()
        return batch.flip(dims) if dims else batch


IDENTITY = (Augmentation(),)
FLIPS = (Augmentation(), Augmentation(flip_lr=True), Augmentation(flip_ud=True),
         Augmentation(flip_lr=True, flip_ud=True))


def with_shifts(members: Sequence[Augmentation], pixels: int = 8) -> tuple[Augmentation, ...]:
    """Each member as given plus shifted by ``pixels`` up, down, left and right (5x the members)."""
    offsets = ((0, 0), (-pixels, 0), (pixels, 0), (0, -pixels), (0, pixels))
    return tuple(Augmentation(m.flip_lr, m.flip_ud, offset) for m in members for offset in offsets)


@dataclass(frozen=True)
class TtaPrediction:
    """The members' segmenter probabilities at the slice's size, beside the plain prediction."""

    members: np.ndarray          # MxHxW float32
    plain: Prediction            # the model as usual: its classifier verdict and input check apply to TTA too

    @property
    def probability(self) -> np.ndarray:
        """``HxW float32``: the mean over members."""
        return self.members.mean(axis=0)

    @property
    def tumour_probability(self) -> float:
        return self.plain.tumour_probability

    @property
    def spread(self) -> np.ndarray:
        """``HxW float32``: the members' standard deviation (0 = all agree)."""
        return self.members.std(axis=0)

    def disagreement(self, threshold: float) -> np.ndarray:
        """``HxW float32`` in 0..0.5: share of members on the minority side of ``threshold``."""
        above = (self.members >= threshold).mean(axis=0)
        return np.minimum(above, 1.0 - above).astype(np.float32)

    def prediction(self) -> Prediction:
        """The averaged map as a plain :class:`Prediction`, so masks, gate and metrics work unchanged."""
        return replace(self.plain, probability=self.probability)


def segment_members(predictor: Predictor, batch: torch.Tensor, members: Sequence[Augmentation]) -> torch.Tensor:
    """Segmenter probabilities ``MxBx256x256`` of a preprocessed batch under each member, mapped back (an ensemble's
    mean, like the plain prediction); run by the predictor's engine (OpenVINO on a CPU), one call per member at the
    batch's size."""
    outputs = [member.undo(torch.from_numpy(predictor.engine.segment(member.apply(batch).contiguous().cpu().numpy())
                                            .mean(axis=1))) for member in members]
    return torch.stack(outputs) if outputs else batch.new_empty((0, batch.shape[0], *batch.shape[-2:]))


def tta_predict_many(predictor: Predictor, images_u8: Sequence[np.ndarray], members: Sequence[Augmentation] = FLIPS,
                     batch_size: int = 16) -> list[TtaPrediction]:
    """TTA predictions for many slices, in batches; each member's map restored to its slice's size.

    The plain prediction (classifier, input check) runs once and serves as the identity member.
    """
    identity = Augmentation()
    others = [m for m in members if m != identity]
    results = []
    for start in range(0, len(images_u8), batch_size):
        chunk = images_u8[start:start + batch_size]
        plain = predictor.predict_many(chunk, batch_size)
        maps = segment_members(predictor, torch.from_numpy(predictor.batch(chunk)), others).numpy()
        for index, (image, prediction) in enumerate(zip(chunk, plain)):
            restored = [restore_size(member_map, image.shape[:2]) for member_map in maps[:, index]]
            own = [prediction.probability] if identity in members else []
            results.append(TtaPrediction(np.stack(own + restored), prediction))
    return results


def compare_tta(records: Sequence[SliceRecord], predictor: Predictor, members: Sequence[Augmentation] = FLIPS,
                settings: dict | None = None, batch_size: int = 16) -> dict:
    """Plain model against TTA on the same slices: every metric of ``evaluate.report`` for both, plus
    seconds per slice (inference only, after a warm-up, reading excluded) and the headline deltas."""
    settings = settings or pipeline_settings()
    plain: list[Evaluated] = []
    augmented: list[Evaluated] = []
    seconds = {"plain": 0.0, "tta": 0.0}
    warm = read_slice(records[0].image_path)
    predictor.predict_many([warm])
    tta_predict_many(predictor, [warm], members)
    for patient_records in by_patient(records).values():
        images = [read_slice(r.image_path) for r in patient_records]
        truths = [read_mask(r.mask_path, shape=image.shape[:2]) for r, image in zip(patient_records, images)]
        start = time.perf_counter()
        plain_predictions = predictor.predict_many(images, batch_size)
        seconds["plain"] += time.perf_counter() - start
        start = time.perf_counter()
        tta_predictions = [t.prediction() for t in tta_predict_many(predictor, images, members, batch_size)]
        seconds["tta"] += time.perf_counter() - start
        plain += [Evaluated(r, t, p) for r, t, p in zip(patient_records, truths, plain_predictions)]
        augmented += [Evaluated(r, t, p) for r, t, p in zip(patient_records, truths, tta_predictions)]
    result = {"members": [m.__dict__ for m in members], "device": str(predictor.device),
              "precision": predictor.precision, "batch_size": batch_size}
    for name, evaluated in (("plain", plain), ("tta", augmented)):
        full = report(evaluated, settings)
        result[name] = {
            "seconds_per_slice": seconds[name] / len(evaluated),
            "segmenter_volume_dice_mean": full["segmenter"]["volume"]["dice_mean"],
            "segmenter_volume_dice_median": full["segmenter"]["volume"]["dice_median"],
            "segmenter_tumour_tversky_pooled": full["segmenter"]["tumour_slices"]["tversky_pooled"],
            "segmenter_tumour_tversky_mean": full["segmenter"]["tumour_slices"]["tversky_mean"],
            "pipeline_volume_dice_mean": full["pipeline"]["volume"]["dice_mean"],
            "pipeline_tumour_tversky_pooled": full["pipeline"]["tumour_slices"]["tversky_pooled"],
            "per_patient_volume_dice": full["segmenter"]["volume"]["per_patient"],
        }
    result["aggregation"] = ("per-volume Dice: each patient's slices stacked, mean/median over patients; Tversky "
                             "pooled: TP/FN/FP summed over tumour slices; segmenter alone at the shipped threshold, "
                             "pipeline with the classifier gate and minimum area")
    return result


# ---- command line -----------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="kaggle_3m folder (default: $BRAINSEG_DATA)")
    parser.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    parser.add_argument("--split-file", default=str(WEIGHTS_DIR / "split.json"))
    parser.add_argument("--weights", default=str(WEIGHTS_DIR))
    parser.add_argument("--patients", type=int, default=0, help="only the first N patients (quick checks)")
    parser.add_argument("--shifts", type=int, default=0, help="add shifts of this many pixels to the flips")
    parser.add_argument("--out", help="write the JSON here (e.g. weights/explain.json)")


def run(args: argparse.Namespace) -> dict:
    records = evaluation_records(args.data, args.split, args.split_file, args.patients)
    predictor = Predictor(args.weights)
    members = with_shifts(FLIPS, args.shifts) if args.shifts else FLIPS
    settings = pipeline_settings(Path(args.weights))
    result = {"split": args.split, "split_file": Path(args.split_file).name,
              "heat_maps": cam_hit_rates(records, predictor, settings["gate"],
                                         [(method, layer) for method in CAM_METHODS for layer in STAGES]),
              "tta": compare_tta(records, predictor, members, settings)}
    print(json.dumps({"heat_maps": result["heat_maps"],
                      **{k: {n: v for n, v in result["tta"][k].items() if n != "per_patient_volume_dice"}
                         for k in ("plain", "tta")}}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result
