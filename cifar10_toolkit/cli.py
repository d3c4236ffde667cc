"""The scripts' flags, on absl.flags (the tutorial's tf.app.flags); no
TensorFlow imported here, so that -h and flag errors answer at once.

  parse(flag_values, argv, doc)   -h, --help, --helpfull, --flagfile; a bad
                                  flag is one line, `prog: error: ...`, 2
  parse_early(flag_values, doc)   the same on sys.argv before TensorFlow
                                  loads, then its start-up lines hidden
  DEFINE_auto_bool(name, help)    a three-way flag: --name, --noname,
                                  --name=false, --name=auto (None: the
                                  hardware decides, cifar10_toolkit.config)
  mark_exclusive(flag_values, a, b)
                                  two boolean flags that exclude each other
  define_data_flags, define_training_flags, define_profile_flag,
  define_schedule_flags, define_model_flag
                                  the flags several scripts share, defined
                                  once here

Each script has a FlagValues of its own (FLAGS), because the tests import
every script into one process and two scripts define --max_steps with
different defaults; a script's flags are defined on it the tutorial's way:
flags.DEFINE_integer('max_steps', 1000000, '...', flag_values=FLAGS).
absl's conventions hold: boolean flags take --flag, --noflag, --flag=false
and never the next argument; no flag is taken by an abbreviation; a
misspelt flag gets a suggestion.
"""

import math
import re
import sys

from absl import flags

from cifar10_toolkit import errors
from cifar10_toolkit import paths
from cifar10_toolkit import startup

MAX_SEED = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e+38
# Loop shape, chosen by measurement on a CPU and by reasoning for a GPU
# (docs/performance.md): see benchmarks/benchmark.py.
DEFAULT_STEPS_PER_LOOP = 100
MIN_SLICE_EXAMPLES = 32  # --slices auto: the smallest slice
MAX_SLICES = 1024
MAX_LOGICAL_DEVICES = 64  # any --logical_devices above this is refused at once
HELP = ('-h', '-help', '--help', '--helpshort')
HELPFULL = ('--helpfull',)


class _AutoBooleanParser(flags.BooleanParser):
  """true/false (1/0, yes/no, t/f, y/n) or 'auto' (None)."""

  def parse(self, argument):
    if isinstance(argument, str) and argument.lower() == 'auto':
      return None
    try:
      return super().parse(argument)
    except ValueError:
      raise ValueError('%r is not true, false or auto' % argument)

  def flag_type(self):
    return 'bool or auto'


class _AutoFlag(flags.Flag):
  """A boolean flag whose default, None, reads 'auto'."""

  def _get_parsed_value_as_string(self, value):
    return "'auto'" if value is None else super()._get_parsed_value_as_string(
        value)


def DEFINE_auto_bool(name, help_string, flag_values):  # noqa: N802 (absl's)
  """A three-way boolean flag, unset (None) meaning 'auto'."""
  flags.DEFINE_flag(_AutoFlag(_AutoBooleanParser(), flags.ArgumentSerializer(),
                              name, None, help_string, boolean=True),
                    flag_values)


class _AutoIntParser(flags.ArgumentParser):
  """'auto' or an integer from 1 to MAX_SLICES."""

  def parse(self, argument):
    if argument == 'auto':
      return argument
    try:
      value = int(argument)
    except (TypeError, ValueError):
      raise ValueError("%r is not 'auto' or an integer" % (argument,))
    if not 1 <= value <= MAX_SLICES:
      raise ValueError("must be 'auto' or from 1 to %d, got %s" % (
          MAX_SLICES, argument))
    return value

  def flag_type(self):
    return 'auto or int'


class _StepRangeParser(flags.ArgumentParser):
  """'A,B' -> (A, B), 0 <= A < B: the steps of a profile."""

  def parse(self, argument):
    if isinstance(argument, tuple):
      return argument
    try:
      a, b = (int(x) for x in argument.split(','))
    except ValueError:
      raise ValueError('%r is not two steps A,B' % argument)
    if not 0 <= a < b:
      raise ValueError('must be A,B with 0 <= A < B, got %s' % argument)
    return a, b

  def flag_type(self):
    return 'A,B'


