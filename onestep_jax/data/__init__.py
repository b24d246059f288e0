"""Data sources: analytic toys, user arrays and image folders, bundled and TFDS image sets.

Every source implements `base.Dataset`; build one by name with `get_dataset`.
"""
from onestep_jax.data.base import Dataset
from onestep_jax.data.registry import available, get_dataset

__all__ = ['Dataset', 'available', 'get_dataset']
