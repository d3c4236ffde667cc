"""ResNet-20 in PyTorch, as a skilled user would write it for a CPU: the
peer benchmarks/resnet.py times the toolkit's resnet20 against.

    /path/to/torch-env/bin/python benchmarks/torch_resnet.py --data_dir DIR --steps 20

Runs in an environment of its own with PyTorch's CPU wheel (it imports
neither TensorFlow nor the toolkit; the data reading and the turn protocol
are torch_peer.py's):

  - the network of resnet20.py (3x3 convolutions without biases, BatchNorm2d
    with momentum 0.1 (PyTorch's name for keeping 0.9), option-A shortcuts,
    He-normal initialisation), SGD with momentum 0.9 at 0.1 and weight decay
    1e-4 (foreach), the input and augmentation (4-pixel zero padding, a
    random 32x32 crop, a flip, the training set's mean image subtracted)
    made a batch at a time with tensor ops from the training set decoded
    once into memory;
  - bfloat16 autocast where the CPU has native bfloat16 (else float32),
    channels_last, threads = cores; torch.compile of the model tried at
    warm-up and kept where faster than eager.

As a child of benchmarks/resnet.py (turns.paired) it warms up, prints
'@turn ready', then for each 'run' line on stdin trains --steps steps and
prints '@turn <seconds>', until stdin closes.
"""

import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from torch_peer import load_train, native_bf16  # (beside this file)

BATCH_SIZE, IMAGE, PAD = 128, 32, 4


class Block(torch.nn.Module):
  """Two 3x3 convolutions with BN; an option-A shortcut where it strides."""

  def __init__(self, width, filters, stride):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(width, filters, 3, stride, 1, bias=False)
    self.bn1 = torch.nn.BatchNorm2d(filters, momentum=0.1, eps=1e-5)
    self.conv2 = torch.nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
    self.bn2 = torch.nn.BatchNorm2d(filters, momentum=0.1, eps=1e-5)
    self.pad = (filters - width) // 2 if stride > 1 else 0

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.pad:
      x = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
    return F.relu(y + x)


class ResNet20(torch.nn.Module):

  def __init__(self, classes=10):
    super().__init__()
    self.conv = torch.nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn = torch.nn.BatchNorm2d(16, momentum=0.1, eps=1e-5)
    blocks, width = [], 16
    for s, filters in enumerate((16, 32, 64)):
      for b in range(3):
        blocks.append(Block(width, filters, 2 if s > 0 and b == 0 else 1))
        width = filters
    self.blocks = torch.nn.Sequential(*blocks)
    self.dense = torch.nn.Linear(64, classes)
    for m in self.modules():
      if isinstance(m, torch.nn.Conv2d):
        torch.nn.init.kaiming_normal_(m.weight, nonlinearity='relu')

  def forward(self, x):
    x = self.blocks(F.relu(self.bn(self.conv(x))))
    return self.dense(x.mean((2, 3))).float()


def augmented_batch(images, labels, generator, mean_image):
  """A random batch padded, cropped, flipped, less mean_image: float32
  NCHW in channels_last memory, and its labels."""
  idx = torch.randint(0, images.shape[0], (BATCH_SIZE,), generator=generator)
  return augment(images[idx], generator, mean_image), labels[idx]


def augment(images, generator, mean=None, std=None):
  """uint8 NCHW images zero-padded by PAD (black), each cropped back to
  IMAGE x IMAGE at random and flipped with probability 1/2; then
  standardised (standardise). Returns float32 NCHW in channels_last
  memory."""
  n = images.shape[0]
  x = F.pad(images.float(), (PAD, PAD, PAD, PAD))
  oy, ox = torch.randint(0, 2 * PAD + 1, (2, n), generator=generator)
  rows = (oy[:, None] + torch.arange(IMAGE))[:, None, :, None]
  cols = (ox[:, None] + torch.arange(IMAGE))[:, None, None, :]
  x = x[torch.arange(n)[:, None, None, None],
        torch.arange(3)[None, :, None, None], rows, cols]
  flip = torch.rand(n, generator=generator) < 0.5
  x = torch.where(flip[:, None, None, None], x.flip(3), x)
  return standardise(x, mean, std)


def standardise(x, mean=None, std=None):
  """float32 NCHW pixels (0-255): per image, as
  tf.image.per_image_standardization; less mean, a [3, IMAGE, IMAGE] mean
  image (the paper's, as the toolkit's resnet20); or per channel by mean and
  std ([3], of pixels in [0, 1])."""
  if mean is not None and std is None:
    x = x - mean
  elif mean is not None:
    x = (x / 255.0 - mean[:, None, None]) / std[:, None, None]
  else:
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    sd = torch.maximum(x.std(dim=(1, 2, 3), keepdim=True, unbiased=False),
                       torch.tensor(1.0 / math.sqrt(x[0].numel())))
    x = (x - mu) / sd
  return x.contiguous(memory_format=torch.channels_last)


def make_step(model, bf16):
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                              weight_decay=1e-4, foreach=True)

  def step(x, y):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss
  return step


def run_steps(step, data, generator, steps):
  """Trains steps steps on data: (images, labels, mean image)."""
  images, labels, mean_image = data
  loss = None
  for _ in range(steps):
    loss = step(*augmented_batch(images, labels, generator, mean_image))
  return float(loss.detach())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data_dir', default='/tmp/cifar10_data')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=5)
  parser.add_argument('--no_compile', action='store_true')
  args, _ = parser.parse_known_args()  # (resnet.py's --quick etc.)
  torch.set_num_threads(os.cpu_count() or 1)
  images, labels = load_train(args.data_dir)
  data = images, labels, images.float().mean(0)
  generator = torch.Generator().manual_seed(1)
  torch.manual_seed(1)
  bf16 = native_bf16()
  model = ResNet20().to(memory_format=torch.channels_last).train()
  forms = [('eager', model)]
  if not args.no_compile:
    forms.append(('compiled', torch.compile(model)))
  timings = []
  for name, forward in forms:
    step = make_step(forward, bf16)
    try:
      run_steps(step, data, generator, args.warmup)  # (compiles)
    except Exception as e:  # no compiler here, say: not this form
      print('%s failed (%s)' % (name, str(e).splitlines()[0]),
            file=sys.stderr)
      continue
    t = time.perf_counter()
    run_steps(step, data, generator, args.warmup)
    timings.append((time.perf_counter() - t, name, step))
  took, name, step = min(timings, key=lambda t: t[0])
  print('PyTorch %s ResNet-20, %s, %s (warm-up ms a step: %s), %d threads' % (
      torch.__version__, 'bfloat16 autocast' if bf16 else 'float32', name,
      ', '.join('%s %.1f' % (n, 1000 * t / args.warmup)
                for t, n, _ in timings), torch.get_num_threads()),
        file=sys.stderr, flush=True)
  print('@turn ready', flush=True)
  for line in sys.stdin:
    if line.strip() != 'run':
      break
    t = time.perf_counter()
    run_steps(step, data, generator, args.steps)
    print('@turn %r' % (time.perf_counter() - t), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
