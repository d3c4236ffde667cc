"""The benchmark scripts run and print well-formed figures (no timing checks)."""

import json
import os
import re
import subprocess
import sys

import pytest

from benchmarks import measures
from conftest import ROOT, write_py

NUMBER = r'(-?\d+(?:\.\d+)?)'  # an overhead within noise of 0 can be < 0
FLOPS = r'(?: +\d+\.\d{3} +\d+%)?'  # a training row's TFLOP/s, ceiling


def test_quick_and_smoke_exclude_each_other():
  done = subprocess.run(
      [sys.executable, '-m', 'benchmarks.benchmark', '--quick', '--smoke'],
      cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert done.returncode == 2 and done.stdout == ''
  assert done.stderr == ('benchmark.py: error: --quick and --smoke exclude '
                         'each other\n'), done.stderr


@pytest.mark.slow
def test_benchmark_smoke(shared_bin_dir, tmp_path):
  out_json = str(tmp_path / 'bench.json')
  out = subprocess.run(
      [sys.executable, '-m', 'benchmarks.benchmark', '--smoke', '--data_dir',
       shared_bin_dir, '--json', out_json], cwd=ROOT, check=True,
      capture_output=True, text=True, timeout=600).stdout
  for label in ('input pipeline alone', 'training, default: ',
                'default but 1 step per call', 'default but tf.data input',
                'float32 with XLA', 'earlier defaults: tf.data, 1 step/call',
                'Keras model.fit, float32', 'evaluation',
                'fully connected training', 'peak RSS of cifar10_train.py',
                'host overhead per step, batch 2, 100 steps/call',
                'host overhead per step, batch 2, 1 step/call',
                'batches made in the graph, per step',
                'default training / best Keras',
                'default training / earlier defaults',
                'default training / the same in 1 slice',
                'input pipeline / default training'):
    assert re.search(r'^ *%s.* %s%s$' % (re.escape(label), NUMBER, FLOPS),
                     out, re.M), label + ' missing in:\n' + out
  # each training row with its TFLOP/s and share of the ceiling, measured
  for label in ('training, default: ', 'Keras model.fit, float32'):
    assert re.search(r'^ *%s.* %s +\d+\.\d{3} +\d+%%$' % (
        re.escape(label), NUMBER), out, re.M), label
  assert re.search(r'^ceiling: (bfloat16|float32) matmul 2048\^3, all cores '
                   r'\(TFLOP/s\) +\d+\.\d{3}$', out, re.M), out
  # without torch (CI installs none) one line says the row is skipped
  torch_row = 'PyTorch (benchmarks/torch_peer.py)' in out
  assert torch_row or out.startswith('PyTorch row skipped: '), out
  results = json.load(open(out_json))
  fig = results['figures']
  repeats, turns = results['plan']['repeats'], results['plan']['turns']
  assert repeats >= 2 and turns >= 2  # a median, and rounds to compare
  if results['slices'] > 1:
    assert re.search(r'^ *default but 1 slice, default threads.* %s%s$' % (
        NUMBER, FLOPS), out, re.M), out
    assert fig['train_one_slice']['median'] > 0
  for key in ('pipeline', 'train_default', 'train_loop1', 'train_previous',
              'train_xla', 'keras', 'eval', 'fc_steps_per_sec'):
    assert fig[key]['median'] > 0 and len(fig[key]['repeats']) == repeats
  for key in ('overhead_ms', 'overhead_ms_loop1'):
    assert len(fig[key]['loop_ms_per_step']) == repeats
  assert 100 < fig['peak_train_rss_mb'] < 100000
  ops = fig['ops_per_step']
  assert ops['gpu_configuration'] <= 10 < 100 < ops['cpu_default']
  for what in ('the CPU default', 'the GPU configuration (XLA)'):
    assert re.search(r'^executor ops per step, %s +%d$' % (
        re.escape(what), ops['cpu_default' if 'CPU' in what
                             else 'gpu_configuration']), out, re.M), out
  ratios = results['ratios']
  best_keras = ratios['best_keras']
  assert best_keras.startswith('keras') and all(
      fig[k]['median'] <= fig[best_keras]['median'] for k in fig
      if k.startswith('keras'))
  assert ratios['default_over_best_keras'] == \
      fig['train_default']['median'] / fig[best_keras]['median']
  assert ratios['best_peer'] in ([best_keras, 'torch'] if 'torch' in fig
                                 else [best_keras])
  ceiling = fig['ceiling_tflops']['median']
  assert ceiling > 0 and len(fig['ceiling_tflops']['repeats']) == repeats
  assert ratios['tflops']['train_default'] == pytest.approx(
      fig['train_default']['median'] * measures.flops_per_example() / 1e12)
  assert ratios['fraction_of_ceiling']['keras'] == pytest.approx(
      ratios['tflops']['keras'] / ceiling)
  # timed in turns: a ratio per round, printed
  by_round = ratios['default_over_best_keras_by_round']
  assert len(by_round) == turns and all(x > 0 for x in by_round)
  assert re.search(r'^  in each round:%s +$' % ((' ' + NUMBER) * turns), out,
                   re.M), out
  assert results['machine']['cores'] >= 1


@pytest.mark.slow
def test_fc_accuracy_benchmark(tmp_path):
  write_py(str(tmp_path), per_file=100)
  out = subprocess.run(
      [sys.executable, '-m', 'benchmarks.fc_accuracy', '--seeds', '1,2',
       '--data_dir', str(tmp_path), '--', '--max_steps', '20',
       '--batch_size', '50'], cwd=ROOT, check=True, capture_output=True,
      text=True, timeout=600).stdout
  assert len(re.findall(r'^seed \d: test accuracy 0\.\d{4}, total time '
                        r'[\d.]+s \(wall [\d.]+s\)$', out, re.M)) == 2
  assert re.search(r'^test accuracy over 2 seeds: mean 0\.\d{4}, range '
                   r'0\.\d{4}-0\.\d{4}$', out, re.M)
  assert re.search(r'^wall time [\d.]+s for 2 runs; peak RSS of a run \d+ MB$',
                   out, re.M)


@pytest.mark.parametrize('native', [False, True])
def test_ab_times_the_keras_that_benchmark_times_here(monkeypatch, native):
  from benchmarks import turns
  from cifar10_toolkit import hardware
  monkeypatch.setattr(hardware, 'native_bf16_cpu', lambda: native)
  monkeypatch.setattr(turns.tf.config, 'list_physical_devices',
                      lambda kind=None: [])
  assert turns.keras_keys() == (
      ['keras', 'keras_bf16', 'keras_bf16_spe20'] if native else ['keras'])


def test_ab_refuses_an_unknown_keras_configuration(tmp_path):
  done = subprocess.run(
      [sys.executable, '-m', 'benchmarks.ab', '--other', ROOT, '--keras',
       'keras,keras_fp16', '--data_dir', str(tmp_path)], cwd=ROOT,
      capture_output=True, text=True, timeout=120)
  assert done.returncode != 0 and done.stdout == ''
  assert done.stderr.splitlines()[-1] == (
      'ab.py: error: --keras keras_fp16: not a Keras configuration (keras, '
      'keras_bf16, keras_bf16_spe20)'), done.stderr
  assert os.listdir(tmp_path) == []  # nothing fetched


@pytest.mark.slow
def test_resnet_benchmark_smoke(shared_bin_dir):
  out = subprocess.run(
      [sys.executable, '-m', 'benchmarks.resnet', '--smoke', '--data_dir',
       shared_bin_dir], cwd=ROOT, check=True, capture_output=True,
      text=True, timeout=900,
      env=dict(os.environ, CIFAR10_TORCH_PYTHON='')).stdout
  for label in (re.escape('the toolkit (--model resnet20, '),
                re.escape('Keras model.fit, '),
                r'Keras model\.fit, .*, XLA \(jit_compile\)'):
    assert re.search(r'^  %s.* %s$' % (label, NUMBER), out, re.M), (
        label + ' missing in:\n' + out)
  m = re.search(r'^the toolkit / the best peer \((keras|keras_xla|torch)\): '
                r'%s \(rounds %s %s\)$' % (NUMBER, NUMBER, NUMBER), out, re.M)
  assert m and float(m.group(2)) > 0, out
