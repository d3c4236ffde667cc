"""Measures the toolkit against Keras and PyTorch equivalents and against
the machine's own matmul ceiling, in one run on one machine.

    python3 -m benchmarks.benchmark [--quick | --smoke] [--data_dir /tmp/cifar10_data]
        [--torch_python /path/to/torch-env/bin/python]

Prints a table and writes it as JSON (--json, default
benchmarks/results/benchmark-<date>.json):
  - the distorted training input pipeline alone, examples/sec;
  - convnet training at batch 128 through train_loop.make_train_loop (the
    loop cifar10_train.py runs, the host reading the losses after each call):
    the default configuration (steps_per_loop 100, data on the device, the
    precision and the slices (--slices) cifar10_train picks, with the thread
    pools it sets), and each choice changed alone: one step per call,
    tf.data input, float32, one slice with TensorFlow's default threads; XLA
    (float32, one slice); and the earlier defaults (one step per call from
    tf.data, one slice);
  - host overhead per step at batch 2: a train_loop.train run (its real
    loop: console lines, NaN checks, signal and save checks; summaries and
    checkpoints set beyond the run) minus the same steps run in one call of
    one tf.function, their data already in memory; at the default
    steps_per_loop and at 1; and the cost of making the batches in the graph
    (those steps against the step on one fixed batch);
  - the same convnet written as a skilled user would in Keras (tf.keras
    layers, SGD 0.1, model.fit on the same tf.data input): float32, and
    mixed_bfloat16 (where the CPU has native bfloat16, or a GPU is present;
    LRN in float32, as TensorFlow has no bfloat16 LRN kernel on CPUs) with
    steps_per_execution 1 and 20; the ratio is the toolkit's default over the
    best of them;
  - the same convnet in PyTorch as a skilled user would write it for a CPU
    (benchmarks/torch_peer.py: bfloat16 autocast, channels_last, the LRN as
    a band-matrix matmul, torch.compile if faster), run by an interpreter
    of a separate environment that has torch (--torch_python); without
    one, one line says the row is skipped;
  - the machine's ceiling: a 2048^3 bfloat16 matmul (float32 where the CPU
    has no native bfloat16) on all cores, TFLOP/s, in TensorFlow and (with
    --torch_python) in PyTorch, the higher counting; and for every training
    row its achieved TFLOP/s (measures.flops_per_example(): 110.8 MFLOP an
    example) and its fraction of the ceiling; the ratio of the default to
    the best peer, Keras or PyTorch. The default training, its one-slice
    variant, the Keras configurations and PyTorch are timed in turns, round after round, each in a child
    process of its own kept alive throughout (see paired()), so that their
    ratios do not carry this machine's drift; the ratio is also printed for
    each round;
  - evaluation (cifar10_toolkit.evaluation.Evaluator), examples/sec;
  - the fully connected model's training, steps/sec;
  - peak resident memory of a cifar10_train.py run (a child process).
Warm-up (tracing) is excluded; each figure is the median of several timed
repeats. TensorFlow's thread pools are set once per process, so every figure
is measured in a child process: the paired ones first, then two processes
for the rest, one after the other (see measure()).
"""

import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # noqa: E402

import data_sets  # noqa: E402
from cifar10_toolkit import cli  # noqa: E402
from cifar10_toolkit import startup  # noqa: E402

PHASES = ('sliced', 'default')
SERVED = ('train_default', 'train_one_slice', 'keras', 'keras_bf16',
          'keras_bf16_spe20')

FLAGS = flags.FlagValues()
flags.DEFINE_boolean('quick', False, 'fewer, shorter repeats (about 4 '
                     'minutes on 2 cores)', flag_values=FLAGS)
flags.DEFINE_boolean('smoke', False, 'every row, with too few steps to mean '
                     'anything (a check that the benchmark runs)',
                     flag_values=FLAGS)
cli.mark_exclusive(FLAGS, 'quick', 'smoke')
cli.define_data_flags(FLAGS)
flags.DEFINE_string('json', None, 'where to write the results (default '
                    'benchmarks/results/benchmark-<date>.json)',
                    flag_values=FLAGS)
flags.DEFINE_string('torch_python', None, 'an interpreter that imports '
                    'torch (a separate environment with the CPU wheel): '
                    'the PyTorch row (default: $CIFAR10_TORCH_PYTHON, else '
                    'this one if it has torch; else the row is skipped)',
                    flag_values=FLAGS)
flags.DEFINE_enum('phase', None, PHASES, 'internal: a child measuring one '
                  'phase', flag_values=FLAGS)
flags.DEFINE_enum('serve', None, SERVED, 'internal: a child timing one '
                  'configuration in turns', flag_values=FLAGS)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads

import tensorflow as tf  # noqa: E402

from benchmarks import measures  # noqa: E402
from benchmarks import turns as paired_turns  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from benchmarks.measures import (BATCH_SIZE, OVERHEAD_BATCH, PLAN,  # noqa: E402
                      default_config)
