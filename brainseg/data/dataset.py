"""Training tensors: :class:`SliceDataset` (slices preloaded, augmented for training) and :class:`EpochSampler`,
fed by :mod:`brainseg.data.index`'s records.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from brainseg.data.index import SliceRecord
from brainseg.io.intensity import FLAIR
from brainseg.io.slices import read_mask, read_slice
from brainseg.preprocess import MODEL_SIZE, preprocess, resize_image


@dataclass(frozen=True)
class Augment:
    """Training augmentation: a contrast curve per channel, FLAIR alone in the three channels, flips, small
    rotation/scale, per-channel intensity jitter, optional crop."""

    crop: int | None = None           # side of a random crop (segmenter); None = whole slice
    tumour_centred: float = 2 / 3     # share of crops centred on a tumour pixel
    rotate_degrees: float = 15.0
    scale: float = 0.1
    affine_p: float = 0.5
    intensity: float = 0.1
    gamma: float = 1.0                # curves drawn log-uniformly in [1/gamma, gamma]; 1 = no curve
    gamma_p: float = 0.5              # share of slices that get a curve (when gamma > 1)
    flair_alone: float = 0.0          # share of slices shown as FLAIR copied into the three channels


def contrast_curve(image_u8: np.ndarray, rng: random.Random, aug: Augment) -> np.ndarray:
    """A power curve per channel on the 8-bit slice (``255 (v/255)^g``, ``g`` log-uniform in ``[1/gamma, gamma]``),
    drawn for ``aug.gamma_p`` of the slices: scanners and converters store contrast through curves that no linear
    intensity map undoes, so the models see such curves before :func:`brainseg.preprocess.preprocess`."""
    if aug.gamma <= 1.0 or rng.random() >= aug.gamma_p:
        return image_u8
    spread = math.log(aug.gamma)
    levels = np.arange(256, dtype=np.float64) / 255.0
    tables = [np.round(255.0 * levels ** math.exp(rng.uniform(-spread, spread))).astype(np.uint8) for _ in range(3)]
    return np.stack([tables[c][image_u8[..., c]] for c in range(3)], axis=-1)


def flair_alone(image_u8: np.ndarray, rng: random.Random, aug: Augment) -> np.ndarray:
    """For ``aug.flair_alone`` of the slices, the FLAIR channel copied into all three: what the models get from an
    upload of FLAIR alone (:mod:`brainseg.io.volumes`)."""
    if not aug.flair_alone or rng.random() >= aug.flair_alone:
        return image_u8
    return np.repeat(image_u8[..., FLAIR:FLAIR + 1], 3, axis=-1)


def _affine(image: torch.Tensor, mask: torch.Tensor, rng: random.Random,
            aug: Augment) -> tuple[torch.Tensor, torch.Tensor]:
    angle = math.radians(rng.uniform(-aug.rotate_degrees, aug.rotate_degrees))
    scale = 1.0 + rng.uniform(-aug.scale, aug.scale)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 1, *image.shape[-2:]], align_corners=False)
    background = image[:, 0, 0].view(-1, 1, 1)
    warped = F.grid_sample((image - background)[None], grid, mode="bilinear", align_corners=False)[0] + background
    warped_mask = F.grid_sample(mask[None].float(), grid, mode="nearest", align_corners=False)[0]
    return warped, warped_mask


def _crop_origin(mask: torch.Tensor, side: int, rng: random.Random, aug: Augment) -> tuple[int, int]:
    height, width = mask.shape[-2:]
    tumour = torch.nonzero(mask[0] > 0)
    if len(tumour) and rng.random() < aug.tumour_centred:
        y, x = tumour[rng.randrange(len(tumour))].tolist()
        y, x = y - side // 2 + rng.randint(-side // 4, side // 4), x - side // 2 + rng.randint(-side // 4, side // 4)
    else:
        y, x = rng.randint(0, height - side), rng.randint(0, width - side)
    return min(max(y, 0), height - side), min(max(x, 0), width - side)


def augment(image: torch.Tensor, mask: torch.Tensor, rng: random.Random,
            aug: Augment) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one preprocessed image and its mask.

    Args:
        image: ``3xHxW`` float preprocessed image.
        mask: ``1xHxW`` float mask (1 = tumour).
        rng: the random source that draws every choice (seeded per epoch and item by :class:`SliceDataset`).
        aug: what to apply: random affine, crop, flips and per-channel intensity jitter.

    Returns:
        The augmented image and mask, contiguous (``aug.crop`` square when a crop is set).
    """
    if rng.random() < aug.affine_p:
        image, mask = _affine(image, mask, rng, aug)
    if aug.crop:
        y, x = _crop_origin(mask, aug.crop, rng, aug)
        image, mask = image[:, y:y + aug.crop, x:x + aug.crop], mask[:, y:y + aug.crop, x:x + aug.crop]
    if rng.random() < 0.5:
        image, mask = image.flip(-1), mask.flip(-1)
    if rng.random() < 0.5:
        image, mask = image.flip(-2), mask.flip(-2)
    if aug.intensity:
        gain = torch.tensor([rng.gauss(1.0, aug.intensity) for _ in range(3)]).view(3, 1, 1)
        shift = torch.tensor([rng.gauss(0.0, aug.intensity) for _ in range(3)]).view(3, 1, 1)
        image = image * gain + shift
    return image.contiguous(), mask.contiguous()


