"""The one summary convention of both models: scalars, histograms, the
graph, HParams, the profiler.

  summary_writer(logdir)              a tf.summary writer for a run folder
  write_scalars, write_histograms     tags and buckets as TensorBoard expects
  write_summaries(...)                the tutorial's summaries of a step
  write_graph(fn, args)               the traced step, once per run
  write_hparams                       a run's values for HParams
  save_run_hparams, load_run_hparams  the same, for the evaluator's row
  Profile                             --profile_steps A,B
  SharedScopes                        one graph box per layer, however
                                      many slices build it
"""

import collections
import contextlib
import json
import os
import stat

import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata

from cifar10_toolkit import errors
from cifar10_toolkit import folders
from cifar10_toolkit import run_control

HISTOGRAM_BUCKETS = 30  # as tf.summary.histogram
# The scalars the HParams dashboard shows beside a convnet run's values:
# (tag, sub-folder of the run, name). The training run brings its loss and
# the evaluator, wherever its --eval_dir, the precision of that run's
# checkpoints: both write the same trial id, which makes them one row. The
# precision first: the dashboard's columns are 10em each, so the first
# metric is the one a narrower window still shows (docs/tensorboard.md).
CONVNET_METRICS = [('Precision @ 1', '', 'precision @ 1 (eval)'),
                   ('total_loss', '', 'training loss (averaged)')]


def summary_writer(logdir, flag='--train_dir'):
  """tf.summary.create_file_writer, with one-line errors naming the flag."""
  try:
    return tf.summary.create_file_writer(logdir)
  except tf.errors.OpError as e:
    raise errors.UsageError('%s %s: cannot write event files (%s)' % (
        flag, logdir, run_control.first_line(e)))


def write_hparams(values, metrics, trial_id=None):
  """Writes a run's hyperparameters to TensorBoard's HParams dashboard.

  Args:
    values: ordered dict name -> value (config.hparams_values()), most
      telling first: a column each.
    metrics: list of (tag, group, display name): the scalars to show beside
      them; group is the sub-folder of the run that holds the tag ('' for the
      run itself).
    trial_id: the session group: runs written with the same trial_id (a
      training run and the evaluation of its checkpoints, in whatever
      folders) make one row, each bringing its own metrics.
  """
  # summary_v2 is what hparams.api re-exports, less its Keras callback
  # (for which api imports Keras: see startup.defer_keras)
  from tensorboard.plugins.hparams import summary_v2 as hp
  ranked = ranked_names(values)
  hp.hparams_config(
      hparams=[hp.HParam(ranked[k], display_name=k) for k in values],
      metrics=[hp.Metric(tag, group=group or None, display_name=name)
               for tag, group, name in metrics])
  hp.hparams({ranked[k]: v for k, v in values.items()}, trial_id=trial_id)


def ranked_names(values):
  """name -> the name HParams gets: '01_seed', '02_precision', ... in the
  order of values. TensorBoard sorts its columns by name (the ones whose
  values differ between runs first) and ticks the first five, so the rank
  puts the most telling first; each column shows the plain name, its
  display name."""
  return {k: '%02d_%s' % (i + 1, k) for i, k in enumerate(values)}


HPARAMS_FILE = 'hparams.json'


def save_run_hparams(train_dir, values, trial_id):
  """Keeps a run's HParams in train_dir, for the evaluator to join its row.

  Written whole or not at all (a temporary file renamed into place).
  """
  folders.write_whole(os.path.join(train_dir, HPARAMS_FILE), json.dumps(
      {'trial_id': trial_id, 'hparams': values}, indent=1), '.hparams-')


def load_run_hparams(train_dir):
  """(trial_id, values) that save_run_hparams kept, or (None, None); a
  FIFO or other non-file in its place is passed over (no wait)."""
  path = os.path.join(train_dir, HPARAMS_FILE)
  try:
    if not stat.S_ISREG(os.stat(path).st_mode):
      return None, None
    with open(path) as f:
      kept = json.load(f)
    return str(kept['trial_id']), collections.OrderedDict(kept['hparams'])
  except (OSError, ValueError, KeyError, TypeError):
    return None, None


