"""A quiet, quick start: -h and flag errors before TensorFlow loads, no
TensorFlow noise, boolean flags, no import-time side effects."""

import os
import re
import subprocess
import sys

import pytest

import cifar10_classify
import cifar10_train
from cifar10_toolkit import cli
from conftest import ROOT, train_args
from cifar10_toolkit import startup


# --- a quiet, quick start ---------------------------------------------------

SCRIPTS = ['cifar10_train.py', 'cifar10_multi_gpu_train.py', 'cifar10_eval.py',
           'run_fc_model.py', 'restore_model.py', 'cifar10_export.py',
           'cifar10_classify.py', 'tools/gpu_audit.py']


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_and_flag_errors_do_not_load_tensorflow(script):
  for args, status in ((['-h'], 0), (['--no_such_flag'], 2)):
    p = subprocess.run([sys.executable, '-X', 'importtime', script] + args,
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == status
    assert not re.search(r'\| tensorflow$', p.stderr, re.M)
    errors = [l for l in p.stderr.splitlines() if not l.startswith('import ')]
    assert len(errors) == status // 2  # one line for a flag error


@pytest.mark.slow
def test_a_run_prints_no_tensorflow_noise(shared_bin_dir, tmp_path):
  p = subprocess.run(
      [sys.executable, 'cifar10_train.py'] + train_args(
          shared_bin_dir, str(tmp_path / 't')) + ['--max_steps', '2'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert p.returncode == 0 and p.stderr == '', p.stderr
  assert 'saved checkpoint' in p.stdout


def test_noise_filter_keeps_real_errors():
  noise = ('WARNING: All log messages before absl::InitializeLog() is called '
           'are written to STDERR')
  assert startup.is_noise(noise)
  assert startup.is_noise('E0000 00:00:1795653020.702221    7690 cuda_platform.'
                      'cc:52] failed call to cuInit: INTERNAL: CUDA error: '
                      'Failed call to cuInit: UNKNOWN ERROR (303)',
                      driver=False)
  assert not startup.is_noise('E0000 00:00:1795653020.702221    7690 cuda_platform'
                          '.cc:52] failed call to cuInit: INTERNAL: CUDA '
                          'error: Failed call to cuInit: UNKNOWN ERROR (303)',
                          driver=True)
  for real in ('E0000 00:00:1.0 1 util.cc:131] out of memory', 'Traceback '
               '(most recent call last):', 'cifar10_train.py: error: x',
               noise + ' and more', 'I0000 00:00:1.0 1 port.cc:153] other'):
    assert not startup.is_noise(real), real


def test_boolean_flags_take_no_separate_value(capsys):
  """`--resize big.png` leaves big.png to the files; --flag=false and
  --noflag turn a flag off; a bad value is a one-line error."""
  classify = cifar10_classify.FLAGS
  assert cli.parse(classify, ['--resize', 'big.png'], '', 'IMAGE') == [
      'big.png']
  assert classify.resize is True
  cli.parse(classify, ['a.png', '--resize=false'], '', 'IMAGE')
  assert classify.resize is False
  cli.parse(classify, ['a.png', '--noresize'], '', 'IMAGE')
  assert classify.resize is False
  train = cifar10_train.FLAGS
  for argv, want in ((['--use_bf16=False'], False), (['--use_bf16'], True),
                     ([], None), (['--use_bf16=auto'], None),
                     (['--nouse_bf16'], False)):
    cli.parse(train, argv)
    assert train.use_bf16 is want, argv
  with pytest.raises(SystemExit):
    cli.parse(train, ['--use_bf16=maybe'])
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].endswith(
      "error: flag --use_bf16=maybe: 'maybe' is not true, false or auto")


def test_importing_a_module_changes_nothing_in_the_interpreter():
  # a notebook that imports the model keeps its own Ctrl-C and excepthook
  code = ('import signal, sys\n'
          'hook, sigint = sys.excepthook, signal.getsignal(signal.SIGINT)\n'
          'import convnet, cifar10_input, data_helpers, two_layer_fc, '
          'cifar10_train, cifar10_eval, cifar10_multi_gpu_train, '
          'cifar10_export, cifar10_classify, run_fc_model, restore_model\n'
          'from cifar10_toolkit import (dataset, device_input, lrn, '
          'train_loop, checkpoints, summaries, run_control, console, '
          'hardware, cli, startup, config, cluster, evaluation, serving, '
          'fc_runs, run_folder, errors)\n'
          'from tools import gpu_audit, kernel_audit\n'
          'assert sys.excepthook is hook, sys.excepthook\n'
          'assert signal.getsignal(signal.SIGINT) is sigint\n'
          'print("unchanged")\n')
  p = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0 and p.stdout.strip() == 'unchanged', p.stderr

