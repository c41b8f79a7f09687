"""Training of the grey-sequence networks (:mod:`brainseg.check.sequence`) and their volume threshold.

T1 slices against FLAIR, as grey images of the same patients; one network per development fold, trained on the
patients outside it; each patient's out-of-fold score sets the volume threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm import tqdm

from brainseg.check.sequence import SequenceModel, SequenceNet, grey_input, sequence_logit
from brainseg.data.index import SliceRecord, by_patient
from brainseg.io.slices import read_slice

FLAIR, T1 = 0, 1
CHANNELS = 16, 32, 64, 64, 64
EPOCHS = 15
BATCH = 64
LEARNING_RATE = 2e-3


def grey_volumes(records: Sequence[SliceRecord]) -> list[tuple[str, int, list[np.ndarray]]]:
    """``(patient, label, grey slices)`` for each patient's FLAIR volume and each of its real T1 volumes (pre- and
    post-contrast), every slice as ``HxW uint8``."""
    out = []
    for patient, rows in by_patient(records).items():
        volume = [read_slice(r.image_path) for r in rows]
        out.append((patient, FLAIR, [image[..., 1] for image in volume]))
        for channel in (0, 2):
            real = [image[..., channel] for image in volume if not np.array_equal(image[..., channel], image[..., 1])]
            if real:
                out.append((patient, T1, real))
    return out


def _network(torch):
    nn = torch.nn
    layers, previous = [], 1
    for width in CHANNELS:
        layers += [nn.Conv2d(previous, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU()]
        previous = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, 1))


def train_sequence_net(
    volumes: Sequence[tuple[str, int, list[np.ndarray]]], seed: int = 0, epochs: int = EPOCHS
) -> SequenceNet:
    """Train on the scored slices of ``volumes`` (flips and quarter turns as augmentation); the BatchNorm folded
    into the convolutions of the returned :class:`SequenceNet`.

    Args:
        volumes: ``(patient, label, grey slices)`` per volume (:func:`grey_volumes`), label ``FLAIR`` or ``T1``.
        seed: seed of the initialisation, the shuffling and the augmentation.
        epochs: passes over the scored slices.

    Returns:
        The trained network.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    inputs, labels = [], []
    for _, label, slices in volumes:
        for grey in slices:
            x = grey_input(grey)
            if x is not None:
                inputs.append(x)
                labels.append(label)
    x_all = torch.from_numpy(np.stack(inputs))[:, None]
    y_all = torch.tensor(labels, dtype=torch.float32)
    net = _network(torch)
    steps = epochs * ((len(x_all) + BATCH - 1) // BATCH)
    optimiser = torch.optim.AdamW(net.parameters(), LEARNING_RATE, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, LEARNING_RATE, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in tqdm(range(epochs), desc="sequence network", unit="epoch"):
        order = torch.randperm(len(x_all), generator=generator)
        for start in range(0, len(x_all), BATCH):
            index = order[start : start + BATCH]
            batch = x_all[index]
            if torch.rand(1, generator=generator) < 0.5:
                batch = batch.flip(3)
            batch = torch.rot90(batch, int(torch.randint(4, (1,), generator=generator)), (2, 3))
            loss = F.binary_cross_entropy_with_logits(net(batch)[:, 0], y_all[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return fold(net.eval())


def fold(net) -> SequenceNet:
    """The trained torch network (eval mode) as a :class:`SequenceNet`, each BatchNorm folded into its conv."""
    import torch

    from brainseg.inference.torch_engine import fold_batch_norm

    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        folded = [fold_batch_norm(conv, norm) for conv, norm in zip(convs, norms)]
        return SequenceNet(
            tuple(w.numpy().astype(np.float32) for w, _ in folded),
            tuple(b.numpy().astype(np.float32) for _, b in folded),
            net[-1].weight[0].numpy().astype(np.float32),
            float(net[-1].bias[0]),
        )


def train_members(
    volumes: Sequence[tuple[str, int, list[np.ndarray]]], folds: Sequence[Sequence[str]], epochs: int = EPOCHS
) -> SequenceModel:
    """One network per fold (seed = its index), trained on the volumes of the patients outside that fold.

    Args:
        volumes: ``(patient, label, grey slices)`` per volume (:func:`grey_volumes`).
        folds: the held-out patients of each fold.
        epochs: passes over the scored slices, per network.

    Returns:
        The members, in fold order.
    """
    held_out_sets = [set(held_out) for held_out in folds]
    return tuple(
        train_sequence_net([v for v in volumes if v[0] not in held_out], seed=k, epochs=epochs)
        for k, held_out in enumerate(held_out_sets)
    )


def out_of_fold(model: SequenceModel, folds: Sequence[Sequence[str]]) -> Callable[[str], SequenceModel]:
    """For a patient of ``folds``, the member (as a one-member model) that did not see it in training."""
    member = {patient: (model[k],) for k, held_out in enumerate(folds) for patient in held_out}
    return member.__getitem__


def slice_logits(
    volumes: Sequence[tuple[str, int, list[np.ndarray]]], model_of: Callable[[str], SequenceModel]
) -> list[tuple[str, int, list[float]]]:
    """``(patient, label, logits of the volume's scored slices)``, each volume scored by ``model_of(patient)``."""
    out = []
    for patient, label, slices in tqdm(volumes, desc="sequence volumes", unit="volume"):
        logits = [value for value in (sequence_logit(grey, model_of(patient)) for grey in slices) if value is not None]
        out.append((patient, label, logits))
    return out


def volume_means(logits: Sequence[tuple[str, int, list[float]]]) -> list[tuple[str, int, float]]:
    """``(patient, label, mean logit)`` of each volume with scored slices."""
    return [(patient, label, float(np.mean(values))) for patient, label, values in logits if values]


def volume_threshold(means: Sequence[tuple[str, int, float]]) -> float:
    """Midway between the highest FLAIR volume and the lowest T1 volume (out of fold) where they are apart, else
    at the highest FLAIR volume: a FLAIR-only volume is a normal upload, so none of them is flagged."""
    flair = max(m for _, label, m in means if label == FLAIR)
    t1 = min(m for _, label, m in means if label == T1)
    return (flair + t1) / 2 if t1 > flair else flair
