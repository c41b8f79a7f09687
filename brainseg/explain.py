"""Why the classifier decided (Grad-CAM) and how sure the segmenter is (test-time augmentation).

Everything runs through a loaded :class:`brainseg.inference.Predictor` (its models, device and precision):

- ``grad_cam(predictor, images_u8) -> list[HxW float32]``: Grad-CAM of the classifier's tumour logit at the
  last bottleneck of ``backbone.layer4``, scaled to 0..1, at each image's own size; ``cam_overlay`` blends it.
- ``tta_predict_many(predictor, images_u8, members)``: the segmenter run on flipped (and optionally shifted)
  copies, mapped back and averaged; the members' spread is the per-pixel uncertainty.
- ``python -m brainseg explain``: Grad-CAM hit rate and TTA against the plain model on a split.
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
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from brainseg.data import SliceRecord, by_patient
from brainseg.evaluate import Evaluated, evaluation_records, report
from brainseg.inference import Prediction, Predictor, pipeline_settings
from brainseg.io import read_mask, read_slice
from brainseg.preprocess import brain_pixels, restore_size
from brainseg.weights import WEIGHTS_DIR

TUMOUR_CLASS = 1


# ---- Grad-CAM ---------------------------------------------------------------------------------------

class _CamView(nn.Module):
    """The classifier seen by Grad-CAM: backbone (no graph) -> private tap -> head.

    The backbone's output *is* the output of its last layer4 bottleneck, so a hook on ``tap`` sees the
    Grad-CAM target layer. Hooking a module that belongs to this view alone keeps concurrent inference
    on the shared classifier (other app sessions) out of the hooks, and running the backbone without a
    graph makes the backward pass cover the small head only.
    """

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.classifier = predictor.classifier
        self.autocast = predictor.autocast
        self.tap = nn.Identity()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self.autocast():
            features = self.classifier.backbone(self.classifier.resize(batch))
        return self.classifier.head(self.tap(features.float().requires_grad_()))


def grad_cam(predictor: Predictor, images_u8: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``HxW float32`` heat maps in 0..1 of what raised the classifier's tumour logit, one per image.

    A map is all zeros where no feature pushed towards "tumour" (Grad-CAM keeps positive evidence only).
    """
    view = _CamView(predictor)
    cam = GradCAM(model=view, target_layers=[view.tap])
    try:
        with torch.enable_grad():
            maps = cam(predictor.tensors(images_u8), targets=[ClassifierOutputTarget(TUMOUR_CLASS)] * len(images_u8))
    finally:
        cam.activations_and_grads.release()
        view.zero_grad(set_to_none=True)
    return [restore_size(heat, image.shape[:2]) for heat, image in zip(maps, images_u8)]


def cam_overlay(image_u8: np.ndarray, heat: np.ndarray, image_weight: float = 0.6) -> np.ndarray:
    """``HxWx3 uint8``: the slice with its Grad-CAM heat map (jet colours) blended in."""
    return show_cam_on_image(image_u8.astype(np.float32) / 255.0, np.clip(heat, 0.0, 1.0), use_rgb=True,
                             image_weight=image_weight)


def peak_in_tumour(heat: np.ndarray, truth: np.ndarray) -> bool:
    """True when the heat map's highest pixel lies inside the true tumour mask."""
    return bool(truth.flat[int(np.argmax(heat))])


def gradcam_hit_rate(records: Sequence[SliceRecord], predictor: Predictor, gate: float, batch_size: int = 8) -> dict:
    """How often the Grad-CAM peak falls inside the true tumour, over the tumour slices of ``records``.

    ``chance`` is what a uniformly random brain pixel would score (mean tumour share of the brain), the
    floor a map must beat to show it looks at the tumour at all; ``hit_rate_called`` counts only the
    slices whose classifier probability reaches ``gate``.
    """
    tumour = [r for r in records if r.tumour]
    hits, chance, classified = [], [], []
    for start in range(0, len(tumour), batch_size):
        chunk = tumour[start:start + batch_size]
        images = [read_slice(r.image_path) for r in chunk]
        truths = [read_mask(r.mask_path, shape=image.shape[:2]) for r, image in zip(chunk, images)]
        for image, truth, heat, prediction in zip(images, truths, grad_cam(predictor, images),
                                                  predictor.predict_many(images, batch_size)):
            hits.append(peak_in_tumour(heat, truth))
            chance.append(truth.sum() / max(int(brain_pixels(image).sum()), 1))
            classified.append(prediction.tumour_probability)
    hits_array, scores = np.array(hits, bool), np.array(classified)
    called = scores >= gate
    return {
        "aggregation": "per slice, tumour slices only: share whose Grad-CAM peak pixel lies inside the true mask",
        "patients": len(by_patient(tumour)),
        "tumour_slices": len(tumour),
        "hit_rate": float(hits_array.mean()) if len(tumour) else float("nan"),
        "chance": float(np.mean(chance)) if len(tumour) else float("nan"),
        "called_tumour_slices": int(called.sum()),
        "hit_rate_called": float(hits_array[called].mean()) if called.any() else float("nan"),
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
    """Segmenter probabilities ``MxBx256x256`` of a preprocessed batch under each member, mapped back."""
    outputs = []
    with torch.inference_mode(), predictor.autocast():
        for member in members:
            augmented = member.apply(batch)
            if predictor.precision == "bf16":
                augmented = augmented.contiguous(memory_format=torch.channels_last)
            probability = torch.sigmoid(predictor.segmenter(augmented).float())[:, 0]
            outputs.append(member.undo(probability))
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
        maps = segment_members(predictor, predictor.tensors(chunk), others).cpu().numpy()
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
              "grad_cam": gradcam_hit_rate(records, predictor, settings["gate"]),
              "tta": compare_tta(records, predictor, members, settings)}
    print(json.dumps({"grad_cam": result["grad_cam"],
                      **{k: {n: v for n, v in result["tta"][k].items() if n != "per_patient_volume_dice"}
                         for k in ("plain", "tta")}}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result
