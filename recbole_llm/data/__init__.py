"""Data root, dataset preparation, and the datasets that attach semantic features."""
