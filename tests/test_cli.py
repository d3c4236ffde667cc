"""A quiet, quick start: -h and flag errors before TensorFlow loads, no
TensorFlow noise, boolean flags, no import-time side effects."""

import os
import re
import subprocess
import sys

import pytest

import cifar10_classify
import cifar10_train
import cli
from conftest import ROOT, train_args


# --- a quiet, quick start ---------------------------------------------------

SCRIPTS = ['cifar10_train.py', 'cifar10_multi_gpu_train.py', 'cifar10_eval.py',
           'run_fc_model.py', 'restore_model.py', 'cifar10_export.py',
           'cifar10_classify.py', 'gpu_audit.py']


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
  assert cli.is_noise(noise)
  assert cli.is_noise('E0000 00:00:1795653020.702221    7690 cuda_platform.'
                      'cc:52] failed call to cuInit: INTERNAL: CUDA error: '
                      'Failed call to cuInit: UNKNOWN ERROR (303)',
                      driver=False)
  assert not cli.is_noise('E0000 00:00:1795653020.702221    7690 cuda_platform'
                          '.cc:52] failed call to cuInit: INTERNAL: CUDA '
                          'error: Failed call to cuInit: UNKNOWN ERROR (303)',
                          driver=True)
  for real in ('E0000 00:00:1.0 1 util.cc:131] out of memory', 'Traceback '
               '(most recent call last):', 'cifar10_train.py: error: x',
               noise + ' and more', 'I0000 00:00:1.0 1 port.cc:153] other'):
    assert not cli.is_noise(real), real


def test_boolean_flags_take_no_separate_value(capsys):
  """`--resize big.png` leaves big.png to the files; --flag=false and
  --noflag turn a flag off; a bad value is a one-line error."""
  parse = cifar10_classify.build_parser().parse_args
  args = parse(['--resize', 'big.png'])
  assert args.resize is True and args.images == ['big.png']
  assert parse(['a.png', '--resize=false']).resize is False
  assert parse(['a.png', '--noresize']).resize is False
  train = cifar10_train.build_parser().parse_args
  assert train(['--use_bf16=False']).use_bf16 is False
  assert train(['--use_bf16']).use_bf16 is True
  assert train([]).use_bf16 is None
  with pytest.raises(SystemExit):
    train(['--use_bf16=maybe'])
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].endswith(
      "error: argument --use_bf16: 'maybe' is not a boolean")


def test_importing_a_module_changes_nothing_in_the_interpreter():
  # a notebook that imports the model keeps its own Ctrl-C and excepthook
  code = ('import signal, sys\n'
          'hook, sigint = sys.excepthook, signal.getsignal(signal.SIGINT)\n'
          'import convnet, cifar10_input, cifar10_data, device_input, lrn, '
          'train_loop, checkpoints, summaries, run_control, console, '
          'hardware, cli, data_helpers, two_layer_fc, cifar10_train, '
          'cifar10_eval\n'
          'assert sys.excepthook is hook, sys.excepthook\n'
          'assert signal.getsignal(signal.SIGINT) is sigint\n'
          'print("unchanged")\n')
  p = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0 and p.stdout.strip() == 'unchanged', p.stderr