class SliceDataset(Dataset):
    """Preloaded slices: ``(image 3xHxW float32, mask 1xHxW float32, label int)``.

    Images are decoded once and kept as 256x256 uint8 (0.2 MB a slice); each item is passed through
    :func:`brainseg.preprocess.preprocess` when read, after training augmentation's contrast curve and FLAIR
    alone when ``augmentation`` is given (the rest of it after preprocessing).
    """

    def __init__(self, records: Sequence[SliceRecord], augmentation: Augment | None = None, seed: int = 0,
                 progress: bool = False) -> None:
        self.records = list(records)
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0
        self.images_u8 = np.empty((len(self.records), MODEL_SIZE, MODEL_SIZE, 3), dtype=np.uint8)
        self.masks = torch.empty((len(self.records), 1, 256, 256), dtype=torch.uint8)
        for i, record in enumerate(tqdm(self.records, desc="preload", disable=not progress, unit="slice")):
            image_u8 = read_slice(record.image_path)
            self.images_u8[i] = resize_image(image_u8)
            self.masks[i, 0] = torch.from_numpy(read_mask(record.mask_path, shape=image_u8.shape[:2]))
        self.labels = torch.tensor([int(r.tumour) for r in self.records])

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def preprocessed(self, start: int, stop: int) -> torch.Tensor:
        """Slices ``start:stop`` preprocessed, unaugmented: ``Nx3x256x256 float32`` (validation)."""
        return torch.from_numpy(np.stack([preprocess(image) for image in self.images_u8[start:stop]]))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image_u8, mask = self.images_u8[i], self.masks[i].float()
        if self.augmentation is None:
            return torch.from_numpy(preprocess(image_u8)), mask, int(self.labels[i])
        rng = random.Random(hash((self.seed, self.epoch, i)))
        image_u8 = flair_alone(contrast_curve(image_u8, rng, self.augmentation), rng, self.augmentation)
        image = torch.from_numpy(preprocess(image_u8))
        image, mask = augment(image, mask, rng, self.augmentation)
        return image, mask, int(self.labels[i])


class EpochSampler(Sampler[int]):
    """Per-epoch sample: every slice of ``keep`` kind plus ``negatives_ratio`` x as many others, sharded by rank.

    ``negatives_ratio=None`` keeps everything (the classifier sees all slices, shuffled).
    """

    def __init__(self, labels: Sequence[int], negatives_ratio: float | None, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.labels = list(labels)
        self.negatives_ratio = negatives_ratio
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_indices(self) -> list[int]:
        rng = random.Random(self.seed * 100003 + self.epoch)
        positives = [i for i, label in enumerate(self.labels) if label]
        negatives = [i for i, label in enumerate(self.labels) if not label]
        if self.negatives_ratio is None:
            chosen = positives + negatives
        else:
            count = min(len(negatives), round(len(positives) * self.negatives_ratio))
            chosen = positives + rng.sample(negatives, count)
        rng.shuffle(chosen)
        usable = len(chosen) - len(chosen) % self.world_size
        return chosen[:usable][self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._epoch_indices())

    def __len__(self) -> int:
        return len(self._epoch_indices())
