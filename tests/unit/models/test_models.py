"""The two networks: shapes, the Keras parameter count of the ResUNet, the classifier's outputs, no I/O."""
from __future__ import annotations

import sys

import pytest
import torch

from brainseg.models.networks import Classifier, ResUNet, build_model, keras_parameter_count

KERAS_PARAMETERS = 1_210_513   # Table 2 of the paper: the Keras model.summary() total


@pytest.fixture(scope="module")
def segmenter() -> ResUNet:
    return ResUNet().eval()


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(input_size=128).eval()


def test_resunet_parameter_count_matches_keras(segmenter: ResUNet) -> None:
    assert keras_parameter_count(segmenter) == KERAS_PARAMETERS


@torch.inference_mode()
@pytest.mark.parametrize("side", [256, 160])
def test_resunet_output_shape(segmenter: ResUNet, side: int) -> None:
    logits = segmenter(torch.randn(2, 3, side, side))
    assert logits.shape == (2, 1, side, side) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_resunet_skip_shapes_follow_the_design_table(segmenter: ResUNet) -> None:
    shapes = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
        for name, module in [
            ("stem", segmenter.stem),
            *((f"enc{i + 2}", e) for i, e in enumerate(segmenter.encoders)),
            *((f"dec{4 - i}", d) for i, d in enumerate(segmenter.decoders)),
        ]
    ]
    with torch.inference_mode():
        segmenter(torch.randn(1, 3, 256, 256))
    for hook in hooks:
        hook.remove()
    assert shapes == {
        "stem": (16, 256, 256),
        "enc2": (32, 128, 128),
        "enc3": (64, 64, 64),
        "enc4": (128, 32, 32),
        "enc5": (256, 16, 16),  # the bottleneck
        "dec4": (128, 32, 32),
        "dec3": (64, 64, 64),
        "dec2": (32, 128, 128),
        "dec1": (16, 256, 256),
    }


@torch.inference_mode()
def test_classifier_gives_two_way_logits_and_2048_features(classifier: Classifier) -> None:
    batch = torch.randn(2, 3, 256, 256)
    assert classifier(batch).shape == (2, 2)
    features = classifier.features(batch)
    assert features.shape == (2, 2048)
    assert torch.isfinite(features).all()


@torch.inference_mode()
def test_classifier_resizes_to_its_input_size(classifier: Classifier) -> None:
    batch = torch.randn(1, 3, 256, 256)
    assert classifier.resize(batch).shape == (1, 3, 128, 128)
    small = torch.randn(1, 3, 128, 128)
    assert classifier.resize(small) is small


def test_classifier_trains_one_step() -> None:
    model = Classifier(input_size=64).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 256, 256)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert all(p.grad is not None for p in model.head.parameters())
    optimizer.step()


def test_factory() -> None:
    assert isinstance(build_model("segmenter"), ResUNet)
    assert build_model("classifier", input_size=96).input_size == 96
    with pytest.raises(ValueError, match="detector"):
        build_model("detector")


def test_models_do_no_file_or_network_io() -> None:
    """Building and running both models opens no file and no socket (pretrained=False, weights elsewhere)."""
    events: list[tuple] = []
    watching = [True]

    def audit(event: str, args: tuple) -> None:
        if watching[0] and event in ("open", "socket.connect", "os.listdir", "os.scandir", "urllib.Request"):
            events.append((event, args[:1]))

    sys.addaudithook(audit)  # audit hooks cannot be removed; this one is switched off below
    try:
        with torch.inference_mode():
            build_model("segmenter")(torch.randn(1, 3, 64, 64))
            build_model("classifier", input_size=64)(torch.randn(1, 3, 64, 64))
    finally:
        watching[0] = False
    assert events == []
