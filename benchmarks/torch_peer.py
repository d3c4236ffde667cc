"""The tutorial's convnet in PyTorch, as a skilled user would write it for a
CPU: the peer the benchmark times the toolkit against (benchmark.py).

    /path/to/torch-env/bin/python benchmarks/torch_peer.py --data_dir DIR --steps 100
    /path/to/torch-env/bin/python benchmarks/torch_peer.py --check_lrn IN.npz OUT.npz

Runs in an environment of its own with PyTorch's CPU wheel (never a
requirement of the toolkit; it imports neither TensorFlow nor the toolkit):

  - the same network, initialisation (truncated normals of the tutorial's
    stddevs), distortions (24x24 random crop, flip, brightness 63, contrast
    0.2-1.8, per-image standardisation), loss (cross-entropy plus decay x
    sum(w^2)/2 on local3/local4), SGD schedule (0.1, x0.1 every 350 epochs)
    and moving averages of the weights (0.9999, the tutorial's num_updates
    form) as the toolkit's;
  - bfloat16 autocast where the CPU has native bfloat16 (else float32),
    channels_last, threads = cores; the training set decoded once into memory
    and distorted a batch at a time with tensor ops;
  - the LRN as a band-matrix matmul (the sum of squares over 9 channels is
    x^2 @ B, which the matrix units run), then x * rsqrt(d) * sqrt(rsqrt(d));
  - torch.compile tried at warm-up, of the LRN alone and of the whole
    model, and kept where it is faster than eager (here: the LRN alone).

As a child of benchmark.py (turns.paired) it warms up, prints '@turn ready',
then for each 'run' line on stdin trains --steps steps and prints
'@turn <seconds>', until stdin closes.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

BATCH_SIZE = 128
IMAGE, CROP, CHANNELS, CLASSES = 32, 24, 3, 10
RECORD_BYTES = 1 + IMAGE * IMAGE * CHANNELS
TRAIN_FILES = ['data_batch_%d.bin' % i for i in range(1, 6)]
LRN_RADIUS, LRN_BIAS, LRN_ALPHA, LRN_BETA = 4, 1.0, 0.001 / 9.0, 0.75
INITIAL_LEARNING_RATE, DECAY_FACTOR, EPOCHS_PER_DECAY = 0.1, 0.1, 350.0
EXAMPLES_PER_EPOCH, MOVING_AVERAGE_DECAY = 50000, 0.9999


def native_bf16():
  """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
  try:
    with open('/proc/cpuinfo') as f:
      flags = f.read()
  except OSError:
    return False
  return 'avx512_bf16' in flags or 'amx_bf16' in flags


def band(channels, radius=LRN_RADIUS):
  """B[i, j] = 1 where |i - j| <= radius: (x^2 @ B)[c] sums channels c-r..c+r."""
  i = torch.arange(channels)
  return ((i[:, None] - i[None, :]).abs() <= radius).float()


def lrn(x, b):
  """tf.nn.local_response_normalization(x, 4, 1.0, 0.001/9, 0.75) over the
  channels of an NCHW tensor (channels_last in memory), the channel sums as
  one matmul, accumulated in float32."""
  nhwc = x.permute(0, 2, 3, 1)
  sums = torch.matmul(nhwc * nhwc, b.to(x.dtype)).float()
  d = LRN_BIAS + LRN_ALPHA * sums
  r = torch.rsqrt(d)
  return (nhwc.float() * r * torch.sqrt(r)).to(x.dtype).permute(0, 3, 1, 2)


def truncated(shape, stddev):
  w = torch.empty(shape)
  torch.nn.init.trunc_normal_(w, std=stddev, a=-2 * stddev, b=2 * stddev)
  return w


