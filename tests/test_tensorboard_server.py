"""TensorBoard's own server shows what the README promises, tab by tab.

A convnet run, its evaluation and a fully connected run are made by the
scripts (subprocesses, as a user runs them); TensorBoard is started on a free
127.0.0.1 port with the README's commands, and each tab is read through the
HTTP API its frontend uses: Scalars, Images, Text, Histograms, Distributions,
Graphs, HParams. Reading the event files directly is not enough: that is how
the Text tab once stayed empty while its test passed.
"""

import contextlib
import html
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from cifar10_toolkit import dataset
import convnet
from data_sets import CIFAR10
from conftest import ROOT

LAYERS = convnet.NETWORK  # each layer a box of the graph
SERVER_START_SECS = 90  # bound on TensorBoard's start and first load


# costly module fixtures: its tests run in one process (--dist loadgroup)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('tensorboard_server')]


def _run(script, *args):
  """Runs a script as the user does; returns its stdout (asserts exit 0)."""
  p = subprocess.run([sys.executable, os.path.join(ROOT, script)] +
                     list(args), capture_output=True, text=True, timeout=600,
                     cwd=ROOT)
  assert p.returncode == 0, p.stderr
  return p.stdout


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Server:
  """A TensorBoard server on 127.0.0.1 and the HTTP API of its frontend."""

  def __init__(self, *flags):
    self.port = _free_port()
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'tensorboard.main', '--host', '127.0.0.1',
         '--port', str(self.port), '--reload_interval', '1'] + list(flags),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

  def get(self, path, **query):
    url = 'http://127.0.0.1:%d/data/%s' % (self.port, path)
    if query:
      url += '?' + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=30) as r:
      return r.read()

  def json(self, path, **query):
    return json.loads(self.get(path, **query))

  def post(self, path, body):
    req = urllib.request.Request(
        'http://127.0.0.1:%d/data/%s' % (self.port, path),
        data=json.dumps(body).encode(),
        headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=30) as r:
      return json.loads(r.read())

  def wait_for(self, ready):
    """Polls until ready(self) is true (bounded: SERVER_START_SECS)."""
    end = time.time() + SERVER_START_SECS
    while time.time() < end:
      assert self.proc.poll() is None, self.proc.stderr.read()
      try:
        if ready(self):
          return
      except (urllib.error.URLError, ConnectionError, ValueError, KeyError):
        pass
      time.sleep(0.5)
    raise AssertionError('TensorBoard did not show the runs within %d s'
                         % SERVER_START_SECS)

  def session_groups(self):
    return self.post('plugin/hparams/session_groups', {
        'experimentName': '', 'startIndex': 0, 'sliceSize': 100,
        'allowedStatuses': ['STATUS_UNKNOWN', 'STATUS_SUCCESS',
                            'STATUS_FAILURE', 'STATUS_RUNNING'],
        'colParams': []})['sessionGroups']

  def stop(self):
    self.proc.terminate()
    try:
      self.proc.wait(10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()


@contextlib.contextmanager
def tensorboard(*flags, runs=()):
  """A running server, once it lists `runs` (with their plugins loaded)."""
  server = Server(*flags)
  try:
    server.wait_for(lambda s: set(runs) <= set(s.json('runs')) and
                    len(s.session_groups()) > 0)
    yield server
  finally:
    server.stop()


@pytest.fixture(scope='module')
def runs(shared_bin_dir, tmp_path_factory):
  """A convnet run with the CPU's default precision and slices, its
  evaluation (README layout: a folder of its own), a fully connected run."""
  d = tmp_path_factory.mktemp('tb_server')
  train, evals, fc = str(d / 'train'), str(d / 'eval'), str(d / 'fc')
  out = _run('cifar10_train.py', '--data_dir', shared_bin_dir, '--train_dir',
             train, '--batch_size', '64', '--max_steps', '3', '--seed', '5',
             '--log_frequency', '1')
  ev = _run('cifar10_eval.py', '--data_dir', shared_bin_dir,
            '--checkpoint_dir', train, '--eval_dir', evals, '--run_once')
  fc_out = _run('run_fc_model.py', '--data_dir', shared_bin_dir,
                '--train_dir', fc, '--max_steps', '3', '--batch_size', '50')
  dtype = re.search(r', (\w+) compute, seed 5,', out).group(1)
  precision = float(re.search(r'precision @ 1 = ([\d.]+)', ev).group(1))
  fc_seed = int(re.search(r'^seed = (\d+)$', fc_out, re.M).group(1))
  return dict(train=train, eval=evals, fc=fc, dtype=dtype,
              precision=precision, data_dir=shared_bin_dir, fc_seed=fc_seed)


@pytest.fixture(scope='module')
def server(runs):
  """The README's command for the convnet (train:..., eval:...)."""
  with tensorboard('--logdir_spec', 'train:%s,eval:%s' % (
      runs['train'], runs['eval']), runs=('train/.', 'eval/.')) as s:
    yield s


def test_scalars_tab(server, runs):
  tags = server.json('plugin/scalars/tags')
  assert {'learning_rate', 'global_step/sec', 'total_loss',
          'total_loss (raw)', 'cross_entropy', 'conv1/sparsity'} <= set(
              tags['train/.'])
  points = server.json('plugin/scalars/scalars', run='train/.',
                       tag='total_loss')
  assert [p[1] for p in points] == [1]  # (wall time, step, value)
  assert np.isfinite(points[0][2]) and points[0][2] > 0
  (precision,) = server.json('plugin/scalars/scalars', run='eval/.',
                             tag='Precision @ 1')
  assert precision[1] == 3  # at the checkpoint's step
  assert precision[2] == pytest.approx(runs['precision'], abs=5e-4)


def test_images_tab_shows_the_confusion_matrix(server):
  tags = server.json('plugin/images/tags')
  assert 'confusion_matrix' in tags['eval/.']
  assert 'images' in tags['train/.']  # the distorted input sample
  (entry,) = server.json('plugin/images/images', run='eval/.',
                         tag='confusion_matrix', sample=0)
  png = server.get('plugin/images/individualImage?' + entry['query'])
  image = tf.io.decode_png(png).numpy()
  assert image.shape[0] == 215 and image.shape[1] > 200  # a labelled figure
  assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50


def test_text_tab_shows_the_confusion_table(server):
  assert server.json('plugin/text/tags') == {
      'eval/.': ['checkpoint', 'confusion_matrix_table']}
  # which checkpoint was evaluated, with what tells its weights apart, and
  # what was measured
  (entry,) = server.json('plugin/text/text', run='eval/.', tag='checkpoint')
  assert re.search(r'ckpt-3 \(weights [0-9a-f]{16}; eval_data test, '
                   r'num_examples \d+, moving averages\)',
                   entry['text']), entry
  (entry,) = server.json('plugin/text/text', run='eval/.',
                         tag='confusion_matrix_table')
  assert entry['step'] == 3
  rows = re.findall(r'<tr>\s*<td><strong>(\w+)</strong></td>(.*?)</tr>',
                    entry['text'], re.S)
  assert [name for name, _ in rows] == list(CIFAR10.class_names)
  cells = [[html.unescape(c) for c in re.findall(r'<td>([^<]*)</td>', r)]
           for _, r in rows]
  counts = np.array([[int(c) for c in r[:10]] for r in cells])
  assert counts.sum() == 200 and counts.sum(axis=1).tolist() == [20] * 10
  recall = [float(r[10]) for r in cells]
  assert recall == pytest.approx(np.diag(counts) / 20, abs=5e-4)


def test_histograms_and_distributions_tabs(server):
  tags = set(server.json('plugin/histograms/tags')['train/.'])
  for layer in ('conv1', 'conv2', 'local3', 'local4', 'softmax_linear'):
    assert layer + '/activations' in tags
    assert layer + '/weights' in tags and layer + '/weights/gradients' in tags
  (hist,) = server.json('plugin/histograms/histograms', run='train/.',
                        tag='conv1/activations')
  wall, step, buckets = hist
  assert step == 1 and sum(b[2] for b in buckets) == 64 * 24 * 24 * 64
  (dist,) = server.json('plugin/distributions/distributions', run='train/.',
                        tag='conv1/weights')
  assert dist[1] == 1 and len(dist[2]) == 9  # the basis points of the band


def test_graphs_tab_draws_the_tutorial_layers(server):
  assert server.json('plugin/graphs/info')['train/.']['run_graph']
  text = server.get('plugin/graphs/graph', run='train/.',
                    conceptual='false').decode()
  names = re.findall(r'^  name: "([^"]+)"', text, re.M)  # the top graph's
  for layer in LAYERS:  # one box each, right under train_step
    assert any(n.startswith('train_step/%s/' % layer) for n in names), layer
  assert not any(re.search(r'(^|/)(shard\d+|local3_1|conv1_1)(/|$)', n)
                 for n in names)
  for group in ('train_step/loss', 'train_step/gradients', 'train_step/sgd',
                'train_step/moving_averages', 'train_step/loss_averages',
                'input', 'replica_input', 'gradient_tape'):
    assert any(n.startswith(group + '/') for n in names), group


def _hparams_row(groups, session_names):
  (group,) = [g for g in groups
              if {s['name'] for s in g['sessions']} == set(session_names)]
  metrics = {m['name']['tag']: m['value'] for m in group['metricValues']}
  return group, metrics


def test_hparams_tab_joins_training_and_evaluation(server, runs):
  experiment = server.post('plugin/hparams/experiment', {'experimentName': ''})
  assert {m['name']['tag'] for m in experiment['metricInfos']} == {
      'total_loss', 'Precision @ 1'}
  groups = server.session_groups()
  assert len(groups) == 1  # one row: the run and the precision of its model
  group, metrics = _hparams_row(groups, ['train/.', 'eval/.'])
  assert metrics['Precision @ 1'] == pytest.approx(runs['precision'], abs=5e-4)
  assert np.isfinite(metrics['total_loss'])
  # the columns in the order the dashboard gets them (sorted by name, those
  # that differ first: none here) and their plain names; the frontend ticks
  # the first five: seed, precision, slices, xla, batch_size
  infos = experiment['hparamInfos']
  names = {i['name']: i['displayName'] for i in infos}
  assert [names[i['name']] for i in infos][:5] == [
      'seed', 'precision', 'slices', 'xla', 'batch_size']
  assert not {'train_dir', 'data_dir', 'data_source', 'fresh',
              'log_frequency', 'data_on_device'} & set(names.values())
  hp = {names[k]: v for k, v in group['hparams'].items()}
  # the values the run used, not the flags as typed
  # integers as their digits: a seed is copied exactly
  assert hp['seed'] == '5' and hp['batch_size'] == '64'
  assert hp['replicas'] == '1'
  assert hp['precision'] == runs['dtype']  # as the console said
  assert hp['xla'] is False and hp['max_steps'] == '3'
  assert hp['data_md5'] == dataset.fingerprint(runs['data_dir'], CIFAR10)
  assert hp['slices'].isdigit() and int(hp['slices']) >= 1
  assert 'None' not in {str(v) for v in hp.values()}


def test_hparams_row_with_the_eval_dir_inside_the_train_dir(runs):
  """The other layout: one --logdir, the evaluation in train_dir/eval."""
  _run('cifar10_eval.py', '--data_dir', runs['data_dir'], '--checkpoint_dir',
       runs['train'], '--eval_dir', os.path.join(runs['train'], 'eval'),
       '--run_once')
  with tensorboard('--logdir', runs['train'], runs=('.', 'eval')) as s:
    groups = s.session_groups()
    assert len(groups) == 1
    _, metrics = _hparams_row(groups, ['.', 'eval'])
    assert set(metrics) == {'total_loss', 'Precision @ 1'}


def test_fully_connected_runs(runs):
  with tensorboard('--logdir', runs['fc'], runs=()) as s:
    (run,) = s.json('runs')
    tags = s.json('plugin/scalars/tags')[run]
    assert {'loss', 'train_accuracy', 'test_accuracy'} <= set(tags)
    assert 'logits' in s.json('plugin/histograms/tags')[run]
    (group,) = s.session_groups()
    metrics = {m['name']['tag'] for m in group['metricValues']}
    assert 'test_accuracy' in metrics
    # the seed the console printed (drawn: no --seed given)
    assert group['hparams']['01_seed'] == str(runs['fc_seed'])
    text = s.get('plugin/graphs/graph', run=run, conceptual='false').decode()
    assert re.search(r'name: "train_step/hidden1/', text)
