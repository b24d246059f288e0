"""benchmarks/metric_noise.py: the ratio of means' standard error and the gate verdicts."""
import json

import numpy as np
import pytest

from train_helpers.scripts import load_script

metric_noise = load_script('benchmarks/metric_noise.py')


def test_standard_error_of_the_ratio_of_means_matches_its_spread_over_replications():
  # Five correlated (student, teacher) pairs per replication, as five evaluation seeds sharing a
  # reference; the delta method's standard error against the spread of 4,000 replications.
  rs = np.random.RandomState(0)
  cov = np.array([[0.16, 0.072], [0.072, 0.04]])  # correlation 0.9
  draws = rs.multivariate_normal([4.0, 2.0], cov, size=(4000, 5))
  ratios = draws[..., 0].mean(1) / draws[..., 1].mean(1)
  se = np.median([metric_noise.ratio_of_means(d[:, 0], d[:, 1])['standard_error'] for d in draws])
  np.testing.assert_allclose(se, ratios.std(), rtol=0.15)
  r = metric_noise.ratio_of_means([2.0, 4.0], [1.0, 2.0])
  assert r['ratio_of_means'] == 2.0 and r['per_seed'] == [2.0, 2.0] and r['standard_error'] == 0.0


def test_gate_verdicts():
  ratio = lambda r, se: {'ratio_of_means': r, 'standard_error': se}
  verdict = lambda swd, mmd: metric_noise.gate_verdict({'swd': ratio(*swd), 'mmd': ratio(*mmd)})
  assert verdict((1.1, 0.1), (2.0, 0.5)) == 'passes both by more than 1 se'
  assert verdict((1.45, 0.1), (2.0, 0.5)) == 'SWD under its gate, within 1 se'
  assert verdict((1.1, 0.1), (4.0, 0.5)) == 'fails MMD'
  assert verdict((1.6, 0.2), (3.2, 0.5)) == ('SWD over its gate, within 1 se; '
                                            'MMD over its gate, within 1 se')


def _runs_file(path, methods, overrides=()):
  metrics = {f'{side}/{k}@{nfe}': {'values': [value, value * 1.1], 'mean': value * 1.05,
                                  'std': value * 0.07}
             for side, nfe, value in (('student', 1, 2.0), ('teacher', 35, 1.0))
             for k in ('swd', 'mmd')}
  metrics.update({f'student/{k}@1': {'mean': 0.1} for k in ('off_mode', 'nll')})
  path.write_text(json.dumps({'methods': {m: {'metrics': metrics} for m in methods},
                              'overrides': list(overrides)}))
  return str(path)


def test_table_runs_selects_and_orders_rows_and_names_missing_ones(tmp_path, capsys):
  first = _runs_file(tmp_path / 'a.json', ['dmd', 'sid'])
  second = _runs_file(tmp_path / 'b.json', ['sim'])
  assert list(metric_noise.print_table([first, second])) == ['dmd', 'sid', 'sim']
  capsys.readouterr()
  assert list(metric_noise.print_table([first, second], ['sim', 'dmd'])) == ['sim', 'dmd']
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| `')]
  assert [row.split('`')[1] for row in rows] == ['sim', 'dmd']
  assert '| 2.00 ± 0.00 |' in rows[0]  # both seeds' ratio is 2
  with pytest.raises(SystemExit, match=r"\['sdi'\] not in the --table files"):
    metric_noise.print_table([first, second], ['sdi'])


def test_table_labels_one_method_run_with_other_overrides_by_those_overrides(tmp_path, capsys):
  seed0 = _runs_file(tmp_path / 'a.json', ['dmd', 'sid'])
  again = _runs_file(tmp_path / 'a_again.json', ['sid'])  # the same settings: the last file's
  seed1 = _runs_file(tmp_path / 'seed1.json', ['sid'], ['--config.seed=1'])
  seed2 = _runs_file(tmp_path / 'seed2.json', ['sid'], ['--config.seed=2'])
  rows = metric_noise.print_table([seed0, again, seed1, seed2])
  assert rows == {'dmd': 'dmd', 'sid': 'sid', 'sid [--config.seed=1]': 'sid',
                  'sid [--config.seed=2]': 'sid'}
  out = capsys.readouterr().out
  assert out.count('| `sid [--config.seed=') == 2 and out.count('| `sid` |') == 1
  assert list(metric_noise.print_table([seed1, seed0], ['sid [--config.seed=1]'])) == [
      'sid [--config.seed=1]']
  assert list(metric_noise.print_table([seed1])) == ['sid']  # nothing to tell apart


def test_runs_labels_split_at_commas_outside_brackets_and_parentheses():
  label = 'fdistill:divergence=neyman_chi2 [--config.method.ratio_range=(0.5,2.0)]'
  assert metric_noise.split_labels(f'dmd,{label},sid') == ['dmd', label, 'sid']
  assert metric_noise.split_labels('dmd') == ['dmd']