class ConvNet(torch.nn.Module):
  """conv1, pool1, norm1, conv2, norm2, pool2, local3, local4, softmax."""

  def __init__(self):
    super().__init__()
    p = torch.nn.Parameter
    self.conv1_w = p(truncated((64, 3, 5, 5), 5e-2))
    self.conv1_b = p(torch.zeros(64))
    self.conv2_w = p(truncated((64, 64, 5, 5), 5e-2))
    self.conv2_b = p(torch.full((64,), 0.1))
    dim = 6 * 6 * 64
    self.local3_w = p(truncated((384, dim), 0.04))
    self.local3_b = p(torch.full((384,), 0.1))
    self.local4_w = p(truncated((192, 384), 0.04))
    self.local4_b = p(torch.full((192,), 0.1))
    self.softmax_w = p(truncated((10, 192), 1 / 192.0))
    self.softmax_b = p(torch.zeros(10))
    self.register_buffer('band', band(64))
    self.lrn = lrn  # or torch.compile(lrn): make_trainer picks

  def forward(self, x):
    x = F.relu(F.conv2d(x, self.conv1_w, self.conv1_b, padding=2))
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)  # = TensorFlow's SAME here
    x = self.lrn(x, self.band)
    x = F.relu(F.conv2d(x, self.conv2_w, self.conv2_b, padding=2))
    x = self.lrn(x, self.band)
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TensorFlow's order
    x = F.relu(F.linear(x, self.local3_w, self.local3_b))
    x = F.relu(F.linear(x, self.local4_w, self.local4_b))
    return F.linear(x, self.softmax_w, self.softmax_b).float()

  def weight_decay(self):
    return 0.004 * ((self.local3_w ** 2).sum() + (self.local4_w ** 2).sum()) / 2


def load_train(data_dir):
  """The five training files decoded once: uint8 images NCHW, int64 labels."""
  folder = os.path.join(data_dir, 'cifar-10-batches-bin')
  raw = np.concatenate([np.fromfile(os.path.join(folder, n), np.uint8)
                        for n in TRAIN_FILES]).reshape(-1, RECORD_BYTES)
  images = torch.from_numpy(raw[:, 1:].reshape(-1, CHANNELS, IMAGE, IMAGE))
  return images.contiguous(), torch.from_numpy(raw[:, 0].astype(np.int64))


def distorted_batch(images, labels, generator):
  """A random batch, distorted as the tutorial's inputs: float32 NCHW in
  channels_last memory, and its labels."""
  n = BATCH_SIZE
  idx = torch.randint(0, images.shape[0], (n,), generator=generator)
  oy, ox = torch.randint(0, IMAGE - CROP + 1, (2, n), generator=generator)
  rows = (oy[:, None] + torch.arange(CROP))[:, None, :, None]
  cols = (ox[:, None] + torch.arange(CROP))[:, None, None, :]
  x = images[idx[:, None, None, None], torch.arange(CHANNELS)[None, :, None,
                                                               None], rows,
             cols].float()
  flip = torch.rand(n, generator=generator) < 0.5
  x = torch.where(flip[:, None, None, None], x.flip(3), x)
  x = x + (torch.rand(n, 1, 1, 1, generator=generator) * 126 - 63)
  factor = torch.rand(n, 1, 1, 1, generator=generator) * 1.6 + 0.2
  x = (x - x.mean(dim=(2, 3), keepdim=True)) * factor + x.mean(
      dim=(2, 3), keepdim=True)
  mean = x.mean(dim=(1, 2, 3), keepdim=True)
  std = torch.maximum(x.std(dim=(1, 2, 3), keepdim=True, unbiased=False),
                      torch.tensor(1.0 / math.sqrt(x[0].numel())))
  x = (x - mean) / std
  return x.contiguous(memory_format=torch.channels_last), labels[idx]


class Trainer:
  """The training step: SGD on the tutorial's schedule, then the moving
  averages of every weight."""

  def __init__(self, model, bf16):
    self.model, self.bf16, self.step = model, bf16, 0
    self.params = list(model.parameters())
    self.averages = [p.detach().clone() for p in self.params]
    self.forward = model

  def loss(self, x, y):
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=self.bf16):
      logits = self.forward(x)
    return F.cross_entropy(logits, y) + self.model.weight_decay()

  def train_step(self, x, y):
    lr = INITIAL_LEARNING_RATE * DECAY_FACTOR ** math.floor(
        self.step * BATCH_SIZE / (EXAMPLES_PER_EPOCH * EPOCHS_PER_DECAY))
    for p in self.params:
      p.grad = None
    loss = self.loss(x, y)
    loss.backward()
    with torch.no_grad():
      torch._foreach_add_(self.params, [p.grad for p in self.params],
                          alpha=-lr)
      decay = min(MOVING_AVERAGE_DECAY, (1 + self.step) / (10 + self.step))
      torch._foreach_lerp_(self.averages, self.params, 1 - decay)
    self.step += 1
    return loss


