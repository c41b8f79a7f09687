"""Flip test-time augmentation: the segmenter on flipped (optionally shifted) copies, mapped back and averaged;
the members' spread per pixel is the uncertainty the app shows."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from brainseg.inference.predictor import Prediction, Predictor
from brainseg.preprocess import restore_size


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
    batch's size.

    Args:
        predictor: the models whose engine segments.
        batch: ``Bx3x256x256`` float32 preprocessed batch.
        members: the augmentations, each applied to the batch and undone on its map.

    Returns:
        ``MxBx256x256`` probabilities, one map per member and slice (``0xBx256x256`` without members).
    """
    outputs = [member.undo(torch.from_numpy(predictor.engine.segment(member.apply(batch).contiguous().cpu().numpy())
                                            .mean(axis=1))) for member in members]
    return torch.stack(outputs) if outputs else batch.new_empty((0, batch.shape[0], *batch.shape[-2:]))


def tta_predict_many(predictor: Predictor, images_u8: Sequence[np.ndarray], members: Sequence[Augmentation] = FLIPS,
                     batch_size: int = 16) -> list[TtaPrediction]:
    """TTA predictions for many slices, in batches; each member's map restored to its slice's size.

    The plain prediction (classifier, input check) runs once and serves as the identity member.

    Args:
        predictor: the models to run.
        images_u8: ``HxWx3 uint8`` slices.
        members: the augmentations (the four flips by default); the identity one, if listed, is the plain map.
        batch_size: slices per batch.

    Returns:
        One :class:`TtaPrediction` per slice, in order.
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
