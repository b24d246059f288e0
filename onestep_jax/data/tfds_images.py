"""Image datasets already prepared in a TFDS data dir (cifar10, mnist, imagenet_resized/32x32...).

Reads with `tfds.data_source` over array_record files: random access by index, so each process
decodes only its own rows of the global batch, and no TensorFlow is needed (PNG/JPEG decoding
goes through PIL). Nothing is downloaded: prepare the dataset once elsewhere with
`tfds build <name> --file_format=array_record [--data_dir=...]` (building image datasets needs
TensorFlow on that machine). Images may be stored as `tfds.features.Image` or as uint8
`tfds.features.Tensor` of shape [H, W, C]; labels as a `ClassLabel`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

from onestep_jax.data.base import FiniteDataset
from onestep_jax.data.images import prepare_image, uint8_to_unit

_RANDOM_ACCESS_FORMATS = ('array_record', 'parquet')


def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('TFDS datasets need tensorflow-datasets, array-record and grain: '
                      "pip install 'onestep_jax[data]'") from e
  return tfds


def open_prepared(name: str, *, split: str, data_dir: Optional[str]):
  """(builder, random-access source of `split`) of a TFDS dataset already prepared as
  array_record or parquet; raises naming the `tfds build` command otherwise (never downloads)."""
  tfds = _import_tfds()
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_dir}; onestep_jax never '
        f'downloads: run `tfds build {name} --file_format=array_record` (with --data_dir) first')
  if builder.info.file_format.value not in _RANDOM_ACCESS_FORMATS:
    raise ValueError(f'TFDS dataset {name!r} in {builder.data_dir} is stored as '
                     f'{builder.info.file_format.value}; random access needs one of '
                     f'{_RANDOM_ACCESS_FORMATS}: '
                     f'rebuild it with `tfds build {name} --file_format=array_record`')
  source = builder.as_data_source(split=split)
  if not len(source):
    raise ValueError(f'TFDS dataset {name!r} split {split!r} is empty')
  return builder, source


class TfdsImageDataset(FiniteDataset):
  """One split of a prepared TFDS image dataset, float32 NHWC in [-1, 1].

  Args:
    name: TFDS builder name, optionally with config and version, e.g. 'imagenet_resized/32x32'.
    split: TFDS split expression, e.g. 'train', 'test', 'train[:90%]'.
    data_dir: TFDS data dir (default: TFDS's own, $TFDS_DATA_DIR or ~/tensorflow_datasets).
    resolution: resize (shorter side) and centre-crop every image to this size; required when
      the stored images vary in size (e.g. 'imagenet2012').
    image_key: feature holding the image.
    label_key: ClassLabel feature holding the label, or None for unlabelled use.
  """

  def __init__(self, name: str, *, split: str = 'train', data_dir: Optional[str] = None,
               resolution: Optional[int] = None, image_key: str = 'image',
               label_key: Optional[str] = 'label'):
    tfds = _import_tfds()
    builder, self._source = open_prepared(name, split=split, data_dir=data_dir)
    features = builder.info.features
    if image_key not in features:
      raise ValueError(f'TFDS dataset {name!r} has no feature {image_key!r}; features: '
                       f'{sorted(features.keys())}')
    image_feature = features[image_key]
    shape = tuple(image_feature.shape)
    if len(shape) != 3 or np.dtype(image_feature.np_dtype) != np.uint8 or shape[2] not in (1, 3):
      raise ValueError(f'{name!r}: feature {image_key!r} must hold uint8 images [H, W, 1 or 3], '
                       f'got {image_feature}')
    if resolution is None and None in shape:
      raise ValueError(f'{name!r}: images have variable size {shape}; pass resolution=')
    self._labelled = label_key is not None and label_key in features
    if self._labelled and not isinstance(features[label_key], tfds.features.ClassLabel):
      raise ValueError(f'{name!r}: feature {label_key!r} is {features[label_key]}, not a '
                       'ClassLabel; pass label_key=None to ignore it')
    self._image_key, self._label_key = image_key, label_key
    self._resolution = resolution
    self.name = name
    self.split = split
    self.num_examples = len(self._source)
    self.example_shape = ((resolution, resolution, shape[2]) if resolution is not None
                          else shape)
    self.num_classes = features[label_key].num_classes if self._labelled else 0

  def _image(self, pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels, np.uint8)
    if self._resolution is None:
      return pixels
    channels = self.example_shape[2]
    return prepare_image(Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels),
                         channels=channels, resolution=self._resolution)

  def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    records = self._source.__getitems__([int(i) for i in indices])
    out = {'x': uint8_to_unit(np.stack([self._image(r[self._image_key]) for r in records]))}
    if self._labelled:
      out['label'] = np.asarray([r[self._label_key] for r in records], np.int32)
    return out
