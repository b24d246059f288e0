"""benchmarks/distill.py: the command line of one method's run (shared by metric_noise.py)."""
import pytest

from train_helpers.scripts import ROOT, load_script

distill = load_script('benchmarks/distill.py')


def test_method_spec_takes_the_config_strings_divergence_then_field_overrides():
  args = lambda spec, data='': distill.main_py_args('distill_toy2d', spec, data, '/w', ['--x=1'])
  config = f'--config={ROOT}/configs/distill_toy2d.py'
  assert args('uni_instruct:neyman_chi2:clip_norm=1.0', 'ring8') == [
      f'{config}:uni_instruct:neyman_chi2,ring8', '--workdir=/w', '--x=1',
      '--config.method.clip_norm=1.0']
  assert args('uni_instruct:divergence=jensen_shannon') == [
      f'{config}:uni_instruct', '--workdir=/w', '--x=1', '--config.method.divergence=jensen_shannon']
  assert args('sid') == [f'{config}:sid', '--workdir=/w', '--x=1']
  assert args('') == [config, '--workdir=/w', '--x=1']
  with pytest.raises(SystemExit, match='every part is <field>=<value>'):
    args('uni_instruct:neyman_chi2:pearson_chi2')