class Profile:
  """--profile_steps A,B: a profiler trace from step A to step B.

  Call at(step) between steps; it starts the trace at A and stops it at B.
  until(step) is the next step at which a loop must pause for it (on every
  worker, record or not: their calls pair up). As a context manager, it
  stops a trace in progress on leaving.
  """

  def __init__(self, steps, logdir, record=True):
    self.steps, self.logdir, self.active = steps, logdir, False
    self.record = record

  def until(self, step):
    for s in self.steps or ():
      if s > step:
        return s
    return None

  def at(self, step):
    if not self.steps or not self.record:
      return
    if step == self.steps[0] and not self.active:
      tf.profiler.experimental.start(self.logdir)
      self.active = True
      print('Profiling steps %d to %d into %s' % (
          self.steps[0] + 1, self.steps[1], self.logdir), flush=True)
    elif step >= self.steps[1] and self.active:
      self.stop()

  def stop(self):
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False

  def __enter__(self):
    return self

  def __exit__(self, *exc):  # a trace in progress is saved, whatever happened
    self.stop()
    return False


def write_scalars(values, step):
  """Writes name -> scalar to the default summary writer."""
  for name, value in values.items():
    tf.summary.scalar(name, value, step=step)


def histogram_buckets(values, buckets=HISTOGRAM_BUCKETS):
  """The [buckets, 3] (left edge, right edge, count) of tf.summary.histogram.

  The same buckets (equal widths from min to max, the maximum in the last),
  counted with tf.histogram_fixed_width: tf.summary.histogram builds a float64
  one-hot of size values x buckets (1.1 GB for conv1's activations of a
  batch), which made summary steps take a second and most of the memory.
  """
  x = tf.reshape(tf.cast(values, tf.float32), [-1])
  lo, hi = tf.reduce_min(x), tf.reduce_max(x)
  lo64, hi64 = tf.cast(lo, tf.float64), tf.cast(hi, tf.float64)
  # No Python branch on tensors (this runs inside tf.function, with or
  # without AutoGraph): a single value goes wholly into the last bucket, as
  # TensorBoard does, and its edges all equal that value.
  single = hi <= lo
  counts = tf.where(
      single, tf.one_hot(buckets - 1, buckets, on_value=tf.size(x),
                         dtype=tf.int32),
      tf.histogram_fixed_width(x, tf.stack([lo, tf.where(single, lo + 1, hi)]),
                               nbins=buckets))
  edges = tf.concat([tf.linspace(lo64, hi64, buckets + 1)[:-1], [hi64]], 0)
  left, right = edges[:-1], edges[1:]
  return tf.stack([left, right, tf.cast(counts, tf.float64)], axis=1)


# histogram_buckets of a flat float32 tensor as one graph function, traced
# once: a model of a hundred variables writes two hundred histograms, and
# building each anew cost a tenth of a second of its first summary step.
_flat_histogram = tf.function(
    histogram_buckets, autograph=False,
    input_signature=[tf.TensorSpec([None], tf.float32)])


def write_histograms(values, step, suffix=''):
  """Writes name -> tensor histograms to the default summary writer."""
  for name, value in values.items():
    tag = name + suffix
    tf.summary.write(
        tag, _flat_histogram(tf.reshape(tf.cast(value, tf.float32), [-1])),
        step=step, metadata=histogram_metadata.create_summary_metadata(tag,
                                                                       ''))


def write_summaries(out, model, state, step, steps_per_sec, model_lib,
                    input_lib):
  """The tutorial's summaries of a step's outputs (docs/tensorboard.md)."""
  averages = model_lib.loss_averages(state)
  write_scalars({'learning_rate': out['learning_rate'],
                 'global_step/sec': steps_per_sec}, step)
  for name in state.loss_averages:
    tf.summary.scalar(name + ' (raw)', out[name], step=step)
    tf.summary.scalar(name, averages[name], step=step)
  write_histograms(out['activations'], step, '/activations')
  write_scalars({layer + '/sparsity': tf.math.zero_fraction(act)
                 for layer, act in out['activations'].items()}, step)
  write_histograms(model.params, step)
  write_histograms(out['gradients'], step, '/gradients')
  input_lib.image_summary(out['images'], step)


def write_graph(fn, args):
  """Calls the tf.function fn(*args) and writes its graph (the Graphs tab).

  The graph of fn's own concrete function, not a trace of whatever ran:
  a trace window also records functions TensorFlow instantiates meanwhile
  (its own summary-writing function, the first time in a process).

  Returns fn's result.
  """
  result = fn(*args)
  tf.summary.graph(fn.get_concrete_function(*args).graph)
  return result


class SharedScopes:
  """Name scopes opened again under the same name, not as 'conv1_1'.

  The slices of a batch each build the layers (convnet.inference); with one
  of these their operations fall into one box per layer in TensorBoard's
  graph (train_step/conv1 holds every slice's convolution), as the tutorial
  drew it.
  """

  def __init__(self):
    self.full = {}

  @contextlib.contextmanager
  def __call__(self, name):
    with tf.name_scope(self.full.get(name, name)) as full:
      self.full.setdefault(name, full)
      yield full
