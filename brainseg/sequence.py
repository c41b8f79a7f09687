"""Which MRI sequence a grey (single-sequence) slice is: FLAIR, which the models need, or a T1 (pre- or
post-contrast), which they do not. A small network (:class:`SequenceNet`) scores each grey slice; the volume's
mean score decides, since one slice says little (validation: AUC 0.96 a slice, about half of the T1 slices above a
0.5% FLAIR false-alarm threshold) and a volume's slices say it together. The same network scores each channel of a
three-channel volume to tell whether FLAIR is where the models expect it, in the middle (:func:`order_warning`).

Pure numpy at inference (the network is five stride-2 3x3 convolutions with their BatchNorm folded in, run as
matrix products); trained by :mod:`brainseg.sequence_training` during ``calibrate``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from brainseg.preprocess import BACKGROUND_LEVEL, CHANNELS, MIN_STD

SEQUENCE_SIZE = 128          # the side the network sees
MIN_BRAIN_SHARE = 0.15       # slices with less brain (a volume's ends) are not scored
MIN_SCORED_SLICES = 3        # a volume needs this many scored slices for a verdict
ORDER_SLICES = 16            # slices of a three-channel volume whose channels are scored (evenly spaced)
ORDINAL = {0: "first", 2: "third"}                      # the outer channels, by position


@dataclass(frozen=True)
class SequenceNet:
    """Convolutions ``weights[i]`` (``out x in x 3 x 3``, stride 2, padding 1, BatchNorm folded) with ``biases[i]``
    and ReLU, a global mean, then ``head_weight`` (``C``) and ``head_bias``: the logit of "T1, not FLAIR"."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    head_weight: np.ndarray
    head_bias: float

    def tensors(self) -> dict[str, np.ndarray]:
        """Flat float32 arrays for a safetensors file (see :func:`from_tensors`)."""
        out = {f"sequence.conv{i}.weight": w.astype(np.float32) for i, w in enumerate(self.weights)}
        out.update({f"sequence.conv{i}.bias": b.astype(np.float32) for i, b in enumerate(self.biases)})
        out["sequence.head.weight"] = self.head_weight.astype(np.float32)
        out["sequence.head.bias"] = np.array([self.head_bias], np.float32)
        return out


def from_tensors(tensors: dict[str, np.ndarray]) -> SequenceNet | None:
    """The network stored by :meth:`SequenceNet.tensors`; None when the tensors hold none."""
    if "sequence.head.weight" not in tensors:
        return None
    count = sum(1 for name in tensors if name.startswith("sequence.conv") and name.endswith(".weight"))
    return SequenceNet(tuple(tensors[f"sequence.conv{i}.weight"] for i in range(count)),
                       tuple(tensors[f"sequence.conv{i}.bias"] for i in range(count)),
                       tensors["sequence.head.weight"], float(tensors["sequence.head.bias"][0]))


def grey_input(grey_u8: np.ndarray) -> np.ndarray | None:
    """``SEQUENCE_SIZE``-square float32 input of an ``HxW uint8`` grey slice: resized (bilinear), z-scored over its
    brain (pixels above the background), the background 0; None when the brain is under ``MIN_BRAIN_SHARE``."""
    small = np.asarray(Image.fromarray(np.ascontiguousarray(grey_u8)).resize((SEQUENCE_SIZE, SEQUENCE_SIZE),
                                                                              Image.BILINEAR), np.float32)
    brain = small > BACKGROUND_LEVEL
    if brain.mean() < MIN_BRAIN_SHARE:
        return None
    values = small[brain]
    mean, std = values.mean(), max(float(values.std()), MIN_STD)
    return np.where(brain, (small - mean) / std, 0.0).astype(np.float32)


