"""scseg: squeeze-and-excitation recalibration in fully convolutional segmentation networks."""

__version__ = "0.1.0"
