"""The hardware policy: what the 'auto' flags pick on the machine at hand.

Each choice is a pure function of a Device description, so that a GPU's
defaults are tested on a CPU with made-up descriptions:

  describe() -> Device                  this machine (its first GPU, else CPU)
  auto_precision(device) -> dtype name  --use_bf16 / --use_fp16 unset
  auto_jit_compile(device) -> bool      --jit_compile auto
  auto_slices(device, batch, replicas, min)   --slices auto
  auto_data_on_device(device) -> bool   --data_on_device auto
  set_memory_growth()                   every script, before TensorFlow
                                        allocates on a GPU
  set_threads(device, slices)           TensorFlow's CPU thread pools
  precision(use_fp16, use_bf16, device) the precision flags resolved

cifar10_toolkit.config resolves a run's flags with them, once.

What a GPU gets (one slice, XLA, bfloat16 or float16) is reasoned from
TensorFlow's kernel registry and the counted launches (tools/gpu_audit.py), not
measured on a GPU: see the README.
"""

import collections
import os

import tensorflow as tf


# kind: 'GPU' or 'CPU'; compute_capability: (major, minor) of a GPU, else
# None; cores: the cores this process may run on; native_bf16: the device
# computes bfloat16 natively (a GPU from compute capability 8.0, a CPU with
# AMX or AVX512-BF16).
Device = collections.namedtuple('Device',
                                'kind compute_capability cores native_bf16')

# Compute capabilities: bfloat16 tensor cores from 8.0 (Ampere), float16
# tensor cores from 7.0 (Volta).
BF16_CAPABILITY = (8, 0)
FP16_CAPABILITY = (7, 0)


def usable_cores():
  """The cores this process may run on."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def native_bf16_cpu():
  """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16)."""
  try:
    with open('/proc/cpuinfo') as f:
      flags = f.read()
  except OSError:
    return False
  return ' amx_bf16' in flags or ' avx512_bf16' in flags


def describe():
  """The compute device training would use here: the first GPU, else the CPU.

  Returns:
    Device.
  """
  gpus = tf.config.list_physical_devices('GPU')
  if gpus:
    try:
      details = tf.config.experimental.get_device_details(gpus[0])
    except (ValueError, TypeError):  # (a test's made-up device)
      details = {}
    capability = tuple(details.get('compute_capability') or (0, 0))
    return Device('GPU', capability, usable_cores(),
                  capability >= BF16_CAPABILITY)
  return Device('CPU', None, usable_cores(), native_bf16_cpu())


def auto_precision(device):
  """The compute precision when no precision flag is given.

  bfloat16 where the device computes it natively (float32's range: no loss
  scaling); on a GPU without it, float16 (with dynamic loss scaling) from
  compute capability 7.0, where tensor cores take it; else float32.

  Returns:
    'float32', 'bfloat16' or 'float16'.
  """
  if device.native_bf16:
    return 'bfloat16'
  if device.kind == 'GPU' and device.compute_capability >= FP16_CAPABILITY:
    return 'float16'
  return 'float32'


def auto_jit_compile(device):
  """--jit_compile auto: XLA on a GPU, where a step is otherwise hundreds
  of kernel launches (tools/gpu_audit.py counts them); off on a CPU, where XLA
  measured slower than TensorFlow's oneDNN kernels (see the README)."""
  return device.kind == 'GPU'


def auto_slices(device, batch_size, replicas, min_examples):
  """--slices auto: the slices one replica's batch is computed in.

  1 on a GPU or with several replicas (they already split the work); on a
  CPU with one replica, the largest count up to its cores that divides the
  batch into slices of at least min_examples examples.
  """
  if device.kind == 'GPU' or replicas > 1:
    return 1
  return max(n for n in range(1, device.cores + 1)
             if batch_size % n == 0 and
             (n == 1 or batch_size // n >= min_examples))


def auto_data_on_device(device):
  """--data_on_device auto: the training set on the device, on GPUs and
  CPUs alike (150 MB as 32-bit words, every op of the in-graph input with
  a GPU kernel; no host round trip per step)."""
  del device
  return True


def set_memory_growth():
  """Lets TensorFlow take GPU memory as it needs it, not all at once, so
  that cifar10_eval.py can run beside cifar10_train.py on one card. Call
  before anything runs on a GPU (run_main does, for every script)."""
  for gpu in tf.config.list_physical_devices('GPU'):
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except (RuntimeError, ValueError):  # already initialized: keep it
      pass


def set_threads(device, slices):
  """TensorFlow's thread pools for `slices` slices side by side on a CPU.

  Each kernel gets cores // slices threads (one, on 2 cores) and as many
  kernels run at once as there are slices: one slice's kernels on each core,
  instead of every kernel split over all the cores, which leaves them idle in
  turn (the convnet's kernels are small). Nothing is changed for one slice,
  on a GPU, or once TensorFlow has started running (a test calling main()
  twice): the pools only set the speed, never the results.

  Returns:
    False when the pools were wanted but TensorFlow had already started
    (a benchmark insists on them); else True.
  """
  if slices > 1 and device.kind == 'CPU':
    try:
      tf.config.threading.set_intra_op_parallelism_threads(
          max(1, device.cores // slices))
      tf.config.threading.set_inter_op_parallelism_threads(max(2, slices))
    except RuntimeError:  # already running: keep its pools
      return False
  return True


def precision(use_fp16, use_bf16, device):
  """The compute precision's name from --use_fp16 / --use_bf16 (True, False
  or None: auto_precision). The flags' validator refuses both at once."""
  if use_fp16:
    return 'float16'
  if use_bf16 is None:
    return auto_precision(device)
  return 'bfloat16' if use_bf16 else 'float32'