from tools import gpu_audit  # noqa: E402
from tools import kernel_audit  # noqa: E402


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  startup.end_startup()  # stderr as it is: nothing must start TensorFlow yet
  mode = 'smoke' if FLAGS.smoke else 'quick' if FLAGS.quick else 'full'
  plan = PLAN[mode]
  plan_flags = ['--%s' % mode] if mode != 'full' else []
  if FLAGS.serve:  # a child timing one configuration in turns (paired())
    paired_turns.serve(FLAGS.serve, FLAGS.data_dir, plan)
    return 0
  if FLAGS.phase:  # a child: one phase's figures, as JSON, to --json
    with open(FLAGS.json, 'w') as f:
      json.dump(measures.measure(FLAGS.phase, FLAGS.data_dir, plan), f)
    return 0
  run_control.fetch_data_set(FLAGS.data_dir, FLAGS.data_source,
                             data_sets.CIFAR10)
  gpu = bool(tf.config.list_physical_devices('GPU'))
  began = time.time()

  results = {'machine': measures.machine(),
             'date': datetime.date.today().isoformat(), 'mode': mode,
             'plan': plan}
  fig = results['figures'] = {}
  fig['peak_train_rss_mb'] = measures.bench_memory(FLAGS.data_dir, plan)
  torch_python, why_not = paired_turns.torch_python(FLAGS.torch_python)
  if why_not:
    print('PyTorch row skipped: %s' % why_not, flush=True)
  turns, rounds = paired_turns.paired(FLAGS.data_dir, plan, plan_flags,
                                      torch_python=torch_python)
  fig.update(turns)
  # Thread pools are set once per process: each phase runs in a child.
  with tempfile.TemporaryDirectory() as tmp:
    for phase in PHASES:
      out = os.path.join(tmp, phase + '.json')
      subprocess.run(paired_turns.BENCHMARK + [
          '--phase', phase, '--json', out, '--data_dir',
          os.path.abspath(FLAGS.data_dir)] + plan_flags, check=True, cwd=ROOT)
      with open(out) as f:
        fig.update(json.load(f))
  if torch_python:  # the ceiling as PyTorch reaches it (oneDNN's own
    # matmul: higher than TensorFlow's on some CPUs): the higher counts
    tflops, dtype = subprocess.run(
        [torch_python, paired_turns.TORCH_PEER, '--ceiling'], check=True,
        capture_output=True, text=True, timeout=600).stdout.split()
    fig['ceiling_torch_tflops'] = {'median': float(tflops), 'dtype': dtype,
                                   'n': 2048}
  slices = results['slices'] = fig.pop('slices')
  defaults = default_config()
  default = tf.as_dtype(defaults.precision)
  n = defaults.steps_per_loop
  on = defaults.data_on_device

  keras_keys = [k for k in fig if k.startswith('keras')]
  peer_keys = keras_keys + [k for k in ('torch',) if k in fig]
  best_keras = max(keras_keys, key=lambda k: fig[k]['median'])
  best_peer = max(peer_keys, key=lambda k: fig[k]['median'])
  train_keys = [k for k in fig if k.startswith('train')]
  best = max(train_keys, key=lambda k: fig[k]['median'])
  ceiling = max(fig[k]['median'] for k in ('ceiling_tflops',
                                            'ceiling_torch_tflops') if k in fig)
  tflops = {k: fig[k]['median'] * measures.flops_per_example() / 1e12
            for k in train_keys + peer_keys}
  ratios = results['ratios'] = {
      'best_keras': best_keras,
      'best_peer': best_peer,
      'default_over_best_peer': fig['train_default']['median'] /
                                fig[best_peer]['median'],
      'default_over_best_peer_by_round': [
          r['train_default'] / max(r[k] for k in peer_keys) for r in rounds],
      'tflops': tflops,
      'fraction_of_ceiling': {k: v / ceiling for k, v in tflops.items()},
      'default_over_best_keras': fig['train_default']['median'] /
                                 fig[best_keras]['median'],
      'default_over_previous_default': fig['train_default']['median'] /
                                       fig['train_previous']['median'],
      'default_over_one_slice': fig['train_default']['median'] /
                                fig.get('train_one_slice',
                                        fig['train_default'])['median'],
      'default_over_best_keras_by_round': [
          r['train_default'] / max(r[k] for k in keras_keys) for r in rounds],
      'best_train': best,
      'pipeline_over_default_train': fig['pipeline']['median'] /
                                     fig['train_default']['median']}
  # executor ops per step of the graph loop (kernel_audit.ops_per_step): the
  # CPU default, and the GPU configuration (one slice, XLA) traced here
  fig['ops_per_step'] = {
      'cpu_default':
          kernel_audit.ops_per_step(
              gpu_audit.trace(gpu_audit.Config(1, default.name, on, False),
                              slices)['train_loop']),
      'gpu_configuration':
          kernel_audit.ops_per_step(
              gpu_audit.trace(gpu_audit.Config(1, default.name, True,
                                               True))['train_loop'])
  }
  results['seconds'] = time.time() - began

  m = results['machine']
  print('\nCIFAR-10 toolkit benchmark, %s, %s (%d cores%s), TensorFlow %s, '
        '%s mode, batch %d' % (
            results['date'], m['cpu'], m['cores'],
            ', ' + ', '.join(m['gpus']) if m['gpus'] else ', no GPU',
            m['tensorflow'], results['mode'], BATCH_SIZE))
  print('%-58s %12s' % ('measurement', 'median'))
  data = 'data on device' if on else 'tf.data'
  labels = {
      'pipeline': 'input pipeline alone (examples/sec)',
      'train_default': 'training, default: %s, %s, %d steps/call, %d '
                       'slice(s) (examples/sec)' % (default.name, data, n,
                                                    slices),
      'train_loop1': '  default but 1 step per call (examples/sec)',
      'train_tfdata': '  default but tf.data input (examples/sec)',
      'train_device': '  default but data on device (examples/sec)',
      'train': '  default but float32 (examples/sec)',
      'train_xla': '  float32 with XLA, 1 slice (examples/sec)',
      'train_fp16': '  use_fp16 (examples/sec)',
      'train_one_slice': '  default but 1 slice, default threads '
                         '(examples/sec)',
      'train_previous': '  earlier defaults: tf.data, 1 step/call, 1 slice '
                        '(examples/sec)',
      'keras': 'Keras model.fit, float32 (examples/sec)',
      'keras_bf16': 'Keras, mixed_bfloat16 (examples/sec)',
      'keras_bf16_spe20': 'Keras, mixed_bfloat16, steps_per_execution 20 '
                          '(examples/sec)',
      'torch': 'PyTorch (benchmarks/torch_peer.py) (examples/sec)',
      'eval': 'evaluation (examples/sec)',
      'fc_steps_per_sec': 'fully connected training (steps/sec)'}
  print('%-58s %12s %14s' % ('', '', 'TFLOP/s, ceiling'))
  for key, label in labels.items():
    if key in tflops:
      print('%-58s %12.1f %8.3f %4.0f%%' % (label, fig[key]['median'],
                                            tflops[key],
                                            100 * tflops[key] / ceiling))
    elif key in fig:
      print('%-58s %12.1f' % (label, fig[key]['median']))
  for key, who in (('ceiling_tflops', ''), ('ceiling_torch_tflops',
                                           ', PyTorch')):
    if key in fig:
      print('%-58s %12.3f' % ('ceiling: %s matmul %d^3, all cores%s '
                              '(TFLOP/s)' % (fig[key]['dtype'],
                                             fig[key]['n'], who),
                              fig[key]['median']))
  for key, what in (('overhead_ms', '%d steps/call' % n),
                    ('overhead_ms_loop1', '1 step/call')):
    o = fig[key]
    print('%-58s %12.3f' % ('host overhead per step, batch %d, %s (ms)' % (
        OVERHEAD_BATCH, what), o['median']))
    print('%-58s %12s' % ('  (paired: loop %.3f ms - all in one call %.3f ms)'
                          % (statistics.median(o['loop_ms_per_step']),
                             statistics.median(o['one_call_ms_per_step'])),
                          ''))
  derived = fig['overhead_ms_loop1']['median'] / n
  results['ratios']['overhead_ms_derived'] = derived
  print('%-58s %12.3f' % ('  derived: the 1 step/call overhead / %d (ms)' % n,
                          derived))
  print('%-58s %12.3f' % ('  batches made in the graph, per step (ms)',
                          fig['overhead_ms']['batches_in_graph_ms']))
  if not gpu:
    print('%-58s %12s' % ('  with use_fp16', 'n/a (no GPU)'))
  print('%-58s %12.0f' % ('peak RSS of cifar10_train.py (MB)',
                          fig['peak_train_rss_mb']))
  ops = fig['ops_per_step']
  print('%-58s %12d' % ('executor ops per step, the CPU default',
                        ops['cpu_default']))
  print('%-58s %12d' % ('executor ops per step, the GPU configuration (XLA)',
                        ops['gpu_configuration']))
  print('%-58s %12.2f' % ('default training / best peer (%s)' % best_peer,
                          ratios['default_over_best_peer']))
  print('%-58s %12s' % ('  in each round: %s' % ' '.join(
      '%.2f' % x for x in ratios['default_over_best_peer_by_round']), ''))
  print('%-58s %12.2f' % ('default training / best Keras (%s)' % best_keras,
                          ratios['default_over_best_keras']))
  by_round = ratios['default_over_best_keras_by_round']
  print('%-58s %12s' % ('  in each round: %s' % ' '.join(
      '%.2f' % x for x in by_round), ''))
  print('%-58s %12.2f' % ('default training / earlier defaults',
                          ratios['default_over_previous_default']))
  print('%-58s %12.2f' % ('default training / the same in 1 slice',
                          ratios['default_over_one_slice']))
  print('%-58s %12.2f' % ('input pipeline / default training',
                          ratios['pipeline_over_default_train']))
  print('(%.0f s in all)' % results['seconds'])

  path = FLAGS.json or os.path.join(
      ROOT, 'benchmarks', 'results', 'benchmark-%s.json' % results['date'])
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(results, f, indent=2)
  print('wrote %s' % path)
  return 0


if __name__ == '__main__':  # (no warm-up first: the children set the pools)
  sys.exit(run_control.run_main(main, ends_startup=False))