def test_picture_refuses_rows_that_share_a_run_directory(tmp_path, monkeypatch, capsys):
  seed1 = _runs_file(tmp_path / 'seed1.json', ['sid'], ['--config.seed=1'])
  seed2 = _runs_file(tmp_path / 'seed2.json', ['sid'], ['--config.seed=2'])
  monkeypatch.setattr('sys.argv', ['metric_noise.py', f'--table={seed1},{seed2}',
                                   f'--workroot={tmp_path}', f'--picture={tmp_path / "p.png"}'])
  with pytest.raises(SystemExit) as stop:
    metric_noise.main()
  assert stop.value.code == 2 and 'choose one of them with --runs' in capsys.readouterr().err
  assert not (tmp_path / 'p.png').exists()


def test_table_refuses_missing_files_and_files_without_runs(tmp_path):
  null_mode = tmp_path / 'null.json'
  null_mode.write_text(json.dumps({'command': 'python benchmarks/metric_noise.py', 'sizes': {}}))
  with pytest.raises(SystemExit, match='no file'):
    metric_noise.print_table([str(tmp_path / 'absent.json')])
  with pytest.raises(SystemExit, match='holds no runs'):
    metric_noise.print_table([str(null_mode)])


def test_picture_wraps_the_panels_into_rows(tmp_path):
  from PIL import Image
  workdirs = {}
  for i in range(5):  # the teacher's panel and five students: two rows of three
    w = tmp_path / f'run{i}'
    w.mkdir()
    for name in ('samples_teacher_nfe35.png', 'samples_student_nfe1.png'):
      Image.new('RGB', (40, 40), (255, 255 - 40 * i, 0)).save(w / name)
    workdirs[f'method{i}'] = str(w)
  metric_noise.draw(workdirs, tmp_path / 'rows.png', ncols=3)
  metric_noise.draw(workdirs, tmp_path / 'row.png')
  width, height = Image.open(tmp_path / 'rows.png').size
  np.testing.assert_allclose(width / height, (3 * 3.2) / (2 * 3.8), rtol=0.02)
  width, height = Image.open(tmp_path / 'row.png').size
  np.testing.assert_allclose(width / height, (6 * 3.2) / 3.8, rtol=0.02)
  # a label 'a:b:c' is drawn on three lines (and ', 1 NFE'): the panels grow taller to hold it
  metric_noise.draw({'m:field=1:other=2': workdirs['method0']}, tmp_path / 'long.png')
  width, height = Image.open(tmp_path / 'long.png').size
  np.testing.assert_allclose(width / height, (2 * 3.2) / (3.55 + 0.25 * 3), rtol=0.02)


def _image_metrics(fid_student, fid_teacher):
  """A digits run's final metrics, as experiments/main.py writes them."""
  return {'student/fid@1': fid_student, 'teacher/fid@35': fid_teacher, 'data/fid_floor': 40.0,
          'student/kid@1': 40.0, 'teacher/kid@35': 20.0, 'student/precision@1': 0.8,
          'teacher/precision@35': 0.9, 'student/recall@1': 0.9, 'teacher/recall@35': 0.95,
          'student/samples_per_s@1': 1000.0}


def test_image_runs_are_evaluated_per_seed_in_their_config_and_tabled_by_fid(
    tmp_path, monkeypatch, capsys):
  calls = []

  def fake_run(config, method, data, workdir, overrides):
    calls.append((config, method, data, workdir, overrides))
    seed = int(overrides[-1].split('=')[1])
    return {'command': 'python experiments/main.py ...', 'cpu_time_s': 1.0,
            'metrics': _image_metrics(50.0 + seed, 25.0 + seed / 2)}

  monkeypatch.setattr(metric_noise, 'run_method', fake_run)
  out = tmp_path / 'digits.json'
  monkeypatch.setattr('sys.argv', [
      'metric_noise.py', '--config=distill_digits', f'--workroot={tmp_path}',
      '--methods=uni_instruct:divergence=forward_kl', '--eval_seeds=0,2', f'--out={out}',
      '--config.seed=3'])
  metric_noise.main()
  spec = 'uni_instruct:divergence=forward_kl'
  assert [c[:3] for c in calls] == [('distill_digits', spec, '')] * 2
  assert calls[0][3] == str(tmp_path / 'uni_instruct_divergence=forward_kl')
  assert [c[4] for c in calls] == [['--config.seed=3', '--config.eval.seed=0'],
                                   ['--config.seed=3', '--config.eval.seed=2']]
  run = json.loads(out.read_text())['methods'][spec]
  assert [k for k in run if k.endswith('_vs_teacher')] == ['fid_vs_teacher']
  assert run['fid_vs_teacher']['per_seed'] == [2.0, 2.0]
  assert run['metrics']['student/fid@1']['values'] == [50.0, 52.0]
  capsys.readouterr()
  assert list(metric_noise.print_table([str(out)])) == [spec]
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith('| run | FID: student / teacher')
  assert lines[1].count('---') == lines[0].count('|') - 1
  assert lines[2] == (f'| `{spec}` | 51.0 ± 1.4 / 25.5 ± 0.7 | 2.00 ± 0.00 | '
                      '40.0 ± 0.0 / 20.0 ± 0.0 | 0.800 ± 0.000 | 0.900 ± 0.000 | '
                      '40.0 ± 0.0 |')
  ring = _runs_file(tmp_path / 'ring.json', ['sid'])
  with pytest.raises(SystemExit, match='cannot share a table'):
    metric_noise.print_table([str(out), ring])


