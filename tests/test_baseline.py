"""The defaults train exactly as before: the weights after 50 steps at a
fixed seed equal those recorded from the code before the data-set seam
(tests/data/defaults_50_steps.json, made by tests/baseline.py).

On the processor model that recorded them the check is bitwise (the md5 of
every variable); on another (its kernels may sum in another order) each
variable's L2 norm must agree to a tolerance. bfloat16 is checked where the
defaults pick it (a processor with native bfloat16): elsewhere it is
emulated and slow, and no default.
"""

import json
import os

import pytest


import baseline
import conftest
from cifar10_toolkit import hardware

pytestmark = pytest.mark.slow

with open(os.path.join(baseline.HERE, 'data', 'defaults_50_steps.json')) as f:
  RECORDED = json.load(f)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('baseline_data'))
  conftest.write_bin(d, per_file=200)
  return d


@pytest.mark.parametrize('name', sorted(baseline.RUNS))
def test_the_weights_after_50_steps_are_as_recorded(name, data_dir, tmp_path):
  if name.startswith('convnet') and not conftest.is_tutorial_convnet():
    pytest.skip(conftest.NOT_THE_TUTORIALS)
  if name == 'convnet_bfloat16' and not hardware.describe().native_bf16:
    pytest.skip('bfloat16 is emulated on this processor (the defaults pick '
                'float32 here)')
  got = baseline.digest(baseline.train(conftest.ROOT, name, data_dir,
                                       str(tmp_path / 'train')))
  want = RECORDED['runs'][name]
  assert set(want) <= set(got)  # (a checkpoint may record more now)
  if baseline.cpu_model() == RECORDED['cpu']:
    differ = [k for k in want if got[k][0] != want[k][0]]
    assert not differ, 'not bitwise equal: %s' % differ
  else:
    rtol = 1e-2 if name == 'convnet_bfloat16' else 1e-3
    for k in want:
      assert got[k][1] == pytest.approx(want[k][1], rel=rtol, abs=1e-6), k
