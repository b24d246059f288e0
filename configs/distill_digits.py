"""One-step distillation of the bundled digits EDM teacher (bundled:digits, 8x8 SongUNet).

python experiments/main.py --config=configs/distill_digits.py:sid --workdir=runs/sid_digits
Variants: diff_instruct, dmd, dmd2, sid, sim, fdistill, uni_instruct, diffratio (the last three take
--config.method.divergence=<name>). Generator and fake score (DiffRatio: its classifier's network)
start from the teacher; FID/KID are measured on the features of a classifier trained on the digits.
Few-step flow maps: ayf_emd, ayf_lmd, scd, rcm, cd, pd, ayf_emd_adv; the student starts as the
teacher (its second time embedding at zero; ayf_emd_adv: or an ayf_emd run,
--config.method.student_init=<its workdir>) and is evaluated at 1, 2, 4 and 8 steps
(student/<metric>@<steps>).
"""
from onestep_jax.experiment.defaults import image_distill_config


def get_config(arg: str = 'diff_instruct'):
  return image_distill_config('digits', arg)
