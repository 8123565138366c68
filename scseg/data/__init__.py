"""Data: file I/O, dataset layouts, label maps, phantom, preprocessing, cache, slices and augmentation."""
