"""Train an EDM image teacher (SongUNet, DDPM++ settings) on bundled image data.

python experiments/main.py --config=configs/teacher_images.py:fashion_mnist --workdir=runs/fmnist
Variants: digits (sklearn's 8x8 digits), fashion_mnist (28x28, from Debian's
dataset-fashion-mnist files). Append ',cond' for a class-conditional teacher with label dropout.
FID/KID are measured on the features of a small classifier trained on the same data.
"""
from onestep_jax.experiment.defaults import base_config, teacher_method_fields

VARIANTS = {
    # name: (channel_mult, attention resolutions, batch size, steps)
    'digits': ((1, 2), (4,), 128, 4000),
    'fashion_mnist': ((1, 2, 2), (7,), 64, 20000),
}


def get_config(arg: str = 'fashion_mnist'):
  name, _, cond = arg.partition(',')
  if name not in VARIANTS or cond not in ('', 'cond'):
    raise ValueError(f'unknown variant {arg!r}; valid: {sorted(VARIANTS)} (optionally ",cond")')
  channel_mult, attn, batch_size, steps = VARIANTS[name]
  c = base_config()
  c.data.name = name
  c.data.conditional = cond == 'cond'

  c.net.name = 'song_unet'
  k = c.net.kwargs
  k.img_resolution = 8 if name == 'digits' else 28  # image side
  k.in_channels = 1
  k.out_channels = 1
  k.label_dim = 10 if c.data.conditional else 0  # one-hot classes
  k.model_channels = 32  # base width (EDM CIFAR-10 uses 128)
  k.channel_mult = channel_mult  # width multipliers per resolution
  k.num_blocks = 1  # residual blocks per resolution (EDM CIFAR-10 uses 4)
  k.attn_resolutions = attn  # resolutions with self-attention
  k.dropout = 0.0  # dropout in residual blocks
  k.label_dropout = 0.1 if c.data.conditional else 0.0  # for classifier-free guidance

  m = c.method
  teacher_method_fields(m)
  m.sigma_data = 0.5  # EDM's value for images in [-1, 1]

  c.train.batch_size = batch_size
  c.train.num_steps = steps
  c.train.save_every = 500
  c.eval.num_samples = 700 if name == 'digits' else 2000  # digits has 1,438 training images
  c.eval.batch_size = 250
  return c
