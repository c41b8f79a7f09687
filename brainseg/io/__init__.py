"""Decode MRI slices and whole scans into numpy arrays, and write masks back (see ``slices`` and ``volumes``)."""
from brainseg.io.slices import encode_png, read_mask, read_slice

__all__ = ["encode_png", "read_mask", "read_slice"]