def positive(name, flag_values):
  """A validator: the float flag is a finite number above 0."""
  flags.register_validator(
      name, lambda v: 0 < v < math.inf, flag_values=flag_values,
      message='must be a positive number')


def define_data_flags(flag_values, data_sets=None, what='where the data '
                      'set is, or is fetched to'):
  """--data_dir and --data_source, the same in every script; --dataset
  where the script takes a data set: data_sets is (names, get), the names
  that ship (the default first) and the function that resolves a name
  (an unknown one is a flag error)."""
  if data_sets:
    define_data_set_flag(flag_values, *data_sets)
  flags.DEFINE_string('data_dir', '/tmp/cifar10_data', what,
                      flag_values=flag_values)
  flags.DEFINE_string('data_source', None, "URL or local path of the data "
                      "set's archive (cifar-10-binary.tar.gz for CIFAR-10) to "
                      'fetch when data_dir has none (default: the data set\'s '
                      'environment variable, $CIFAR10_DATA_SOURCE for '
                      'CIFAR-10, else the official URL)',
                      flag_values=flag_values)


def define_data_set_flag(flag_values, names, get,
                         what='the data set'):
  """--dataset: one of names (the first the default), a folder of images,
  or a Python file or module of the user's that defines DATASET; get(name)
  resolves it and raises errors.UsageError for one that does not (a flag
  error)."""
  flags.DEFINE_string('dataset', names[0], '%s: %s, a folder of images '
                      '(DIR/train/<class>/*), or a Python file (or module) '
                      'that defines DATASET (docs/extending.md)' % (
                          what, ', '.join(names)), flag_values=flag_values)

  def check(name):
    try:
      get(name)
    except errors.UsageError as e:
      raise flags.ValidationError(str(e))
    return True
  flags.register_validator('dataset', check, flag_values=flag_values)


def define_model_flag(flag_values, names, known, choices):
  """--model: one of names (the first the default), or a Python file or
  module of the user's; known(name) says whether there is such a module
  (not importing it: the interface is checked once TensorFlow has loaded),
  and choices is the line's end when there is none (a flag error)."""
  flags.DEFINE_string('model', names[0], 'the model module: %s, or a Python '
                      'file (or module) of the model interface '
                      '(docs/extending.md)' % ', '.join(names),
                      flag_values=flag_values)
  flags.register_validator(
      'model', known, flag_values=flag_values,
      message='no such model module; %s' % choices)


def define_checkpoint_flag(flag_values, what='use'):
  """--checkpoint: which checkpoint of --checkpoint_dir to `what`; the
  newest readable one by default (selection.choose resolves it)."""
  flags.DEFINE_string('checkpoint', None, 'the checkpoint to %s: a step '
                      "number (40000: ckpt-40000 in --checkpoint_dir), a "
                      "checkpoint's path (in any folder), or 'best' (the "
                      'best one cifar10_eval.py kept); default: the newest'
                      % what,
                      flag_values=flag_values)
  flags.register_validator(
      'checkpoint', lambda v: v is None or v.strip() == v != '',
      flag_values=flag_values, message='must be a step number, a path or '
      "'best'")


_SCHEDULE_HELP = (
    ('learning_rate', 'initial learning rate (the tutorial: 0.1)'),
    ('epochs_per_decay', "epochs (of the data set's training size) after "
     'which the learning rate is multiplied by --decay_factor (350)'),
    ('decay_factor', 'learning-rate decay factor (0.1)'),
    ('moving_average_decay', 'decay of the moving averages of the weights, '
     'which evaluation uses (0.9999)'))
SCHEDULE_FLAGS = tuple(name for name, _ in _SCHEDULE_HELP)


