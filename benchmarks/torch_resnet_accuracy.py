"""ResNet-20's published schedule in PyTorch, trained as most PyTorch
reproductions of the paper train it: the accuracy peer of
`cifar10_train.py --model resnet20` (docs/results.md).

    /path/to/torch-env/bin/python benchmarks/torch_resnet_accuracy.py --data_dir DIR --train_dir DIR

Runs in an environment of its own with PyTorch's CPU wheel, as
torch_resnet.py (whose network, augmentation and precision it uses):

  - the recipe: a 4-pixel black border, a random 32x32 crop and a flip
    (torchvision's RandomCrop(32, padding=4) and RandomHorizontalFlip), then
    each channel normalised by the training set's mean and standard
    deviation (--per_image: each image standardised, as
    tf.image.per_image_standardization);
    SGD with momentum 0.9 and weight decay 1e-4 on every parameter, at 0.1,
    divided by 10 at steps 32,000 and 48,000; batch 128 drawn from a fresh
    shuffle of the training set each epoch; 64,000 steps (--max_steps);
  - every --eval_steps steps and at the end it prints
    'step N: precision @ 1 = P on the 10000 test images, Q on the first M'
    (M: --subset);
  - resumable: the model, the optimizer and the step are written to
    TRAIN_DIR/checkpoint.pt (whole, then renamed over the last) every
    --save_secs seconds, at each evaluation, at the end, and on SIGTERM or
    SIGINT, after which it exits (status 128 + the signal's number). The
    same command resumes, and refuses a checkpoint of another --seed or
    --per_image. The shuffles and crops are drawn from (--seed, epoch) and
    (--seed, step), so a resumed run sees the batches it would have seen.
"""

import argparse
import functools
import os
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import torch_resnet  # (beside this file)
from torch_peer import RECORD_BYTES, TRAIN_FILES, load_train, native_bf16

BATCH = torch_resnet.BATCH_SIZE
TEST_FILE = 'test_batch.bin'


def load_test(data_dir):
  """The test file: uint8 images NCHW, int64 labels."""
  raw = np.fromfile(os.path.join(data_dir, 'cifar-10-batches-bin', TEST_FILE),
                    np.uint8).reshape(-1, RECORD_BYTES)
  images = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy())
  return images, torch.from_numpy(raw[:, 0].astype(np.int64))


@functools.lru_cache(maxsize=2)
def epoch_order(num, seed, epoch):
  """The shuffle of epoch `epoch`: a permutation of range(num)."""
  return torch.randperm(num, generator=torch.Generator().manual_seed(
      seed * 100003 + epoch))


def batch_indices(step, num, seed):
  """The examples of batch `step`: the stream of one shuffle per epoch,
  BATCH at a time."""
  first = step * BATCH
  parts, pos = [], first
  while pos < first + BATCH:
    epoch, within = divmod(pos, num)
    take = min(num - within, first + BATCH - pos)
    parts.append(epoch_order(num, seed, epoch)[within:within + take])
    pos += take
  return torch.cat(parts)


def learning_rate(step):
  """The paper's: 0.1, divided by 10 at steps 32,000 and 48,000."""
  return 0.1 * 0.1 ** ((step >= 32000) + (step >= 48000))


def precision(model, images, labels, norm, subset):
  """Precision @ 1 on all images and on the first `subset`."""
  model.eval()
  hits = []
  with torch.no_grad():
    for i in range(0, images.shape[0], 1000):
      x = torch_resnet.standardise(images[i:i + 1000].float(), *norm)
      hits.append(model(x).argmax(1) == labels[i:i + 1000])
  model.train()
  hits = torch.cat(hits).float()
  return hits.mean().item(), hits[:subset].mean().item()


