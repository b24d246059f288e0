"""One-step distillation of the bundled Fashion-MNIST EDM teacher (bundled:fashion_mnist, a 28x28
SongUNet trained by configs/teacher_fashion_mnist.py for 3,000 steps).

python experiments/main.py --config=configs/distill_fashion_mnist.py:sid --workdir=runs/sid_fmnist
Variants: diff_instruct, dmd, dmd2, sid, sim, fdistill, uni_instruct, diffratio (the last three take
--config.method.divergence=<name>). Generator and fake score (DiffRatio: its classifier's network)
start from the teacher; FID/KID are measured on the features of a classifier trained on
Fashion-MNIST, whose files the data reader needs (README, "Running experiments").
Few-step flow maps: ayf_emd, ayf_lmd, scd, rcm, cd, pd, ayf_emd_adv; the student starts as the
teacher (its second time embedding at zero; ayf_emd_adv: or an ayf_emd run,
--config.method.student_init=<its workdir>) and is evaluated at 1, 2, 4 and 8 steps
(student/<metric>@<steps>).
"""
from onestep_jax.experiment.defaults import image_distill_config


def get_config(arg: str = 'diff_instruct'):
  return image_distill_config('fashion_mnist', arg)