def define_schedule_flags(flag_values):
  """The schedule's hyperparameters as flags (SCHEDULE_FLAGS); each
  defaults to the model's own value (None here: the model is known once
  TensorFlow has loaded, config.resolve)."""
  for name, text in _SCHEDULE_HELP:
    flags.DEFINE_float(name, None, text + "; default: the model's; a resumed "
                       'run takes a new value with a note',
                       flag_values=flag_values)
    flags.register_validator(
        name, lambda v: v is None or 0 < v <= FLOAT32_MAX,
        flag_values=flag_values, message='must be a positive float32 number')
  flags.register_validator('moving_average_decay',
                           lambda v: v is None or v < 1,
                           flag_values=flag_values, message='must be below 1')


def define_profile_flag(flag_values):
  """--profile_steps A,B: a TensorFlow profiler trace of steps A+1 to B."""
  flags.DEFINE(_StepRangeParser(), 'profile_steps', None,
               "record a profiler trace of the steps after step A up to step "
               "B into train_dir, for TensorBoard's Profile tab (needs "
               "tensorboard-plugin-profile to view; default: none)",
               flag_values=flag_values)


def define_training_flags(flag_values, data_sets):
  """The tutorial's training flags and defaults, plus the toolkit's own:
  the flags of cifar10_train.py, which cifar10_multi_gpu_train.py shares.

  Args:
    flag_values: the script's FlagValues.
    data_sets: (names, get) of --dataset (define_data_set_flag).
  """
  f = flag_values
  flags.DEFINE_string('train_dir', '/tmp/cifar10_train', 'where checkpoints '
                      'and event logs are written and resumed from',
                      flag_values=f)
  flags.DEFINE_integer('max_steps', 1000000, 'global step at which training '
                       'stops', lower_bound=1, flag_values=f)
  flags.DEFINE_integer('log_frequency', 10, 'print a progress line every '
                       'this many steps', lower_bound=1, flag_values=f)
  flags.DEFINE_integer('batch_size', 128, 'images per batch, per replica',
                       lower_bound=1, flag_values=f)
  define_data_flags(f, data_sets)
  define_schedule_flags(f)
  flags.DEFINE_boolean('use_fp16', False, 'mixed precision: float16 compute, '
                       'float32 variables, dynamic loss scaling',
                       flag_values=f)
  DEFINE_auto_bool('use_bf16', 'mixed precision: bfloat16 compute, float32 '
                   "variables; 'auto': on where the device computes bfloat16 "
                   'natively (a CPU with AMX or AVX512-BF16, a GPU of compute '
                   'capability 8.0 or more); a GPU without it takes float16 '
                   'from compute capability 7.0', f)
  flags.DEFINE_boolean('log_device_placement', False, 'log where each '
                       'operation runs', flag_values=f)
  flags.DEFINE_integer('seed', None, 'seed of the initial weights, input '
                       'order and distortions (default: random; a resumed run '
                       'keeps its own)', lower_bound=0, upper_bound=MAX_SEED,
                       flag_values=f)
  flags.DEFINE_boolean('fresh', False, 'start afresh: move the checkpoints '
                       'and logs in train_dir to train_dir/previous-<time>/ '
                       'instead of resuming', flag_values=f)
  flags.DEFINE_boolean('allow_new_batch', False, 'resume a run with another '
                       'global batch (--batch_size x replicas) than it was '
                       'trained with, changing its input order and schedule '
                       'from there on (refused otherwise)', flag_values=f)
  flags.DEFINE_float('save_checkpoint_secs', 180, 'seconds between '
                     'checkpoints', flag_values=f)
  positive('save_checkpoint_secs', f)
  flags.DEFINE_float('progress_secs', 300, 'seconds between lines saying how '
                     'far the run is and how long it has to go; the first '
                     'comes 20 s after the start', flag_values=f)
  positive('progress_secs', f)
  flags.DEFINE_integer('summary_steps', 100, 'write summaries every this '
                       'many steps', lower_bound=1, flag_values=f)
  DEFINE_auto_bool('jit_compile', "compile each replica's training step, its "
                   "input included, with XLA; 'auto': on a GPU, off on a CPU",
                   f)
  flags.DEFINE_integer('steps_per_loop', DEFAULT_STEPS_PER_LOOP, 'training '
                       'steps run by one call into the graph; the host checks '
                       'the loss, logs, saves and handles signals between '
                       'calls', lower_bound=1, upper_bound=100000,
                       flag_values=f)
  define_profile_flag(f)
  DEFINE_auto_bool('data_on_device', 'keep the training set on the compute '
                   'device and make each batch inside the training graph, or '
                   '(false) feed it with tf.data; the batches are the same '
                   "either way; 'auto': true (on GPUs and CPUs alike)", f)
  flags.DEFINE(_AutoIntParser(), 'slices', 'auto', "compute each replica's "
               'batch as this many slices side by side, each kernel on one '
               "core's share of the threads (the same step: one gradient over "
               "the batch); 'auto': on a CPU with one replica, as many as the "
               'cores, each slice at least %d examples; else 1'
               % MIN_SLICE_EXAMPLES, flag_values=f)

  @flags.multi_flags_validator(['slices', 'batch_size'], flag_values=f)
  def _slices_divide_the_batch(values):
    if values['slices'] != 'auto' and values['batch_size'] % values['slices']:
      raise flags.ValidationError('--slices %d does not divide --batch_size '
                                  '%d' % (values['slices'],
                                          values['batch_size']))
    return True

  mark_exclusive(f, 'use_fp16', 'use_bf16')


