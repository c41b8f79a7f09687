"""brainseg: brain-tumour detection (ResNet50) and segmentation (ResUNet) on LGG MRI slices."""
from brainseg.errors import BrainsegError

__all__ = ["BrainsegError"]
