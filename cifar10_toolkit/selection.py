"""Which checkpoint a script uses (--checkpoint), and the best one kept.

  choose(checkpoint_dir, choice)       the path --checkpoint names: a step
                                       number, a path, or 'best'; None
                                       for the newest
  keep_if_best(checkpoint_dir, path, step, precision, examples)
                                       the evaluator's copy of the best
                                       checkpoint so far, in
                                       checkpoint_dir/best/
  keep_and_say(...)                    the same, said in one line (or a
                                       note when best/ cannot be written)
  best_record(checkpoint_dir)          what best/best.json says, or None
  names_a_path(choice)                 whether --checkpoint gives a path
  run_folder_of(path)                  the run folder a checkpoint is of

The best checkpoint lives in <checkpoint_dir>/best/: the files of
ckpt-<step> copied whole, TensorFlow's 'checkpoint' index naming it, and
best.json with its step, precision, the examples it was measured on and the
checkpoint it was copied from. best.json is the truth and is written last,
atomically (os.replace): a copy cut short leaves files that best.json does
not name, which are never taken as the best and are removed by the next
copy. A CheckpointManager deletes only what the folder's own index lists,
so rotation never reaches best/; --fresh sets it aside with the rest of
the run.
"""

import json
import os
import re
import shutil
import stat

from cifar10_toolkit import checkpoints
from cifar10_toolkit import errors
from cifar10_toolkit import folders

BEST_DIR = 'best'
RECORD_FILE = 'best.json'
MAX_RECORD_BYTES = 1 << 16
_COPYING = '.copying-'  # a file being copied, not yet under its name


def choose(directory, choice, flag='--checkpoint'):
  """The checkpoint path that --checkpoint names.

  Args:
    directory: the checkpoint folder (--checkpoint_dir).
    choice: None (the newest: the caller walks back past damaged ones),
      'best' (best_record), a step number ('40000': directory/ckpt-40000)
      or a checkpoint's path (its .index or .data-... file also does).

  Returns:
    The checkpoint's path (without .index), or None for choice None.

  Raises:
    errors.UsageError: no such checkpoint; one line naming the flag and
      what it holds instead.
  """
  if choice is None:
    return None
  if choice == 'best':
    record = best_record(directory)
    if record is None:
      raise errors.UsageError(
          '%s best: %s holds no best checkpoint (cifar10_eval.py keeps one '
          'in %s as it evaluates the test set)' % (
              flag, directory, os.path.join(directory, BEST_DIR)))
    return os.path.join(directory, BEST_DIR, record['checkpoint'])
  if choice.isdigit():
    path = os.path.join(directory, '%s-%d' % (checkpoints.CHECKPOINT_PREFIX,
                                              int(choice)))
    if not os.path.isfile(path + '.index'):
      steps = [s for s, p in checkpoints.checkpoint_candidates(directory)[0]
               if os.path.isfile(p + '.index')]
      raise errors.UsageError('%s %s: %s holds no checkpoint of step %d (%s)'
                              % (flag, choice, directory, int(choice),
                                 'its steps: %s' % ', '.join(
                                     map(str, sorted(steps))) if steps
                                 else 'it holds none'))
    return path
  path = re.sub(r'\.(index|data-\d+-of-\d+)$', '', choice)
  if os.path.isdir(path):
    raise errors.UsageError(
        '%s %s is a folder; pass a checkpoint in it (%s/ckpt-N), a step '
        'number, or the folder as --checkpoint_dir' % (flag, choice, path))
  if not os.path.isfile(path + '.index'):
    raise errors.UsageError('%s %s: no such checkpoint (%s.index is missing)'
                            % (flag, choice, path))
  return path


def best_record(directory):
  """What directory/best/best.json says, when it names a checkpoint there.

  Returns:
    {'step', 'precision', 'examples', 'checkpoint' (a name in best/),
    'copied_from', 'content'} or None (none kept, or its record unreadable:
    a record is never taken half written).
  """
  path = os.path.join(directory, BEST_DIR, RECORD_FILE)
  try:
    if not stat.S_ISREG(os.lstat(path).st_mode):
      return None
    with open(path, 'rb') as f:
      record = json.loads(f.read(MAX_RECORD_BYTES))
    name = record['checkpoint']
    if (not isinstance(name, str) or os.sep in name or not os.path.isfile(
        os.path.join(directory, BEST_DIR, name + '.index'))):
      return None
    float(record['precision']), int(record['step'])
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return record


