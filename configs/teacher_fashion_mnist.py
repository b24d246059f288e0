"""EDM image teacher (SongUNet, DDPM++ settings) on Fashion-MNIST 28x28.

python experiments/main.py --config=configs/teacher_fashion_mnist.py --workdir=runs/fmnist
Reads the IDX files of Debian's dataset-fashion-mnist (or --config.data.kwargs.data_dir=<dir>).
Variant `cond`: class-conditional with label dropout (for classifier-free guidance).
FID/KID are measured on the features of a small classifier trained on the same data.
"""
from onestep_jax.experiment.defaults import image_teacher_config


def get_config(arg: str = ''):
  return image_teacher_config('fashion_mnist', arg)