def _convolve(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``C x H x W`` -> ``out x H/2 x W/2``: a 3x3 convolution, stride 2, padding 1, then ReLU (as a matrix product
    of the weights with the 9 shifted, strided views of the padded input)."""
    channels, height, width = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    taps = np.stack([padded[:, dy:dy + height:2, dx:dx + width:2] for dy in range(3) for dx in range(3)], axis=1)
    columns = taps.reshape(channels * 9, -1)                  # (C*9) x (H/2 * W/2), C-major like the weights
    out = weight.reshape(weight.shape[0], -1) @ columns + bias[:, None]
    return np.maximum(out, 0.0).reshape(weight.shape[0], height // 2, width // 2)


def sequence_logit(grey_u8: np.ndarray, net: SequenceNet) -> float | None:
    """The network's logit that a grey slice is a T1 (pre- or post-contrast), not FLAIR; None for a slice with
    too little brain to say."""
    x = grey_input(grey_u8)
    if x is None:
        return None
    x = x[None]
    for weight, bias in zip(net.weights, net.biases):
        x = _convolve(x, weight, bias)
    return float(x.mean(axis=(1, 2)) @ net.head_weight + net.head_bias)


def volume_looks_t1(evidence: Sequence[float | None]) -> bool:
    """Whether a grey volume looks like a T1, not FLAIR, from its slices' ``InputCheck.t1_evidence`` (logit less the
    threshold that ``calibrate`` chose on the validation patients): their mean above 0, over at least
    ``MIN_SCORED_SLICES`` scored slices."""
    scored = [value for value in evidence if value is not None]
    return len(scored) >= MIN_SCORED_SLICES and float(np.mean(scored)) > 0.0


def volume_warning(evidence: Sequence[float | None]) -> str:
    """The warning for a grey volume that looks like T1 (:func:`volume_looks_t1`), "" otherwise."""
    if not volume_looks_t1(evidence):
        return ""
    scored = sum(value is not None for value in evidence)
    return ("one MRI sequence that looks T1-weighted (pre- or post-contrast), not FLAIR (judged over its "
            f"{scored} slices with brain): the models were trained on FLAIR with the two T1 sequences beside it, "
            "or on FLAIR alone, and on a T1 alone their masks and tumour probabilities are unreliable; use the "
            "FLAIR volume, or all three sequences (if this is FLAIR after all, the predictions stand: the check "
            "takes about one FLAIR volume in ten for T1, see the model card)")


def channel_means(images_u8: Sequence[np.ndarray], net: SequenceNet) -> tuple[list[float], int] | None:
    """Each channel's mean logit over up to ``ORDER_SLICES`` evenly spaced slices of a volume (``HxWx3 uint8``)
    whose middle channel has enough brain, scored as grey slices, and how many slices; None with fewer than
    ``MIN_SCORED_SLICES`` such slices."""
    usable = [image for image in images_u8 if grey_input(np.ascontiguousarray(image[..., 1])) is not None]
    if len(usable) < MIN_SCORED_SLICES:
        return None
    chosen = [usable[i] for i in np.unique(np.linspace(0, len(usable) - 1, ORDER_SLICES).round().astype(int))]
    means = []
    for channel in range(3):
        logits = [sequence_logit(np.ascontiguousarray(image[..., channel]), net) for image in chosen]
        scored = [value for value in logits if value is not None]
        if not scored:
            return None
        means.append(float(np.mean(scored)))
    return means, len(chosen)


def order_warning(images_u8: Sequence[np.ndarray], net: SequenceNet, threshold: float) -> str:
    """The warning for a three-channel volume whose middle channel (taken as FLAIR) looks T1 by the volume
    ``threshold`` while an outer channel looks like FLAIR; "" otherwise (also for one-sequence volumes)."""
    if all(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 2], image[..., 1])
           for image in images_u8):
        return ""
    found = channel_means(images_u8, net)
    if found is None:
        return ""
    means, count = found
    flair_like = [c for c in (0, 2) if means[c] <= threshold]
    if means[1] <= threshold or not flair_like:
        return ""
    outer = " and ".join(f"the {ORDINAL[c]} channel (taken as {CHANNELS[c]}, score {means[c]:.1f})"
                         for c in flair_like)
    return (f"channels that look out of order: the middle channel, which the models take as FLAIR, looks "
            f"T1-weighted (mean score {means[1]:.1f} over {count} slices, threshold {threshold:.1f}) and {outer} "
            "looks like FLAIR. The models take pre-contrast, FLAIR and post-contrast in that order, so these "
            "predictions are unreliable: check the channel order (a swap of pre- and post-contrast cannot be seen)")
