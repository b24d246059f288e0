"""EDM image teacher (SongUNet, DDPM++ settings) on scikit-learn's bundled 8x8 digits.

python experiments/main.py --config=configs/teacher_digits.py --workdir=runs/digits
Variant `cond`: class-conditional with label dropout (for classifier-free guidance).
FID/KID are measured on the features of a small classifier trained on the same data.
"""
from onestep_jax.experiment.defaults import image_teacher_config


def get_config(arg: str = ''):
  return image_teacher_config('digits', arg)
