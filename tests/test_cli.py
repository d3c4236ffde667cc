"""A quiet, quick start: -h and flag errors before TensorFlow loads, no
TensorFlow noise, boolean flags, no import-time side effects."""

import os
import re
import signal
import subprocess
import sys

import pytest

import cifar10_classify
import cifar10_train
from cifar10_toolkit import cli
from conftest import ROOT, train_args
from cifar10_toolkit import startup


# --- a quiet, quick start ---------------------------------------------------

# (tools and benchmarks run from the root as modules)
SCRIPTS = ['cifar10_train.py', 'cifar10_multi_gpu_train.py', 'cifar10_eval.py',
           'run_fc_model.py', 'restore_model.py', 'cifar10_export.py',
           'cifar10_classify.py', '-m tools.gpu_audit',
           '-m benchmarks.benchmark', '-m benchmarks.fc_accuracy']


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_and_flag_errors_do_not_load_tensorflow(script):
  for args, status in ((['-h'], 0), (['--no_such_flag'], 2)):
    p = subprocess.run([sys.executable, '-X', 'importtime'] + script.split()
                       + args,
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == status
    assert not re.search(r'\| tensorflow$', p.stderr, re.M)
    errors = [l for l in p.stderr.splitlines() if not l.startswith('import ')]
    assert len(errors) == status // 2  # one line for a flag error


@pytest.mark.slow
def test_a_run_prints_no_tensorflow_noise(shared_bin_dir, tmp_path):
  # with Python's import times on stderr: a whole run imports no Keras
  # (TensorFlow's eager import is deferred, and nothing uses tf.keras)
  p = subprocess.run(
      [sys.executable, '-X', 'importtime', 'cifar10_train.py'] + train_args(
          shared_bin_dir, str(tmp_path / 't')) + ['--max_steps', '2'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  imports = [l for l in p.stderr.splitlines() if l.startswith('import time')]
  assert p.returncode == 0 and p.stderr.count('\n') == len(imports), p.stderr
  assert [l for l in imports if re.search(r'\| +tensorflow$', l)]
  assert not [l for l in imports if re.search(r'\| +keras$', l)]
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



# --- absl's flag conventions, and what the toolkit keeps of its own ---------

def test_flagfile_and_helpfull(tmp_path, capsys):
  flagfile = tmp_path / 'run.flags'
  flagfile.write_text('--max_steps=77\n--nouse_bf16\n--slices=2\n')
  cli.parse(cifar10_train.FLAGS, ['--flagfile', str(flagfile),
                                  '--log_frequency', '5'])
  train = cifar10_train.FLAGS
  assert (train.max_steps, train.use_bf16, train.slices,
          train.log_frequency) == (77, False, 2, 5)
  cli.parse(cifar10_train.FLAGS, [])  # each parse starts from the defaults
  assert (train.max_steps, train.use_bf16, train.slices) == (1000000, None,
                                                             'auto')
  with pytest.raises(SystemExit) as e:
    cli.parse(cifar10_train.FLAGS, ['--flagfile', str(tmp_path / 'none')])
  err = capsys.readouterr().err.strip().splitlines()
  assert e.value.code == 2 and len(err) == 1 and 'none' in err[0], err
  with pytest.raises(SystemExit) as e:
    cli.parse(cifar10_train.FLAGS, ['--helpfull'], 'The doc.')
  out = capsys.readouterr().out
  assert e.value.code == 0 and out.startswith('The doc.')
  assert '--flagfile' in out and '--max_steps' in out


@pytest.mark.parametrize('argv,message', [
    (['--max-steps', '10'], "Unknown command line flag 'max-steps'. Did you "
     "mean: max_steps ?"),
    (['--max_step', '10'], "Unknown command line flag 'max_step'. Did you "
     "mean: max_steps ?"),  # no abbreviations
    (['--log_frequency=0'], 'flag --log_frequency=0: 0 is not a positive '
     'integer'),
    (['--slices', '3'], '--slices 3 does not divide --batch_size 128'),
    (['--use_fp16', '--use_bf16'], '--use_fp16 and --use_bf16 exclude each '
     'other'),
    (['--save_checkpoint_secs=inf'], 'flag --save_checkpoint_secs=inf: must '
     'be a positive number'),
    (['1000'], "unexpected argument '1000'"),
])
def test_a_bad_flag_is_one_line_and_status_2(argv, message):
  p = subprocess.run([sys.executable, 'cifar10_train.py'] + argv, cwd=ROOT,
                     capture_output=True, text=True, timeout=60)
  assert p.returncode == 2 and p.stdout == ''
  assert p.stderr.splitlines() == ['cifar10_train.py: error: ' + message] or (
      len(p.stderr.splitlines()) == 1 and message in p.stderr), p.stderr


def test_help_answers_at_once_and_auto_is_a_value():
  p = subprocess.run([sys.executable, 'cifar10_train.py', '-h'], cwd=ROOT,
                     capture_output=True, text=True, timeout=60)
  assert p.returncode == 0 and p.stderr == ''
  assert p.stdout.startswith('Trains the CIFAR-10 convnet on one device')
  assert "--[no]use_bf16:" in p.stdout and "(default: 'auto')" in p.stdout


# --- a crash's last words reach the terminal --------------------------------

def _training(shared_bin_dir, tmp_path, env=None):
  """cifar10_train.py as a user starts it, stdout and stderr apart, once
  its start-up is over (a step line printed)."""
  proc = subprocess.Popen(
      [sys.executable, 'cifar10_train.py'] + train_args(
          shared_bin_dir, str(tmp_path / 't')) + [
              '--max_steps', '100000', '--steps_per_loop', '2'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, PYTHONUNBUFFERED='1', **(env or {})))
  for line in proc.stdout:
    if ': step 4, loss = ' in line:
      return proc
  proc.kill()
  raise AssertionError('no step line; stderr:\n' + proc.stderr.read())


@pytest.mark.slow
def test_a_segfault_during_training_leaves_faulthandlers_dump(
    shared_bin_dir, tmp_path):
  proc = _training(shared_bin_dir, tmp_path, {'PYTHONFAULTHANDLER': '1'})
  proc.send_signal(signal.SIGSEGV)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGSEGV
  assert 'Fatal Python error: Segmentation fault' in err, err


@pytest.mark.slow
def test_a_line_written_just_before_abort_arrives(shared_bin_dir, tmp_path):
  # sitecustomize gives the trainer a SIGUSR1 that writes a line to fd 2,
  # as a failing C++ CHECK does, and aborts at once
  site = tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(
      'import os, signal\n'
      'def _die(signum, frame):\n'
      '  os.write(2, b"F0000 last words before abort\\n")\n'
      '  os.abort()\n'
      'signal.signal(signal.SIGUSR1, _die)\n')
  proc = _training(shared_bin_dir, tmp_path, {'PYTHONPATH': str(site)})
  proc.send_signal(signal.SIGUSR1)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGABRT
  assert err.splitlines()[-1:] == ['F0000 last words before abort'], err


def test_startup_lines_are_kept_off_stderr_and_the_rest_passes(tmp_path):
  # the capture itself: benign lines dropped, others kept in order, and fd 2
  # the real stderr again afterwards
  code = (
      'import os, sys\n'
      'sys.path.insert(0, %r)\n'
      'from cifar10_toolkit import startup\n'
      'startup.hide_startup_noise()\n'
      'os.write(2, b"WARNING: All log messages before absl::InitializeLog() '
      'is called are written to STDERR\\nreal line 1\\n")\n'
      'startup.end_startup()\n'
      'os.write(2, b"real line 2\\n")\n'
      'print(os.readlink("/proc/self/fd/2"))\n' % ROOT)
  p = subprocess.run([sys.executable, '-c', code], capture_output=True,
                     text=True, timeout=60,
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert p.stderr == 'real line 1\nreal line 2\n'
  assert 'memfd' not in p.stdout


def test_tensorflow_loads_without_keras_and_tf_keras_still_works():
  # what parse_early does before every script imports TensorFlow: Keras,
  # which TensorFlow would import eagerly, is left until tf.keras is used
  code = (
      'import sys\n'
      'sys.path.insert(0, %r)\n'
      'sys.argv = ["script.py"]\n'
      'from absl import flags\n'
      'from cifar10_toolkit import cli, startup\n'
      'cli.parse_early(flags.FlagValues(), "doc")\n'
      'import tensorflow as tf\n'
      'startup.end_startup()\n'
      'print(sorted(m for m in ("keras", "matplotlib", "IPython")\n'
      '             if m in sys.modules))\n'
      'from tensorflow.keras import layers\n'
      'print(layers.Dense(3)(tf.ones([1, 2])).shape, "keras" in sys.modules)\n'
      % ROOT)
  p = subprocess.run([sys.executable, '-c', code], capture_output=True,
                     text=True, timeout=120)
  assert p.returncode == 0, p.stderr
  assert p.stdout == '[]\n(1, 3) True\n', p.stdout


@pytest.mark.slow
@pytest.mark.parametrize('script', ['cifar10_train.py',
                                    'cifar10_multi_gpu_train.py'])
def test_the_training_scripts_set_the_thread_pools_before_tensorflow_starts(
    script, shared_bin_dir, tmp_path):
  # the script run as __main__ (start-up capture, warm-up and all), with
  # hardware.set_threads watched: the pools must be set, not refused because
  # something started TensorFlow's runtime first
  code = (
      'import os, runpy, sys\n'
      'sys.path.insert(0, %r)\n'
      'from cifar10_toolkit import hardware\n'
      'real = hardware.set_threads\n'
      'def watched(device, slices):\n'
      '  took = real(device, slices)\n'
      '  import tensorflow as tf\n'
      '  print("POOLS", took, slices,\n'
      '        tf.config.threading.get_intra_op_parallelism_threads(),\n'
      '        flush=True)\n'
      '  return took\n'
      'hardware.set_threads = watched\n'
      'sys.argv = %r\n'
      'runpy.run_path(%r, run_name="__main__")\n' % (
          ROOT, [script] + train_args(shared_bin_dir, str(tmp_path / 't')) +
          ['--max_steps', '2', '--slices', '2'], script))
  p = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr
  cores = len(os.sched_getaffinity(0))
  assert 'POOLS True 2 %d\n' % max(1, cores // 2) in p.stdout, p.stdout