def keep_if_best(directory, path, step, precision, examples, content=None):
  """Copies checkpoint path to directory/best/ when it is the best so far.

  The best so far is the highest precision among evaluations of the same
  number of examples; an evaluation of more examples than the kept one's
  replaces it (the better measure). A checkpoint already in best/ is not
  copied again.

  Args:
    directory: the checkpoint folder; path: the checkpoint evaluated (in
      it, or in best/); step, precision, examples: its evaluation;
    content: what tells its weights apart (evaluation.content_id).

  Returns:
    (record now kept, the one it replaced or None) when path was copied;
    None when the kept one stays.

  Raises:
    OSError: best/ cannot be written (nothing half written is named).
  """
  best_dir = os.path.join(directory, BEST_DIR)
  if os.path.realpath(os.path.dirname(path)) == os.path.realpath(best_dir):
    return None
  kept = best_record(directory)
  if kept and (examples < kept['examples'] or (
      examples == kept['examples'] and precision <= kept['precision'])):
    return None
  if os.path.islink(best_dir) or (os.path.exists(best_dir) and
                                   not os.path.isdir(best_dir)):
    raise OSError('%s is not a folder' % best_dir)
  os.makedirs(best_dir, exist_ok=True)
  name = os.path.basename(path)
  record_path = os.path.join(best_dir, RECORD_FILE)
  if kept and kept['checkpoint'] == name:  # the same step, other weights
    os.remove(record_path)
  _remove_unnamed(best_dir, None if kept is None or kept['checkpoint'] == name
                  else kept['checkpoint'])
  folder = os.path.dirname(path)
  for file in sorted(os.listdir(folder)):
    if checkpoints.is_file_of(file, name):
      _copy_whole(os.path.join(folder, file), os.path.join(best_dir, file))
  record = {'step': int(step), 'precision': float(precision),
            'examples': int(examples), 'checkpoint': name,
            'copied_from': os.path.abspath(path), 'content': content}
  folders.write_whole(record_path, json.dumps(record, indent=1) + '\n',
                      _COPYING + RECORD_FILE)
  checkpoints.write_index(best_dir, [step])
  _remove_unnamed(best_dir, name)
  return record, kept


def names_a_path(choice):
  """Whether a --checkpoint value is a checkpoint's path (not a step, not
  'best', not None)."""
  return choice not in (None, 'best') and not choice.isdigit()


def run_folder_of(path):
  """The run folder of the checkpoint at path: its folder, or the one above
  for a checkpoint in best/."""
  directory = os.path.dirname(os.path.abspath(path))
  if os.path.basename(directory) == BEST_DIR:
    directory = os.path.dirname(directory)
  return directory


def keep_and_say(directory, path, step, precision, examples, content=None):
  """keep_if_best, and a line saying the new best (and the one it
  replaced); a note instead of an error when best/ cannot be written (the
  evaluation that called it is kept all the same). directory None: the
  folder of the checkpoint (the one above, for a checkpoint in best/)."""
  directory = directory or run_folder_of(path)
  try:
    kept = keep_if_best(directory, path, step, precision, examples, content)
  except OSError as e:
    print('  Note: cannot keep the best checkpoint in %s (%s)' % (
        os.path.join(directory, BEST_DIR), e.strerror or str(e)), flush=True)
    return
  if kept:
    now, before = kept
    print('  kept as the best checkpoint: %s (--checkpoint best)%s' % (
        os.path.join(directory, BEST_DIR, now['checkpoint']),
        '; before: step %d, %.3f' % (before['step'], before['precision'])
        if before else ''), flush=True)


def _copy_whole(source, dest):
  """source copied to dest: under a temporary name, synced, then renamed."""
  tmp = os.path.join(os.path.dirname(dest), _COPYING + os.path.basename(dest))
  with open(source, 'rb') as src, open(tmp, 'xb') as out:
    shutil.copyfileobj(src, out, 1 << 20)
    out.flush()
    os.fsync(out.fileno())
  os.replace(tmp, dest)


def _remove_unnamed(best_dir, keep):
  """Removes best_dir's checkpoint files other than checkpoint keep's (the
  leftovers of a copy cut short, a replaced best)."""
  for file in os.listdir(best_dir):
    if file.startswith(_COPYING) or (
        file.startswith(checkpoints.CHECKPOINT_PREFIX + '-') and not (
            keep and checkpoints.is_file_of(file, keep))):
      full = os.path.join(best_dir, file)
      if os.path.isfile(full) and not os.path.islink(full):
        os.remove(full)
