"""Class activation maps: which pixels raised the classifier's tumour log-odds (LayerCAM or Grad-CAM).

Written here rather than taken from the ``grad-cam`` package, which imports scikit-learn, OpenCV and matplotlib;
tests check both agree. :func:`brainseg.figures.charts.cam_overlay` blends a map into its slice.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from brainseg.inference.predictor import Predictor
from brainseg.preprocess import restore_size

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

    Args:
        predictor: the models; its classifier's backbone is explained.
        images_u8: ``HxWx3 uint8`` slices.
        method: ``"layercam"`` or ``"gradcam"``.
        layer: the backbone stage whose activations are weighed: ``"layer1"`` .. ``"layer4"``.

    Returns:
        One ``HxW float32`` heat map in 0..1 per image, at the image's own size.
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
