"""Data: file I/O, dataset layouts, label maps, phantom, preprocessing, cache, slices and augmentation."""

import os

# albumentations asks PyPI for a newer version at import unless told not to: every DataLoader worker of every run
# would then wait on the network, and on cluster nodes or GPU machines without one, on its timeout. A user who wants
# the check sets the variable themselves.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
