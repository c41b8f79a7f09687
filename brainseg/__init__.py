"""brainseg: brain-tumour detection (ResNet50) and segmentation (ResUNet) on LGG MRI slices."""
from brainseg.errors import BrainsegError

__version__ = "1.0.0"   # the one place: pyproject.toml reads it (DICOM SEGs name it as the algorithm's version)
__all__ = ["BrainsegError", "__version__"]
