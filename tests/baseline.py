"""The defaults' weights after 50 steps at a fixed seed, as a digest.

  python3 tests/baseline.py CHECKOUT OUT.json   records them from CHECKOUT's
                                                scripts on this machine's
                                                kind of CPU (run from the
                                                code before a change) and
                                                adds them to OUT.json
  test_baseline.py trains the same runs with this checkout and compares.

A run is a script run as a subprocess on the tiny data set that
conftest.write_bin makes (seed 0, 5 x 200 training records), with fixed
flags: the computation is the same on every machine. The digest of a
checkpoint is, per variable, the md5 of its bytes (equal where the CPU
that recorded it runs the same kernels: the same model name and the same
vector instructions, cpu_kind) and its L2 norm (close on any CPU).
"""

import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

STEPS = 50
# name -> (script, flags); the convnet's three paths (the defaults' feed in
# float32 and in bfloat16, the tf.data feed) and the fully connected model.
RUNS = {
    'convnet_float32': ('cifar10_train.py', [
        '--use_bf16=false', '--slices', '2', '--data_on_device',
        '--nojit_compile']),
    'convnet_bfloat16': ('cifar10_train.py', [
        '--use_bf16', '--slices', '2', '--data_on_device',
        '--nojit_compile']),
    'convnet_tf_data': ('cifar10_train.py', [
        '--use_bf16=false', '--slices', '1', '--nodata_on_device',
        '--nojit_compile']),
    'fc': ('run_fc_model.py', ['--batch_size', '100']),
}


# The instructions by which oneDNN and Eigen pick their kernels, hence the
# order in which they sum: two CPUs that share a model name can differ in
# them (every AMD EPYC is 'AMD EPYC'; Zen 4 has AVX-512, Zen 1 and 2 not).
KERNEL_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16',
                'avx512_fp16', 'avx_vnni', 'amx_tile', 'amx_bf16')


def cpu_kind():
  """The processor's model name and its KERNEL_FLAGS, e.g. 'AMD EPYC:
  avx2 fma' (a digest's md5s hold only on its kind)."""
  name, flags = 'unknown', set()
  with open('/proc/cpuinfo') as f:
    for line in f:
      key, _, value = line.partition(':')
      if key.strip() == 'model name':
        name = value.strip()
      elif key.strip() == 'flags':
        flags = set(value.split())
  return '%s: %s' % (name, ' '.join(f for f in KERNEL_FLAGS if f in flags))


def digest(path):
  """{variable name: [md5 of its bytes, L2 norm]} of a checkpoint."""
  import tensorflow as tf
  reader = tf.train.load_checkpoint(path)
  out = {}
  for key in sorted(reader.get_variable_to_shape_map()):
    if not key.endswith('VARIABLE_VALUE'):
      continue
    value = np.asarray(reader.get_tensor(key))
    if value.dtype.kind not in 'fiu':
      continue
    out[key] = [hashlib.md5(value.tobytes()).hexdigest(),
                float(np.sqrt(np.sum(np.square(value.astype(np.float64)))))]
  return out


def train(checkout, name, data_dir, train_dir):
  """Runs RUNS[name] with checkout's script; the path of its checkpoint."""
  script, flags = RUNS[name]
  args = [sys.executable, script, '--data_dir', data_dir, '--train_dir',
          train_dir, '--seed', '7', '--max_steps', str(STEPS)] + flags
  if script == 'cifar10_train.py':
    args += ['--log_frequency', '10', '--summary_steps', '1000']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(args, cwd=checkout, env=env, capture_output=True,
                        text=True, timeout=600, stdin=subprocess.DEVNULL)
  if proc.returncode:
    raise AssertionError('%s exited %d:\n%s%s' % (
        name, proc.returncode, proc.stdout, proc.stderr))
  pattern = ('ckpt-%d.index' if script == 'cifar10_train.py'
             else '*/ckpt-%d.index') % STEPS
  found = glob.glob(os.path.join(train_dir, pattern))
  assert len(found) == 1, (name, found, proc.stdout)
  return found[0][:-len('.index')]


def record(checkout, out):
  """Trains RUNS with checkout's scripts (a git checkout) and writes their
  digests into out's records, under this CPU's kind (replacing its earlier
  record; all of them where out names another commit)."""
  import conftest
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                          cwd=checkout, capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()
  result = {'commit': commit, 'steps': STEPS, 'records': []}
  if os.path.exists(out):
    with open(out) as f:
      old = json.load(f)
    if old.get('commit') == commit:  # (another commit's records go)
      result = old
  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, 'data')
    conftest.write_bin(data, per_file=200)
    runs = {}
    for name in RUNS:
      path = train(checkout, name, data, os.path.join(tmp, name))
      runs[name] = digest(path)
      print(name, len(runs[name]), 'variables')
  kind = cpu_kind()
  result['records'] = [r for r in result['records'] if r['cpu'] != kind]
  result['records'].append({'cpu': kind, 'runs': runs})
  with open(out + '.tmp', 'w') as f:
    json.dump(result, f, indent=1, sort_keys=True)
  os.replace(out + '.tmp', out)


if __name__ == '__main__':
  record(os.path.abspath(sys.argv[1]), sys.argv[2])