def save(path, model, optimizer, step, recipe):
  """Writes the checkpoint whole beside path (never through a symlink),
  then renames it over path."""
  fd = os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
               os.O_NOFOLLOW, 0o644)
  with os.fdopen(fd, 'wb') as f:
    torch.save({'model': model.state_dict(), 'optimizer':
                optimizer.state_dict(), 'step': step, 'recipe': recipe}, f)
  os.replace(path + '.tmp', path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--train_dir', required=True)
  parser.add_argument('--max_steps', type=int, default=64000)
  parser.add_argument('--eval_steps', type=int, default=4000)
  parser.add_argument('--subset', type=int, default=846)
  parser.add_argument('--save_secs', type=float, default=600)
  parser.add_argument('--seed', type=int, default=1)
  parser.add_argument('--per_image', action='store_true')
  parser.add_argument('--no_compile', action='store_true')
  args = parser.parse_args()
  folder = os.path.join(args.data_dir, 'cifar-10-batches-bin')
  for name in TRAIN_FILES + [TEST_FILE]:
    if not os.path.isfile(os.path.join(folder, name)):
      parser.error('--data_dir %s: no %s (the binary CIFAR-10 archive, '
                   'extracted)' % (args.data_dir, os.path.join(
                       'cifar-10-batches-bin', name)))
  if os.path.exists(args.train_dir) and not os.path.isdir(args.train_dir):
    parser.error('--train_dir %s is not a directory' % args.train_dir)
  torch.set_num_threads(os.cpu_count() or 1)
  images, labels = load_train(args.data_dir)
  test_images, test_labels = load_test(args.data_dir)
  pixels = images.float().div(255).transpose(0, 1).reshape(3, -1)
  norm = (None, None) if args.per_image else (pixels.mean(1), pixels.std(1))
  torch.manual_seed(args.seed)
  model = torch_resnet.ResNet20().to(memory_format=torch.channels_last)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                              weight_decay=1e-4, foreach=True)
  os.makedirs(args.train_dir, exist_ok=True)
  path = os.path.join(args.train_dir, 'checkpoint.pt')
  step = 0
  recipe = {'seed': args.seed, 'per_image': args.per_image}
  if os.path.exists(path):
    try:
      state = torch.load(path)
    except Exception as e:  # (a file cut short, or not a checkpoint)
      parser.error('%s cannot be read (%s): move it aside to start afresh'
                   % (path, str(e).splitlines()[0]))
    if state['recipe'] != recipe:
      parser.error('%s was trained with %s, not %s: give its flags, or '
                   'another --train_dir' % (path, state['recipe'], recipe))
    model.load_state_dict(state['model'])
    optimizer.load_state_dict(state['optimizer'])
    step = state['step']
    print('resumed at step %d from %s' % (step, path), flush=True)
  forward = model if args.no_compile else torch.compile(model)
  bf16 = native_bf16()
  stop = []
  for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda signum, frame: stop.append(signum))
  saved = began = time.time()
  first = step
  while step < args.max_steps and not stop:
    for group in optimizer.param_groups:
      group['lr'] = learning_rate(step)
    idx = batch_indices(step, images.shape[0], args.seed)
    x = torch_resnet.augment(
        images[idx], torch.Generator().manual_seed(
            args.seed * 1000003 + step), *norm)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      loss = F.cross_entropy(forward(x), labels[idx])
    loss.backward()
    optimizer.step()
    step += 1
    if step % 100 == 0:
      now = time.time()
      print('step %d, loss = %.3f, lr %g (%.1f examples/sec)' % (
          step, loss.item(), learning_rate(step - 1),
          (step - first) * BATCH / (now - began)), flush=True)
      first, began = step, now
    evaluate = step % args.eval_steps == 0 or step == args.max_steps
    if evaluate:
      p, q = precision(model, test_images, test_labels, norm, args.subset)
      print('step %d: precision @ 1 = %.4f on the %d test images, %.4f on '
            'the first %d' % (step, p, test_images.shape[0], q,
                              args.subset), flush=True)
    if evaluate or time.time() - saved > args.save_secs:
      save(path, model, optimizer, step, recipe)
      saved = time.time()
  if stop:
    save(path, model, optimizer, step, recipe)
    print('stopped at step %d by signal %d; saved to %s: the same command '
          'resumes' % (step, stop[0], path), flush=True)
  return 128 + stop[0] if stop else 0


if __name__ == '__main__':
  sys.exit(main())
