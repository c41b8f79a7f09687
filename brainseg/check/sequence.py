"""Which MRI sequence a grey (single-sequence) slice is: FLAIR, which the models need, or a T1, which they do not.

Five small networks (one per development fold, logits averaged) score each grey slice; a volume's mean score
decides, and scoring each channel of a three-channel volume tells whether FLAIR is in the middle. Pure numpy at
serving; trained by :mod:`brainseg.training.sequence`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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

    def logit(self, x: np.ndarray) -> float:
        """The logit of one :func:`grey_input`."""
        x = x[None]
        for weight, bias in zip(self.weights, self.biases):
            x = _convolve(x, weight, bias)
        return float(x.mean(axis=(1, 2)) @ self.head_weight + self.head_bias)


SequenceModel = tuple[SequenceNet, ...]   # members whose logits are averaged


def to_tensors(model: SequenceModel) -> dict[str, np.ndarray]:
    """Flat float32 arrays of every member for a safetensors file (see :func:`from_tensors`)."""
    out = {}
    for k, net in enumerate(model):
        out.update({f"sequence{k}.conv{i}.weight": w.astype(np.float32) for i, w in enumerate(net.weights)})
        out.update({f"sequence{k}.conv{i}.bias": b.astype(np.float32) for i, b in enumerate(net.biases)})
        out[f"sequence{k}.head.weight"] = net.head_weight.astype(np.float32)
        out[f"sequence{k}.head.bias"] = np.array([net.head_bias], np.float32)
    return out


def from_tensors(tensors: dict[str, np.ndarray]) -> SequenceModel | None:
    """The members stored by :func:`to_tensors`; None when the tensors hold none."""
    model = []
    while f"sequence{len(model)}.head.weight" in tensors:
        prefix = f"sequence{len(model)}"
        count = sum(1 for name in tensors if name.startswith(f"{prefix}.conv") and name.endswith(".weight"))
        model.append(SequenceNet(tuple(tensors[f"{prefix}.conv{i}.weight"] for i in range(count)),
                                 tuple(tensors[f"{prefix}.conv{i}.bias"] for i in range(count)),
                                 tensors[f"{prefix}.head.weight"], float(tensors[f"{prefix}.head.bias"][0])))
    return tuple(model) or None


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


def sequence_logit(grey_u8: np.ndarray, model: SequenceModel) -> float | None:
    """The members' mean logit that a grey slice is a T1 (pre- or post-contrast), not FLAIR; None for a slice with
    too little brain to say."""
    return _mean_logit([grey_input(grey_u8)], model)


def volume_looks_t1(evidence: Sequence[float | None]) -> bool:
    """Whether a grey volume looks like a T1, not FLAIR, from its slices' evidence (``assess.t1_evidence``:
    logit less the threshold that ``calibrate`` chose out of fold): their mean above 0, over at least
    ``MIN_SCORED_SLICES`` scored slices."""
    scored = [value for value in evidence if value is not None]
    return len(scored) >= MIN_SCORED_SLICES and float(np.mean(scored)) > 0.0


def volume_warning(evidence: Sequence[float | None]) -> str:
    """The warning for a grey volume that looks like T1 (:func:`volume_looks_t1`), "" otherwise."""
    if not volume_looks_t1(evidence):
        return ""
    scored = sum(value is not None for value in evidence)
    return (
        "one MRI sequence that looks T1-weighted (pre- or post-contrast), not FLAIR (judged over its "
        f"{scored} slices with brain): the models were trained on FLAIR with the two T1 sequences beside it, "
        "or on FLAIR alone, and on a T1 alone their masks and tumour probabilities are unreliable; use the "
        "FLAIR volume, or all three sequences (if this is FLAIR after all, the predictions stand: the check "
        "takes about one FLAIR volume in ten for T1, see the model card)"
    )


def _mean_logit(inputs: Sequence[np.ndarray | None], model: SequenceModel) -> float | None:
    """The members' mean logit over the :func:`grey_input` of several slices, those with too little brain left
    out; None when none is left."""
    logits = [np.mean([net.logit(x) for net in model]) for x in inputs if x is not None]
    return float(np.mean(logits)) if logits else None


def order_warning(images_u8: Sequence[np.ndarray], model: SequenceModel, threshold: float) -> str:
    """The warning for a three-channel volume whose middle channel (taken as FLAIR) looks T1 by the volume
    ``threshold`` while an outer channel looks like FLAIR; "" otherwise (also for one-sequence volumes).

    Each channel's mean logit is taken over up to ``ORDER_SLICES`` evenly spaced slices whose middle channel has
    enough brain (at least ``MIN_SCORED_SLICES`` of them, else ""), the middle channel first: the outer ones are
    scored only when it looks T1, so a volume in order costs a third.

    Args:
        images_u8: the volume's ``HxWx3 uint8`` slices (pre-contrast, FLAIR, post-contrast), in slice order.
        model: the grey-sequence members whose logits are averaged.
        threshold: the volume mean logit above which a channel looks T1 (the calibration's ``sequence_threshold``).

    Returns:
        The warning as a sentence fragment, or ``""``.
    """
    if all(
        np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 2], image[..., 1])
        for image in images_u8
    ):
        return ""
    middle = [(image, x) for image in images_u8 if (x := grey_input(np.ascontiguousarray(image[..., 1]))) is not None]
    if len(middle) < MIN_SCORED_SLICES:
        return ""
    chosen = [middle[i] for i in np.unique(np.linspace(0, len(middle) - 1, ORDER_SLICES).round().astype(int))]
    means = {1: _mean_logit([x for _, x in chosen], model)}
    if means[1] <= threshold:
        return ""
    for c in (0, 2):
        means[c] = _mean_logit([grey_input(np.ascontiguousarray(image[..., c])) for image, _ in chosen], model)
    if means[0] is None or means[2] is None:
        return ""
    flair_like = [c for c in (0, 2) if means[c] <= threshold]
    if not flair_like:
        return ""
    count = len(chosen)
    outer = " and ".join(f"the {ORDINAL[c]} channel (taken as {CHANNELS[c]}, score {means[c]:.1f})" for c in flair_like)
    return (
        f"channels that look out of order: the middle channel, which the models take as FLAIR, looks "
        f"T1-weighted (mean score {means[1]:.1f} over {count} slices, threshold {threshold:.1f}) and {outer} "
        "looks like FLAIR. The models take pre-contrast, FLAIR and post-contrast in that order, so these "
        "predictions are unreliable: check the channel order (a swap of pre- and post-contrast cannot be seen)"
    )
