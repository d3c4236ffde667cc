"""A convnet training run's configuration: resolved once, frozen, passed down.

  config = resolve(FLAGS, device, replicas, data_set, model_lib, input_lib)
                                              the flags, the machine
                                              (hardware.describe()), the data
                                              set, the model and input
                                              libraries (the model's
                                              schedule) -> a TrainConfig:
                                              what each 'auto' became, the
                                              seed drawn, the data source
  config.hparams()                            its values for HParams
  config.start_line(step)                     the console's start line
  new_model(model_lib, input_lib, data_set)   the model for a data set

The training loop, the console, HParams and the benchmark read it; nothing
changes the parsed flags. A resumed run keeps the seed its checkpoint holds:
train_loop.train then carries on with config.resumed(seed, checkpoint), a
new frozen object.
"""

import collections
import dataclasses
import random

from cifar10_toolkit import cli
from cifar10_toolkit import dataset
from cifar10_toolkit import errors
from cifar10_toolkit import hardware
from cifar10_toolkit import interface
from cifar10_toolkit import plugins
from cifar10_toolkit import run_record


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a training run depends on, as the run uses it.

  Attributes (besides the flags of the same names, as given):
    replicas: replicas in sync (devices x workers).
    seed: the run's seed: --seed, else one drawn; a resumed run's own.
    precision: 'float32', 'bfloat16' or 'float16' (--use_bf16/--use_fp16).
    jit_compile: XLA compiles each replica's step (--jit_compile).
    slices: slices each replica's batch is computed in (--slices).
    data_on_device: the training set lives on the device (--data_on_device).
    data_source: the archive fetched when data_dir has none (the flag, else
      the data set's environment variable, else the official URL).
    data_set: the dataset.DataSet (--dataset).
    model_lib, input_lib: the model library (convnet.py) and the input
      library (cifar10_input.py) the script was given.
    schedule: the model's schedule namedtuple, with the flags' values and
      the data set's training size (its epochs).
  """
  train_dir: str
  data_dir: str
  data_set: object
  model_lib: object
  input_lib: object
  schedule: tuple
  data_source: str
  max_steps: int
  batch_size: int
  replicas: int
  seed: int
  precision: str
  jit_compile: bool
  slices: int
  data_on_device: bool
  steps_per_loop: int
  log_frequency: int
  summary_steps: int
  save_checkpoint_secs: float
  progress_secs: float
  profile_steps: tuple = None
  fresh: bool = False
  log_device_placement: bool = False
  seed_given: bool = False
  allow_new_batch: bool = False

  @property
  def model_name(self):
    """The model module's name, as checkpoints record it (--model)."""
    return plugins.name_of(self.model_lib)

  @property
  def global_batch(self):
    """Examples per step, all replicas together."""
    return self.batch_size * self.replicas

  def keeps_global_batch(self, kept, checkpoint):
    """A resume keeps the run's examples per step (kept, from checkpoint;
    0: not recorded): the input order (step x global batch) and the
    schedule depend on it. Another is refused in one line, unless
    --allow_new_batch.

    Returns:
      True when the run goes on with this configuration's global batch
      instead of the one it had (--allow_new_batch; a note says so).
    """
    if kept in (0, self.global_batch):
      return False
    this = '%d (--batch_size %d x %d replica(s))' % (
        self.global_batch, self.batch_size, self.replicas)
    if not self.allow_new_batch:
      raise errors.UsageError(
          '%s was trained with %d examples per step; this run would take %s, '
          'which changes its input order and schedule: resume with the same '
          '--batch_size and replicas, or pass --allow_new_batch' % (
              checkpoint, kept, this))
    print('Note: resuming a run of %d examples per step with %s '
          '(--allow_new_batch)' % (kept, this))
    return True

  def new_model(self):
    """The run's model, drawn from its seed (new_model)."""
    return new_model(self.model_lib, self.input_lib, self.data_set, self.seed)

  def resumed(self, seed, checkpoint):
    """This configuration carrying on a run made with `seed` from
    checkpoint (a note when that makes --seed ignored, and one for each
    schedule value that changes)."""
    for note in run_record.schedule_notes(checkpoint,
                                          self.schedule._asdict()):
      print(note)
    return self._taking_seed(seed, 'resuming a run made with seed %d;' % seed)

  def cluster_terms(self):
    """What every task of a multi-worker run must share, by flag: the
    steps each call runs (their collectives pair up across tasks), the
    batch, the precision of the gradients reduced together; and the seed,
    which the chief's settles."""
    return {'--max_steps': self.max_steps, '--batch_size': self.batch_size,
            '--steps_per_loop': self.steps_per_loop,
            '--summary_steps': self.summary_steps,
            '--profile_steps': list(self.profile_steps or ()),
            'the precision (--use_bf16, --use_fp16)': self.precision,
            '--dataset': self.data_set.name, '--model': self.model_name,
            'the schedule (--learning_rate, ...)': list(self.schedule),
            'seed': self.seed}

  def with_chief_seed(self, seed, chief, task):
    """This task's configuration with the seed the chief told (a note when
    this task's own --seed is thereby ignored)."""
    return self._taking_seed(seed, 'this is %s; the run takes the seed of '
                             'its chief (%s), %d:' % (task, chief, seed))

  def _taking_seed(self, seed, why):
    """This configuration with another seed; a note, `why` first, when
    --seed gave a different one."""
    if self.seed_given and seed != self.seed:
      print('Note: %s --seed %d is ignored' % (why, self.seed))
    return dataclasses.replace(self, seed=seed)

  def hparams(self, data_md5=None):
    """What shapes the run's result, for HParams' columns, most telling
    first (summaries.write_hparams keeps the order on the dashboard): the
    seed, precision, slices, XLA, batch and replicas, the loop, max_steps,
    the schedule, the model, the data set and its md5. Folders, intervals and other
    flags that change nothing in the weights are left out.

    Args:
      data_md5: the data set's dataset.fingerprint.

    Returns:
      ordered dict name -> bool, int, float or str.
    """
    return hparams_values([
        ('seed', self.seed), ('precision', self.precision),
        ('slices', self.slices), ('xla', self.jit_compile),
        ('batch_size', self.batch_size), ('replicas', self.replicas),
        ('steps_per_loop', self.steps_per_loop),
        ('max_steps', self.max_steps)] + list(self.schedule._asdict().items())
        + [('model', self.model_name), ('dataset', self.data_set.name),
           ('data_md5', data_md5)])

  def start_line(self, start):
    """'Training from step A to B: ...', the run as configured."""
    return ('Training from step %d to %d: %d replica(s) x batch %d%s, %s '
            'compute, seed %d, %d steps per loop, data %s%s' % (
                start, self.max_steps, self.replicas, self.batch_size,
                ' in %d slices' % self.slices if self.slices > 1 else '',
                self.precision, self.seed, self.steps_per_loop,
                'on the device' if self.data_on_device else 'from tf.data',
                ', XLA' if self.jit_compile else ''))


def hparams_values(values):
  """HParams' form of a run's (name, value) pairs, in their order: None
  ('not known') reads 'off'; an integer its digits, as text (TensorBoard
  shows numbers with five significant digits: a seed of 246620853 would
  read 2.4662e+8, a batch size 128.00); booleans, floats and text as they
  are; a value of another type its text."""
  return collections.OrderedDict(
      (k, 'off' if v is None else str(v) if isinstance(v, int) and
       not isinstance(v, bool) else
       v if isinstance(v, (bool, float, str)) else str(v))
      for k, v in values)


def draw_seed():
  """A random seed in the flags' range."""
  return random.SystemRandom().randint(0, cli.MAX_SEED - 1)


def new_model(model_lib, input_lib, data_set, seed=0):
  """The model library's Model for data_set's classes and the input
  library's crop of its images (what training, evaluation and export
  build); errors.UsageError, naming the module, when its logits do not
  have one column per class (interface.check_output)."""
  side = input_lib.crop_size(data_set.image_shape[0])
  model = model_lib.Model(seed, data_set.num_classes, side)
  interface.check_output(model_lib, model, data_set.num_classes,
                         (side, side, data_set.image_shape[2]))
  return model


def resolve(flag_values, device, replicas, data_set, model_lib, input_lib):
  """The configuration of a training run.

  Args:
    flag_values: parsed absl FlagValues with cli.define_training_flags.
    device: hardware.Device of the machine (its 'auto' choices).
    replicas: replicas in sync.
    data_set: the dataset.DataSet of --dataset.
    model_lib: the model library (convnet); its SCHEDULE (a namedtuple
      with a train_size and the fields of cli.define_schedule_flags) gives
      the flags' defaults.
    input_lib: the input library (cifar10_input).

  Returns:
    TrainConfig.
  """
  f = flag_values
  schedule = model_lib.SCHEDULE
  given = {k: f[k].value for k in cli.SCHEDULE_FLAGS
           if k in f and f[k].value is not None}
  for k in given:
    if k not in schedule._fields:
      raise errors.UsageError(
          '--%s: the model %s has no %s in its schedule (it has %s)' % (
              k, plugins.name_of(model_lib), k, ', '.join(
                  n for n in schedule._fields if n != 'train_size')))
  return TrainConfig(
      train_dir=f.train_dir, data_dir=f.data_dir, data_set=data_set,
      model_lib=model_lib,
      input_lib=interface.input_for(model_lib, input_lib),
      schedule=schedule._replace(train_size=data_set.train_size, **given),
      data_source=dataset.resolve_source(data_set, f.data_source),
      max_steps=f.max_steps, batch_size=f.batch_size, replicas=replicas,
      seed=f.seed if f.seed is not None else draw_seed(),
      seed_given=f.seed is not None,
      precision=hardware.precision(f.use_fp16, f.use_bf16, device),
      jit_compile=_jit_compile(f.jit_compile, device, replicas, model_lib),
      slices=(f.slices if f.slices != 'auto' else
              hardware.auto_slices(device, f.batch_size, replicas,
                                   cli.MIN_SLICE_EXAMPLES)
              if getattr(model_lib, 'AUTO_SLICES', True) else 1),
      data_on_device=(hardware.auto_data_on_device(device)
                      if f.data_on_device is None else f.data_on_device),
      steps_per_loop=f.steps_per_loop, log_frequency=f.log_frequency,
      summary_steps=f.summary_steps,
      save_checkpoint_secs=f.save_checkpoint_secs,
      progress_secs=f.progress_secs, profile_steps=f.profile_steps,
      fresh=f.fresh, log_device_placement=f.log_device_placement,
      allow_new_batch=f.allow_new_batch)


def _jit_compile(flag, device, replicas, model_lib):
  """--jit_compile: with several replicas XLA compiles training's two
  halves apart (interface.SPLIT), so a model without them trains
  uncompiled under 'auto' and is refused when XLA is asked for."""
  if replicas == 1 or interface.splits(model_lib):
    return hardware.auto_jit_compile(device) if flag is None else flag
  if flag:
    raise errors.UsageError(
        '--jit_compile with %d replicas needs the model module %s to '
        'declare %s (training in two halves); pass --nojit_compile' % (
            replicas, plugins.name_of(model_lib), ' and '.join(interface.SPLIT)))
  return False
