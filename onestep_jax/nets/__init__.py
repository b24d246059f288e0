"""Flax Linen networks (NHWC): an MLP for low-dimensional data and the EDM U-Nets."""
