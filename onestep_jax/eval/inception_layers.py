"""Blocks of the FID Inception-v3 network (NHWC, float32, inference only).

Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer
Vision") in the variant the TensorFlow FID code uses (Heusel et al. 2017), as ported by
pytorch-fid 0.3.0. Submodule names equal the PyTorch ones, so a PyTorch state_dict maps
onto the Flax variables name by name (see `inception.py`).

The FID variant differs from torchvision's blocks in its pooling branches: the 3×3
average pools of blocks A, C and E_1 exclude the zero padding from the mean, and E_2
(Mixed_7c) uses a 3×3 max pool instead of an average pool.
"""
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# Full float32 matmuls on every backend: FID statistics are sensitive to the features.
PRECISION = jax.lax.Precision.HIGHEST
_BN_EPS = 1e-3  # Inception-v3 BatchNorm epsilon (torchvision BasicConv2d).


def avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3×3 stride-1 average pool, zero padding excluded from the mean (TF semantics)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def max_pool_3x3(x: jax.Array) -> jax.Array:
  """3×3 stride-1 max pool with one pixel of (-inf) padding, as in FID's Mixed_7c."""
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """3×3 stride-2 max pool without padding (floor mode)."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class ConvBN(nn.Module):
  """Bias-free convolution, BatchNorm with running statistics, ReLU (BasicConv2d)."""
  features: int  # Output channels.
  kernel: tuple[int, int] = (1, 1)  # (height, width) of the kernel.
  strides: int = 1  # Spatial stride.
  padding: str = 'SAME'  # 'SAME' (k // 2 per side, odd kernels, stride 1) or 'VALID'.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=self.padding,
                use_bias=False, precision=PRECISION, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=_BN_EPS, name='bn')(x)
    return nn.relu(x)


class InceptionA(nn.Module):
  """35×35 block (Mixed_5b/c/d): 1×1, 5×5, double 3×3 and pooled branches."""
  pool_features: int  # Output channels of the pooled branch.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = ConvBN(64, name='branch1x1')(x)
    b5 = ConvBN(48, name='branch5x5_1')(x)
    b5 = ConvBN(64, (5, 5), name='branch5x5_2')(b5)
    b3 = ConvBN(64, name='branch3x3dbl_1')(x)
    b3 = ConvBN(96, (3, 3), name='branch3x3dbl_2')(b3)
    b3 = ConvBN(96, (3, 3), name='branch3x3dbl_3')(b3)
    bp = ConvBN(self.pool_features, name='branch_pool')(avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Grid reduction 35×35 → 17×17 (Mixed_6a)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = ConvBN(384, (3, 3), strides=2, padding='VALID', name='branch3x3')(x)
    bd = ConvBN(64, name='branch3x3dbl_1')(x)
    bd = ConvBN(96, (3, 3), name='branch3x3dbl_2')(bd)
    bd = ConvBN(96, (3, 3), strides=2, padding='VALID', name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """17×17 block with factorised 7×7 convolutions (Mixed_6b/c/d/e)."""
  channels_7x7: int  # Width of the factorised 7×7 branches.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    b1 = ConvBN(192, name='branch1x1')(x)
    b7 = ConvBN(c7, name='branch7x7_1')(x)
    b7 = ConvBN(c7, (1, 7), name='branch7x7_2')(b7)
    b7 = ConvBN(192, (7, 1), name='branch7x7_3')(b7)
    bd = ConvBN(c7, name='branch7x7dbl_1')(x)
    bd = ConvBN(c7, (7, 1), name='branch7x7dbl_2')(bd)
    bd = ConvBN(c7, (1, 7), name='branch7x7dbl_3')(bd)
    bd = ConvBN(c7, (7, 1), name='branch7x7dbl_4')(bd)
    bd = ConvBN(192, (1, 7), name='branch7x7dbl_5')(bd)
    bp = ConvBN(192, name='branch_pool')(avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Grid reduction 17×17 → 8×8 (Mixed_7a)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = ConvBN(192, name='branch3x3_1')(x)
    b3 = ConvBN(320, (3, 3), strides=2, padding='VALID', name='branch3x3_2')(b3)
    b7 = ConvBN(192, name='branch7x7x3_1')(x)
    b7 = ConvBN(192, (1, 7), name='branch7x7x3_2')(b7)
    b7 = ConvBN(192, (7, 1), name='branch7x7x3_3')(b7)
    b7 = ConvBN(192, (3, 3), strides=2, padding='VALID', name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """8×8 block with split 1×3 / 3×1 outputs (Mixed_7b = FID E_1, Mixed_7c = FID E_2)."""
  pool: Callable[[jax.Array], jax.Array] = avg_pool_3x3  # Pooling of the pooled branch.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = ConvBN(320, name='branch1x1')(x)
    b3 = ConvBN(384, name='branch3x3_1')(x)
    b3a = ConvBN(384, (1, 3), name='branch3x3_2a')(b3)
    b3b = ConvBN(384, (3, 1), name='branch3x3_2b')(b3)
    bd = ConvBN(448, name='branch3x3dbl_1')(x)
    bd = ConvBN(384, (3, 3), name='branch3x3dbl_2')(bd)
    bda = ConvBN(384, (1, 3), name='branch3x3dbl_3a')(bd)
    bdb = ConvBN(384, (3, 1), name='branch3x3dbl_3b')(bd)
    bp = ConvBN(192, name='branch_pool')(self.pool(x))
    return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)
