"""Paths TensorFlow cannot take, refused before any work: one line naming
the flag, exit status 2, nothing written (a name that is not UTF-8, which
TensorFlow's file functions cannot encode; a folder too long for the names
a run writes in it, which failed only at the first save)."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

BAD = b'runs/bad\xff\xfe'


def _run(args):
  return subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True,
                        text=True, timeout=120)


@pytest.mark.parametrize('script, flag', [
    ('cifar10_train.py', '--train_dir'),
    ('cifar10_eval.py', '--eval_dir'),
    ('cifar10_export.py', '--export_dir'),
    ('run_fc_model.py', '--train_dir'),
])
def test_a_path_that_is_not_utf8_is_one_line(tmp_path, script, flag):
  where = os.path.join(os.fsencode(str(tmp_path)), BAD, b'x')
  proc = _run([script, flag, os.fsdecode(where)])
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.splitlines() == [
      '%s: error: %s %s/runs/bad\\xff\\xfe/x: not UTF-8, which TensorFlow '
      'cannot open; rename it' % (script, flag, tmp_path)]
  assert os.listdir(str(tmp_path)) == []


def test_a_folder_too_long_for_its_checkpoints_is_refused_at_once(tmp_path):
  """4,050 bytes: under PATH_MAX, so the run started, and its first save
  failed (ckpt-N_temp/part-...tempstate... is longer)."""
  parts = ['a' * 200] * 20
  where = os.path.join(str(tmp_path), *parts)[:4050]
  proc = _run(['cifar10_train.py', '--train_dir', where])
  assert proc.returncode == 2
  (line,) = proc.stderr.splitlines()
  assert line.startswith('cifar10_train.py: error: --train_dir %s' %
                         str(tmp_path)[:30])
  assert line.endswith(': too long (4050 bytes): with the 256 bytes of the '
                       "names written in it, over the system's 4096")
  assert os.listdir(str(tmp_path)) == []
  proc = _run(['cifar10_eval.py', '--checkpoint_dir',
               os.path.join(str(tmp_path), 'b' * 300)])
  assert proc.returncode == 2 and proc.stderr.strip().endswith(
      ': a name in it is 300 bytes long, over the 255 allowed')
