"""The defaults train exactly as before: the weights after 50 steps at a
fixed seed equal those of the code before the data-set seam (main at the
commit that tests/data/defaults_50_steps.json names; tests/baseline.py
records them, per kind of CPU).

Where the file holds a record of this CPU's kind (baseline.cpu_kind: its
model name and the vector instructions that pick the kernels) the check is
bitwise: the md5 of every variable. On another kind, where the checkout
has that commit (a git clone), the commit's own scripts are run here too
and the check is bitwise against them. Otherwise (no history) each
variable's L2 norm must agree with the first record to a tolerance:
kernels that sum in another order move 50 steps' weights a little (Zen 4
against Zen 1: the float32 norms by up to 2e-5 and 0.17%, the bfloat16 ones
by up to 2e-4 and 1.4%, most in the biases, which start at 0). bfloat16 is
checked where the defaults pick it (a processor with native bfloat16):
elsewhere it is emulated and slow, and no default.
"""

import json
import os
import subprocess

import pytest


import baseline
import conftest
from cifar10_toolkit import hardware

pytestmark = pytest.mark.slow

with open(os.path.join(baseline.HERE, 'data', 'defaults_50_steps.json')) as f:
  RECORDED = json.load(f)
# name -> (rel, abs): the norms' tolerance on a CPU of no record
TOLERANCE = {'convnet_bfloat16': (1e-2, 5e-4)}
DEFAULT_TOLERANCE = (1e-3, 1e-4)
# this CPU kind's recorded runs, or None
THIS_CPU = next((r['runs'] for r in RECORDED['records']
                 if r['cpu'] == baseline.cpu_kind()), None)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('baseline_data'))
  conftest.write_bin(d, per_file=200)
  return d


@pytest.fixture(scope='module')
def old_checkout(tmp_path_factory):
  """The recorded commit's files, from this checkout's git history (read
  only), where this CPU's kind has no record; else None, as where git or
  the commit is absent."""
  if THIS_CPU is not None:
    return None
  commit = RECORDED['commit']
  try:
    found = subprocess.run(
        ['git', 'cat-file', '-e', commit + '^{commit}'], cwd=conftest.ROOT,
        capture_output=True, timeout=60).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    found = False
  if not found:
    return None
  out = tmp_path_factory.mktemp('baseline_' + commit)
  archive = subprocess.run(['git', 'archive', commit], cwd=conftest.ROOT,
                           capture_output=True, check=True, timeout=120)
  subprocess.run(['tar', '-x', '-C', str(out)], input=archive.stdout,
                 check=True, timeout=120)
  return str(out)


@pytest.mark.parametrize('name', sorted(baseline.RUNS))
def test_the_weights_after_50_steps_are_as_recorded(name, data_dir, tmp_path,
                                                    old_checkout):
  if name.startswith('convnet') and not conftest.is_tutorial_convnet():
    pytest.skip(conftest.NOT_THE_TUTORIALS)
  if name == 'convnet_bfloat16' and not hardware.describe().native_bf16:
    pytest.skip('bfloat16 is emulated on this processor (the defaults pick '
                'float32 here)')
  got = baseline.digest(baseline.train(conftest.ROOT, name, data_dir,
                                       str(tmp_path / 'train')))
  recorded = THIS_CPU
  if recorded is None and old_checkout is not None:
    recorded = {name: baseline.digest(baseline.train(
        old_checkout, name, data_dir, str(tmp_path / 'old')))}
  want = (recorded or RECORDED['records'][0]['runs'])[name]
  assert set(want) <= set(got)  # (a checkpoint may record more now)
  if recorded is not None:
    differ = [k for k in want if got[k][0] != want[k][0]]
    assert not differ, 'not bitwise equal: %s' % differ
  else:
    rel, tol = TOLERANCE.get(name, DEFAULT_TOLERANCE)
    for k in want:
      assert got[k][1] == pytest.approx(want[k][1], rel=rel, abs=tol), k
