"""Evaluates CIFAR-10 convnet checkpoints with the moving-average weights.

    python3 cifar10_eval.py --run_once
    python3 cifar10_eval.py            # evaluate each new checkpoint as it appears

Prints `<datetime>: precision @ 1 = 0.NNN` and per-class precision and
recall; writes 'Precision @ 1', a confusion-matrix image and the same matrix
as a Markdown table to eval_dir at the checkpoint's global step, for
TensorBoard, with the training run's HParams so that its row shows the
precision. --raw_weights evaluates the trained weights instead of their
moving averages (the tutorial's exercise).
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from cifar10_toolkit import startup
if __name__ == '__main__':
  startup.quiet_interrupt()  # first: a Ctrl-C while TensorFlow loads is one line

import math
import sys
import time

from absl import flags

import data_sets
import models
from cifar10_toolkit import cli

POLL_SECS = 2  # watch mode looks at the checkpoint folder this often

FLAGS = flags.FlagValues()
flags.DEFINE_string('eval_dir', '/tmp/cifar10_eval', 'where event logs are '
                    'written', flag_values=FLAGS)
flags.DEFINE_enum('eval_data', 'test', ['test', 'train_eval'], "'test' or "
                  "'train_eval' (the training images, uncropped by "
                  'distortions)', flag_values=FLAGS)
flags.DEFINE_string('checkpoint_dir', '/tmp/cifar10_train', 'where '
                    'cifar10_train.py writes checkpoints', flag_values=FLAGS)
flags.DEFINE_float('eval_interval_secs', 300, 'the least time between two '
                   'evaluations; a new checkpoint is noticed within %g s'
                   % POLL_SECS, flag_values=FLAGS)
cli.positive('eval_interval_secs', FLAGS)
flags.DEFINE_integer('num_examples', 10000, 'number of examples to run',
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_boolean('run_once', False, 'evaluate the newest checkpoint once '
                     'and exit', flag_values=FLAGS)
cli.define_checkpoint_flag(FLAGS, 'evaluate once (then exit, as --run_once)')
cli.define_data_flags(FLAGS, (data_sets.NAMES, data_sets.get))
cli.define_model_flag(FLAGS, models.NAMES, models.known, models.CHOICES)
flags.DEFINE_boolean('raw_weights', False, 'evaluate the raw weights, not '
                     'their moving averages', flag_values=FLAGS)

if __name__ == '__main__':
  cli.parse_early(FLAGS, __doc__)  # -h and flag errors, before TensorFlow loads
  models.before_tensorflow(FLAGS.model)  # (oneDNN for some models)

import cifar10_input  # noqa: E402  (TensorFlow loads here)
from cifar10_toolkit import checkpoints  # noqa: E402
from cifar10_toolkit import console  # noqa: E402
from cifar10_toolkit import errors  # noqa: E402
from cifar10_toolkit import evaluation  # noqa: E402
from cifar10_toolkit import plugins  # noqa: E402
from cifar10_toolkit import run_control  # noqa: E402
from cifar10_toolkit import run_folder  # noqa: E402
from cifar10_toolkit import run_record  # noqa: E402
from cifar10_toolkit import selection  # noqa: E402
from cifar10_toolkit import summaries  # noqa: E402


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  with run_folder.removed_if_empty(
      run_folder.prepare_dir(FLAGS.eval_dir, '--eval_dir')):
    return _evaluate()


def _evaluate():
  """Evaluates once, or each new checkpoint until a stop: exit status."""
  once = FLAGS.run_once or FLAGS.checkpoint is not None
  by_path = selection.names_a_path(FLAGS.checkpoint)
  if once and not by_path and not os.path.isdir(FLAGS.checkpoint_dir):
    raise errors.UsageError('--checkpoint_dir %s does not exist'
                            % FLAGS.checkpoint_dir)
  data_set, model_lib = data_sets.get(FLAGS.dataset), models.get(FLAGS.model)
  chosen = selection.choose(FLAGS.checkpoint_dir, FLAGS.checkpoint)
  # the run whose best/ and HParams row a checkpoint named by path joins
  run_dir = selection.run_folder_of(chosen) if by_path else (
      FLAGS.checkpoint_dir)
  if chosen:  # (its data set and model: said before a data set is fetched)
    run_record.check(chosen, data_set.name, plugins.name_of(model_lib),
                     '--checkpoint')
  else:
    run_record.check_newest(checkpoints.checkpoint_candidates(
        FLAGS.checkpoint_dir)[0], data_set.name, plugins.name_of(model_lib))
  written, kinds = evaluation.evaluated_steps(FLAGS.eval_dir)
  kind = evaluation.kind(FLAGS.eval_data, FLAGS.num_examples,
                         FLAGS.raw_weights)
  if kinds - {kind}:  # (a result of one kind is not another's)
    raise errors.UsageError(
        '--eval_dir %s holds evaluations of %s; this one is of %s: give it '
        'a --eval_dir of its own' % (FLAGS.eval_dir, ' and '.join(
            sorted(kinds)), kind))
  run_control.fetch_data_set(FLAGS.data_dir, FLAGS.data_source, data_set)
  evaluator = evaluation.Evaluator(FLAGS.data_dir, FLAGS.eval_data,
                                   FLAGS.num_examples, data_set, model_lib,
                                   cifar10_input, FLAGS.raw_weights)
  writer = summaries.summary_writer(FLAGS.eval_dir, '--eval_dir')
  watch = Watch(FLAGS.checkpoint_dir, FLAGS.eval_interval_secs)
  with run_control.GracefulStop('stopping') as stop:
    while not stop.requested:
      if not once and not watch.due(stop):
        continue
      if chosen:
        path, step = chosen, evaluator.restore(chosen, '--checkpoint')
        content = evaluation.content_id(chosen)
      else:
        path, step, content = _newest(evaluator, watch, once)
      if path is None and watch.done is None and once:
        raise errors.UsageError('no checkpoint in %s' % FLAGS.checkpoint_dir)
      before = written.get(step)  # {content_id: precision}
      if path is not None and before is not None and (
          content in before or set(before) == {None}):
        print('%s: precision @ 1 = %.3f (held in %s)' % (
            console.now(), before.get(content, before.get(None)),
            FLAGS.eval_dir))
        print('  step %d (%s) is already evaluated there; not writing it '
              'again' % (step, path), flush=True)
        watch.done = (path, content)
      elif path is not None:
        if before:
          print('%s: Note: %s holds other weights than the step %d '
                'evaluated before in %s (a new training run); evaluating it '
                'at step %d too' % (console.now(), path, step,
                                    FLAGS.eval_dir, step), flush=True)
        stop.action = 'finishing the evaluation in hand'
        watch.joined = evaluation.join_training_row(
            run_dir, writer, watch.joined)
        precision, confusion, seen = evaluator.evaluate()
        evaluation.report(precision, confusion, seen, step, path, writer,
                          content, data_set.class_names, kind)
        if FLAGS.eval_data == 'test' and not FLAGS.raw_weights:
          selection.keep_and_say(run_dir, path, step,
                                 precision, seen, content)
        stop.action = 'stopping'
        written.setdefault(step, {})[content] = precision
        watch.evaluated((path, content))
      if once:
        return stop.exit_status
  print('%s: stopped' % console.now())
  return stop.exit_status


def _newest(evaluator, watch, once):
  """(path, step, content_id) of the newest readable checkpoint not yet
  evaluated, or Nones; an unreadable folder is waited out unless once."""
  try:
    return evaluation.newest_readable(evaluator, FLAGS.checkpoint_dir,
                                      watch.done, watch.reported)
  except (checkpoints.WrongModelError, run_record.WrongDataSetError):
    raise
  except errors.UsageError as e:
    if once:
      raise
    print('%s; waiting for a readable one' % e, flush=True)
    return None, None, None


class Watch:
  """When the watching evaluator looks again (watch mode).

  It looks at the checkpoint folder every POLL_SECS (a stat and a listing:
  checkpoints.folder_state), so a new checkpoint is noticed within seconds,
  and evaluates at most once every --eval_interval_secs, the tutorial's
  interval. It says once that the folder does not exist yet, and once per
  wait that it is waiting.
  """

  def __init__(self, checkpoint_dir, interval):
    self.checkpoint_dir, self.interval = checkpoint_dir, interval
    self.done = None  # (path, content_id) last evaluated (or found written)
    self.reported = {}  # damaged checkpoints already named, while they stay so
    self.joined = None  # the trial id of the training run whose row we join
    self._seen = self._last = self._said = None

  def due(self, stop):
    """True when the folder changed and the interval since the last
    evaluation has passed; else sleeps a little (waking on a stop) and
    returns False."""
    state = checkpoints.folder_state(self.checkpoint_dir)
    if state is None:
      self._say('missing', '--checkpoint_dir %s does not exist yet; waiting '
                'for it (looking every %g s)' % (self.checkpoint_dir,
                                                 POLL_SECS))
    elif state != self._seen:
      wait = (self._last or -math.inf) + self.interval - time.monotonic()
      if wait <= 0:
        self._seen = state
        return True
      self._say('interval', 'a new checkpoint in %s; evaluating it in %.0f s '
                '(--eval_interval_secs %g)' % (self.checkpoint_dir, wait,
                                               self.interval))
      stop.sleep(min(wait, POLL_SECS * 5))
      return False
    else:
      self._say('waiting', 'waiting for a new checkpoint in %s (looking '
                'every %g s)' % (self.checkpoint_dir, POLL_SECS))
    stop.sleep(POLL_SECS)
    return False

  def evaluated(self, done):
    self.done, self._last, self._said = done, time.monotonic(), None

  def _say(self, what, line):
    if self._said != what:
      print('%s: %s' % (console.now(), line), flush=True)
      self._said = what


if __name__ == '__main__':
  sys.exit(run_control.run_main(main))