def mark_exclusive(flag_values, a, b):
  """Boolean flags a and b may not both be set: '--a and --b exclude each
  other', the one line of a flag error."""
  @flags.multi_flags_validator([a, b], flag_values=flag_values)
  def _exclusive(values):
    if values[a] and values[b]:
      raise flags.ValidationError('--%s and --%s exclude each other' % (a, b))
    return True


def _help(flag_values, doc, full):
  lines = [doc.strip(), '', 'flags:', flag_values.get_help(
      prefix='  ', include_special_flags=full)]
  if not full:
    lines.append('\n(--helpfull also lists --flagfile and --undefok)')
  return '\n'.join(lines) + '\n'


def parse(flag_values, argv=None, doc='', positional=None, optional=False):
  """Parses argv (without the program's name; default sys.argv[1:]) into
  flag_values, which start from their defaults each time.

  -h / --help print doc and the flags, --helpfull absl's own too, and exit
  0; a bad flag (unknown, misspelt, out of range, breaking a rule between
  flags, an unreadable --flagfile) exits 2 with one line naming it, and so
  does an argument that is not a flag where the script takes none.

  Args:
    positional: what the script's other arguments are (e.g. 'IMAGE'): one
      at least is required, none with optional; None: the script takes none.

  Returns:
    The arguments that are not flags, in order.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  options = argv[:argv.index('--')] if '--' in argv else argv
  if any(a in HELP + HELPFULL for a in options):
    sys.stdout.write(_help(flag_values, doc,
                           any(a in HELPFULL for a in options)))
    sys.stdout.flush()
    raise SystemExit(0)
  flag_values.unparse_flags()
  try:
    rest = flag_values([startup.prog()] + argv)[1:]
  except flags.Error as e:
    message = ' '.join(str(e).replace('ERROR:: ', '').split())
    # a rule between flags names them itself: not again as 'flags a=1, b=2:'
    _usage_error(re.sub(r'^flags [^:]*: (?=--)', '', message))
  bad_path = paths.check_flags(flag_values)
  if bad_path:
    _usage_error(bad_path)
  if positional is None and rest:
    _usage_error('unexpected argument %r (this script takes flags only; '
                 'see -h)' % rest[0])
  if positional is not None and not optional and not rest:
    _usage_error('no %s given (see -h)' % positional)
  return rest


def _usage_error(message):
  startup.say('%s: error: %s' % (startup.prog(), message))
  raise SystemExit(2)


def parse_early(flag_values, doc, positional=None):
  """For a script run as __main__: parses sys.argv before TensorFlow loads,
  so that -h and flag errors answer at once (main() parses again: cheap),
  then hides TensorFlow's start-up lines (startup.hide_startup_noise) and
  keeps TensorFlow from importing Keras (startup.defer_keras)."""
  parse(flag_values, doc=doc, positional=positional)
  startup.hide_startup_noise()
  startup.defer_keras()
