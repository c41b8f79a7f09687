"""Why the classifier decided (class activation maps) and how sure the segmenter is (flip TTA)."""
from brainseg.explain.cam import CAM_METHODS, SHIPPED_CAM, STAGES, activation_maps
from brainseg.explain.tta import FLIPS, IDENTITY, Augmentation, TtaPrediction, tta_predict_many, with_shifts

__all__ = ["CAM_METHODS", "FLIPS", "IDENTITY", "SHIPPED_CAM", "STAGES", "Augmentation", "TtaPrediction",
           "activation_maps", "tta_predict_many", "with_shifts"]
