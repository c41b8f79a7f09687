"""Weights -> engine (OpenVINO on a CPU, torch on a GPU) -> preprocess -> probabilities -> masks."""
from brainseg.inference.predictor import Prediction, Predictor, volume_masks

__all__ = ["Prediction", "Predictor", "volume_masks"]