def run_steps(trainer, data, generator, steps):
  loss = None
  for _ in range(steps):
    loss = trainer.train_step(*distorted_batch(*data, generator))
  return float(loss.detach())  # waits for the last step


def make_trainer(data, generator, warmup, try_compile):
  """The trainer, in the fastest form measured here at warm-up: eager; the
  LRN compiled (torch.compile fuses its elementwise passes); the whole
  model compiled. Returns (trainer, what was chosen and the times)."""
  torch.manual_seed(1)
  model = ConvNet().to(memory_format=torch.channels_last)
  trainer = Trainer(model, native_bf16())
  forms = [('eager', lrn, model)]
  if try_compile:
    compiled_lrn = torch.compile(lrn)
    forms += [('the LRN compiled', compiled_lrn, model),
              ('the whole model compiled', compiled_lrn, torch.compile(model))]
  timings = []
  for name, lrn_fn, forward in forms:
    model.lrn, trainer.forward = lrn_fn, forward
    try:
      run_steps(trainer, data, generator, warmup)  # (compiles)
    except Exception as e:  # no compiler here, say: not this form
      print('%s failed (%s)' % (name, str(e).splitlines()[0]),
            file=sys.stderr)
      continue
    t = time.perf_counter()
    run_steps(trainer, data, generator, warmup)
    timings.append((time.perf_counter() - t, name, lrn_fn, forward))
  best = min(timings, key=lambda t: t[0])
  model.lrn, trainer.forward = best[2], best[3]
  return trainer, '%s (warm-up ms a step: %s)' % (best[1], ', '.join(
      '%s %.1f' % (name, 1000 * t / warmup) for t, name, _, _ in timings))


def ceiling(n=2048, calls=10, repeats=3):
  """The machine's matmul ceiling as PyTorch reaches it: an n^3 matmul in
  bfloat16 (float32 without native bfloat16) on all cores; the median of
  `repeats` timings of `calls` products, TFLOP/s."""
  dtype = torch.bfloat16 if native_bf16() else torch.float32
  a, b = (torch.randn(n, n).to(dtype) for _ in range(2))
  for _ in range(3):
    a @ b
  rates = []
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(calls):
      a @ b
    rates.append(2 * n ** 3 * calls / (time.perf_counter() - t) / 1e12)
  return sorted(rates)[len(rates) // 2], str(dtype).split('.')[-1]


def check_lrn(inputs, outputs):
  """Our LRN and its gradient on the arrays of inputs (x NHWC, dy), saved
  to outputs, for the test that holds them against TensorFlow's."""
  a = np.load(inputs)
  x = torch.tensor(a['x']).permute(0, 3, 1, 2).requires_grad_()
  y = lrn(x, band(x.shape[1]))
  y.backward(torch.tensor(a['dy']).permute(0, 3, 1, 2))
  np.savez(outputs, y=y.detach().permute(0, 2, 3, 1).numpy(),
           dx=x.grad.permute(0, 2, 3, 1).numpy())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data_dir', default='/tmp/cifar10_data')
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--warmup', type=int, default=20)
  parser.add_argument('--no_compile', action='store_true',
                      help='do not try torch.compile')
  parser.add_argument('--check_lrn', nargs=2, metavar=('IN', 'OUT'))
  parser.add_argument('--ceiling', action='store_true', help='print the '
                      'matmul ceiling (TFLOP/s, dtype) and exit')
  args, _ = parser.parse_known_args()  # (benchmark.py's --quick etc.)
  if args.check_lrn:
    check_lrn(*args.check_lrn)
    return 0
  torch.set_num_threads(os.cpu_count() or 1)
  if args.ceiling:
    print('%.4f %s' % ceiling())
    return 0
  data = load_train(args.data_dir)
  generator = torch.Generator().manual_seed(1)
  trainer, how = make_trainer(data, generator, args.warmup,
                              not args.no_compile)
  print('PyTorch %s, %s, %s, %d threads' % (
      torch.__version__, 'bfloat16 autocast' if trainer.bf16 else 'float32',
      how, torch.get_num_threads()), file=sys.stderr, flush=True)
  print('@turn ready', flush=True)
  for line in sys.stdin:
    if line.strip() != 'run':
      break
    t = time.perf_counter()
    run_steps(trainer, data, generator, args.steps)
    print('@turn %r' % (time.perf_counter() - t), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
