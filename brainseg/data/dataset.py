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
from brainseg.io import intensity
from brainseg.io.intensity import FLAIR
from brainseg.io.slices import read_mask, read_slice
from brainseg.preprocess import MODEL_SIZE, preprocess, resize_image


@dataclass(frozen=True)
class Augment:
    """Training augmentation: the volume as another storage maps it back, a contrast curve per channel, FLAIR alone
    in the three channels, flips, small rotation/scale, per-channel intensity jitter, optional crop."""

    crop: int | None = None           # side of a random crop (segmenter); None = whole slice
    tumour_centred: float = 2 / 3     # share of crops centred on a tumour pixel
    rotate_degrees: float = 15.0
    scale: float = 0.1
    affine_p: float = 0.5
    intensity: float = 0.1
    gamma: float = 1.0                # curves drawn log-uniformly in [1/gamma, gamma]; 1 = no curve
    gamma_p: float = 0.5              # share of slices that get a curve (when gamma > 1)
    flair_alone: float = 0.0          # share of slices shown as FLAIR copied into the three channels
    stored_as: float = 0.0            # share of slices shown as their volume stored in 16 bits or floats, mapped back


def lookup(image_u8: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """``HxWx3 uint8`` with each channel's values looked up in its own 256-entry table (``3x256``)."""
    return np.stack([tables[c][image_u8[..., c]] for c in range(3)], axis=-1)


def flair_copied(image_u8: np.ndarray) -> np.ndarray:
    """The FLAIR channel in all three, as the models get an upload of FLAIR alone (:mod:`brainseg.io.volumes`)."""
    return np.repeat(image_u8[..., FLAIR:FLAIR + 1], 3, axis=-1)


def contrast_curve(image_u8: np.ndarray, rng: random.Random, aug: Augment) -> np.ndarray:
    """A power curve per channel on the 8-bit slice (``255 (v/255)^g``, ``g`` log-uniform in ``[1/gamma, gamma]``),
    drawn for ``aug.gamma_p`` of the slices: scanners and converters store contrast through curves that no linear
    intensity map undoes, so the models see such curves before :func:`brainseg.preprocess.preprocess`."""
    if aug.gamma <= 1.0 or rng.random() >= aug.gamma_p:
        return image_u8
    spread = math.log(aug.gamma)
    levels = np.arange(256, dtype=np.float64) / 255.0
    tables = [np.round(255.0 * levels ** math.exp(rng.uniform(-spread, spread))).astype(np.uint8) for _ in range(3)]
    return lookup(image_u8, np.stack(tables))


def storage_powers(gamma: float, curves: int = 8) -> tuple[float, ...]:
    """The storages :func:`storage_tables` simulates: 1 (any linear storage) first, then ``curves`` powers spread
    log-evenly over ``[1/gamma, gamma]`` (none when ``gamma`` is 1)."""
    if gamma <= 1.0:
        return (1.0,)
    exponents = np.linspace(-math.log(gamma), math.log(gamma), curves + 1)
    return (1.0, *(float(math.exp(e)) for e in exponents if abs(e) > 1e-12))


def storage_tables(volume_u8: np.ndarray, standard: np.ndarray, powers: Sequence[float],
                   head_percentiles: tuple[float, ...] = intensity.HEAD_PERCENTILES) -> np.ndarray:
    """What each 8-bit value of a volume becomes when the volume is stored otherwise and read back by the app.

    A volume stored as ``(v/255)^g`` in floats (``g = 1``: int16, float or 12-bit DICOM, any positive linear change)
    is mapped per channel by :func:`brainseg.io.intensity.standardise` with the landmarks of the whole stored volume,
    so the result is a lookup table per volume, channel and power.

    Args:
        volume_u8: ``SxHxWx3`` uint8, one patient's slices as the dataset stores them.
        standard: ``3xL`` target landmarks (``Landmarks.volume``).
        powers: the storages, e.g. :func:`storage_powers`.
        head_percentiles: where the inner landmarks stand (the shipped map's).

    Returns:
        ``len(powers) x 3 x 256`` uint8 tables.
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    tables = np.empty((len(powers), 3, 256), np.uint8)
    for k, power in enumerate(powers):
        stored = levels ** power
        for c in range(3):
            points = intensity.landmarks_of(stored[volume_u8[..., c]], head_percentiles)
            tables[k, c] = intensity.standardise(stored, standard[c], points)
    return tables


def flair_alone(image_u8: np.ndarray, rng: random.Random, aug: Augment) -> np.ndarray:
    """For ``aug.flair_alone`` of the slices, the FLAIR channel copied into all three: what the models get from an
    upload of FLAIR alone (:mod:`brainseg.io.volumes`)."""
    if not aug.flair_alone or rng.random() >= aug.flair_alone:
        return image_u8
    return flair_copied(image_u8)


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
        image: ``3xHxW`` float preprocessed image; channels after the first three (a teacher's view of the same
            slice) are warped, cropped and flipped alike but not jittered.
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
        image = torch.cat([image[:3] * gain + shift, image[3:]])
    return image.contiguous(), mask.contiguous()


class SliceDataset(Dataset):
    """Preloaded slices: ``(image 3xHxW float32, mask 1xHxW float32, label int)``.

    Images are decoded once and kept as 256x256 uint8 (0.2 MB a slice); each item is passed through
    :func:`brainseg.preprocess.preprocess` when read, after training augmentation's storage, contrast curve and
    FLAIR alone when ``augmentation`` is given (the rest of it after preprocessing). With ``paired``, the image has
    six channels: the augmented view, then the same slice as stored (same channels, crop and flips), which a teacher
    model sees while the model being trained sees the view.
    """

    def __init__(self, records: Sequence[SliceRecord], augmentation: Augment | None = None, seed: int = 0,
                 progress: bool = False, paired: bool = False,
                 landmarks: intensity.Landmarks | None = None) -> None:
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
        self.paired = paired
        self.tables, self.volume_of = self._storage_tables(landmarks, progress)

    def _storage_tables(self, landmarks: intensity.Landmarks | None,
                        progress: bool) -> tuple[list[np.ndarray], np.ndarray]:
        if self.augmentation is None or not self.augmentation.stored_as:
            return [], np.empty(0, np.int64)
        if landmarks is None:
            raise ValueError("stored_as needs the intensity landmarks the app maps such volumes with")
        patients = {patient: v for v, patient in enumerate(sorted({r.patient for r in self.records}))}
        volume_of = np.array([patients[r.patient] for r in self.records])
        powers = storage_powers(self.augmentation.gamma)
        tables = [storage_tables(self.images_u8[volume_of == v], landmarks.volume, powers, landmarks.head_percentiles)
                  for v in tqdm(range(len(patients)), desc="storage tables", disable=not progress, unit="volume")]
        return tables, volume_of

    def _stored_view(self, i: int, rng: random.Random) -> np.ndarray:
        """Slice ``i`` as the app reads its volume back from another storage: half linear, half a power curve."""
        tables = self.tables[self.volume_of[i]]
        k = 0 if len(tables) == 1 or rng.random() < 0.5 else rng.randrange(1, len(tables))
        return lookup(self.images_u8[i], tables[k])

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
        aug = self.augmentation
        rng = random.Random(hash((self.seed, self.epoch, i)))
        stored = aug.stored_as and rng.random() < aug.stored_as
        shown = self._stored_view(i, rng) if stored else contrast_curve(image_u8, rng, aug)
        copied = flair_alone(shown, rng, aug)
        image = torch.from_numpy(preprocess(copied))
        if self.paired:
            plain = image_u8 if copied is shown else flair_copied(image_u8)
            image = torch.cat([image, torch.from_numpy(preprocess(plain))])
        image, mask = augment(image, mask, rng, aug)
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