def test_config_without_methods_is_refused(monkeypatch, capsys):
  monkeypatch.setattr('sys.argv', ['metric_noise.py', '--config=distill_digits'])
  with pytest.raises(SystemExit) as stop:
    metric_noise.main()
  assert stop.value.code == 2 and '--config goes with --methods' in capsys.readouterr().err


def _seed_file(path, method, seed, swd, mmd, overrides=()):
  """A --methods file of one 2-D run whose student's SWD and MMD are `swd` and `mmd` times the
  teacher's at each of two evaluation seeds."""
  metrics = {}
  for k, ratio in (('swd', swd), ('mmd', mmd)):
    metrics[f'teacher/{k}@35'] = {'values': [1.0, 2.0]}
    metrics[f'student/{k}@1'] = {'values': [ratio, 2.0 * ratio]}
  metrics.update({'student/off_mode@1': {'mean': 0.1 * (seed + 1)},
                  'student/nll@1': {'mean': 1.0 + seed},
                  'student/mode_coverage@1': {'min': 1.0 - 0.125 * seed}})
  overrides = [*overrides, *([f'--config.seed={seed}'] if seed else [])]
  path.write_text(json.dumps({'methods': {method: {'metrics': metrics}}, 'overrides': overrides}))
  return str(path)


def test_seed_table_has_a_row_per_method_over_its_training_seeds(tmp_path, capsys):
  files = [_seed_file(tmp_path / f'sid{s}.json', 'sid', s, swd, mmd)
           for s, swd, mmd in ((0, 1.2, 2.0), (1, 1.4, 5.3), (2, 1.3, 2.0))]
  files.append(_seed_file(tmp_path / 'dmd.json', 'dmd', 0, 1.0, 1.0))
  files.append(_seed_file(tmp_path / 'sim.json', 'sim', 1, 1.0, 1.0, ['--config.x=1']))
  files.append(_seed_file(tmp_path / 'sim_y.json', 'sim', 1, 1.0, 1.0, ['--config.y=1']))
  groups = metric_noise.print_seed_table(files)
  assert {k: sorted(v) for k, v in groups.items()} == {  # overrides shown where they differ
      'sid': [0, 1, 2], 'dmd': [0], 'sim [--config.x=1]': [1], 'sim [--config.y=1]': [1]}
  rows = {line.split('`')[1]: [c.strip() for c in line.split('|')[2:-1]]
          for line in capsys.readouterr().out.splitlines() if line.startswith('| `')}
  se_mmd = np.std([2.0, 5.3, 2.0], ddof=1) / np.sqrt(3)  # 1.1
  assert rows['sid'] == ['0, 1, 2', '1.20 / 1.40 / 1.30', '2.00 / 5.30 / 2.00', '1.30 ± 0.06',
                         f'3.10 ± {se_mmd:.2f}', '0.200', '2.00', '0.75', '2 of 3',
                         'MMD over its gate, within 1 se']
  assert rows['dmd'][3:5] == ['1.00', '1.00']  # one seed: no standard error
  assert rows['dmd'][-2:] == ['1 of 1', 'one seed: no spread']
  assert list(metric_noise.print_seed_table(files, ['dmd'])) == ['dmd']
  with pytest.raises(SystemExit, match=r"\['sdi'\] not in the --table files"):
    metric_noise.print_seed_table(files, ['sdi'])


def test_gradient_norms_take_each_runs_largest_norm_and_mean_clipped_fraction(tmp_path):
  records = [{'step': 100, 'g/grad_norm/g': 1.0, 'g/grad_norm_max/g': 30.0, 'g/clipped/g': 0.5},
             {'step': 200, 'g/grad_norm/g': 2.0, 'g/grad_norm_max/g': 4.0, 'g/clipped/g': 0.0},
             {'step': 200, 'eval/student/swd@1': 0.1}]
  (tmp_path / 'metrics.jsonl').write_text('\n'.join(json.dumps(r) for r in records) + '\n')
  assert metric_noise.gradient_norms(str(tmp_path / 'metrics.jsonl')) == {
      'g/clipped/g': 0.25, 'g/grad_norm_max/g': 30.0}
  (tmp_path / 'old.jsonl').write_text(json.dumps({'step': 100, 'g/grad_norm/g': 1.0}) + '\n')
  assert metric_noise.gradient_norms(str(tmp_path / 'old.jsonl')) == {}
