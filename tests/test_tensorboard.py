"""What TensorBoard shows and what the console says: readable graphs, the
labelled confusion matrix, HParams, profiles, the console's lines."""

import collections
import datetime
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator as ea

import cifar10_eval
from cifar10_toolkit import dataset
from cifar10_toolkit import cli
import cifar10_train
import run_fc_model
import convnet
from data_sets import CIFAR10
from conftest import ROOT, train_args
from cifar10_toolkit import evaluation

LAYERS = convnet.NETWORK  # each layer a box of the graph


def _accumulator(logdir):
  acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0})
  acc.Reload()
  return acc


def _graph(logdir):
  """The GraphDef TensorBoard's Graphs tab draws."""
  acc = ea.EventAccumulator(logdir, size_guidance={ea.GRAPH: 1})
  acc.Reload()
  return acc.Graph()


def _top_level(graph):
  """Top-level names, split into scopes (groups of nodes) and single nodes."""
  counts = collections.Counter(n.name.split('/')[0] for n in graph.node)
  scopes = {k for k, v in counts.items()
            if any(n.name.startswith(k + '/') for n in graph.node)}
  return scopes, set(counts) - scopes


def test_convnet_graph_has_the_layers_as_named_scopes(trained):
  graph = _graph(trained)
  names = {n.name for n in graph.node}
  for layer in LAYERS:
    assert any(n.startswith('train_step/%s/' % layer) for n in names), layer
  for group in ('train_step/loss/cross_entropy',
                'train_step/loss/weight_decay', 'train_step/gradients',
                'train_step/sgd', 'train_step/moving_averages',
                'train_step/loss_averages', 'input', 'replica_input',
                'stop_and_save_votes'):
    assert any(n.startswith(group + '/') for n in names), group
  scopes, singles = _top_level(graph)
  # Before the scopes: 673 nodes under 396 top-level names. Now 672 nodes
  # under 30: six scopes, and the function's input (votes), outputs (22
  # Identity nodes, one series in TensorBoard) and a NoOp.
  assert scopes == {'train_step', 'replica_input', 'input', 'gradient_tape',
                    'outputs', 'stop_and_save_votes'}, scopes
  ops = {n.name: n.op for n in graph.node}
  assert {ops[s] for s in singles} <= {'_Arg', 'Placeholder', 'Identity',
                                       '_Retval', 'NoOp'}


def test_fc_graph_has_the_layers_as_named_scopes(shared_bin_dir, tmp_path):
  assert run_fc_model.main(['--data_dir', shared_bin_dir, '--train_dir',
                            str(tmp_path), '--max_steps', '2',
                            '--batch_size', '50']) == 0
  run = os.path.join(str(tmp_path), os.listdir(str(tmp_path))[0])
  graph = _graph(run)
  names = {n.name for n in graph.node}
  for group in ('train_step/hidden1', 'train_step/softmax_linear',
                'train_step/loss/cross_entropy',
                'train_step/loss/regularization', 'train_step/sgd',
                'accuracy'):
    assert any(n.startswith(group + '/') for n in names), group
  scopes, singles = _top_level(graph)
  assert scopes == {'train_step', 'gradient_tape', 'accuracy'}
  ops = {n.name: n.op for n in graph.node}
  assert {ops[s] for s in singles} <= {'_Arg', 'Placeholder', 'Identity',
                                       '_Retval', 'NoOp'}


def test_confusion_matrix_is_labelled_and_in_the_text_tab(
    shared_bin_dir, trained, tmp_path):
  e = str(tmp_path / 'eval')
  assert cifar10_eval.main(['--checkpoint_dir', trained, '--eval_dir', e,
                            '--data_dir', shared_bin_dir, '--run_once']) == 0
  acc = _accumulator(e)
  (event,) = acc.Tensors('confusion_matrix')
  image = tf.io.decode_png(event.tensor_proto.string_val[2]).numpy()
  (event,) = acc.Tensors('confusion_matrix_table')  # a tag of its own
  text = event.tensor_proto.string_val[0].decode()
  # a real figure, made for the Time Series card (215 pixels high, shown
  # 1:1) and the Images card (up to about 350 wide)
  assert image.shape[0] == 215 and 200 < image.shape[1] <= 350, image.shape
  assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50
  rows = [l for l in text.splitlines() if l.startswith('| **')]
  assert [re.match(r'\| \*\*(\w+)\*\*', r).group(1) for r in rows] == \
      list(CIFAR10.class_names)
  counts = [[int(c) for c in r.split('|')[2:12]] for r in rows]
  assert np.sum(counts) == 200 and np.sum(counts, axis=1).tolist() == [20] * 10


def test_confusion_image_shows_the_numbers(tmp_path):
  confusion = np.diag(np.arange(10) + 90)
  confusion[3, 5] = 7
  a = evaluation.confusion_image(confusion, 1234, 0.987, CIFAR10.class_names)
  b = evaluation.confusion_image(confusion * 0 + np.diag([100] * 10), 1234,
                                   0.987, CIFAR10.class_names)
  assert a.dtype == np.uint8 and a.shape[-1] == 4
  assert a.shape == b.shape and not np.array_equal(a, b)


def _plugin_tags(logdir, plugin):
  acc = _accumulator(logdir)
  return [t for t in acc.Tags()['tensors']
          if acc.SummaryMetadata(t).plugin_data.plugin_name == plugin]


def test_both_models_write_hparams(trained, shared_bin_dir, tmp_path):
  from tensorboard.plugins.hparams import plugin_data_pb2
  acc = _accumulator(trained)
  assert set(_plugin_tags(trained, 'hparams')) >= {
      '_hparams_/experiment', '_hparams_/session_start_info'}
  start = plugin_data_pb2.HParamsPluginData.FromString(acc.SummaryMetadata(
      '_hparams_/session_start_info').plugin_data.content).session_start_info
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
      acc.SummaryMetadata('_hparams_/experiment').plugin_data.content
  ).experiment
  # only what shapes the result, most telling first: ranked names, plain
  # display names
  shown = [(h.name, h.display_name) for h in experiment.hparam_infos]
  assert [d for _, d in shown] == [
      'seed', 'precision', 'slices', 'xla', 'batch_size', 'replicas',
      'steps_per_loop', 'max_steps', 'learning_rate', 'epochs_per_decay',
      'decay_factor', 'moving_average_decay', 'train_size', 'model',
      'dataset', 'data_md5']
  assert all(n == '%02d_%s' % (i + 1, d) for i, (n, d) in enumerate(shown))
  value = lambda name: start.hparams[dict(
      (d, n) for n, d in shown)[name]]
  # integers as their digits (TensorBoard shows a number's 5 digits)
  assert value('seed').string_value == '3'
  assert value('batch_size').string_value == '32'
  assert value('steps_per_loop').string_value == '100'
  assert value('precision').string_value == 'float32'
  assert value('max_steps').string_value == '4'
  assert value('learning_rate').number_value == 0.1
  assert value('train_size').string_value == '50000'
  assert value('dataset').string_value == 'cifar10'
  assert value('model').string_value == 'convnet'
  assert value('data_md5').string_value == dataset.fingerprint(
      shared_bin_dir, CIFAR10)
  assert {m.name.tag for m in experiment.metric_infos} == {
      'total_loss', 'Precision @ 1'}
  assert run_fc_model.main(['--data_dir', shared_bin_dir, '--train_dir',
                            str(tmp_path), '--max_steps', '2',
                            '--batch_size', '50']) == 0
  run = os.path.join(str(tmp_path), os.listdir(str(tmp_path))[0])
  assert '_hparams_/session_start_info' in _plugin_tags(run, 'hparams')
  fc = _accumulator(run)
  test_accuracy = fc.Tensors('test_accuracy')
  assert [e.step for e in test_accuracy] == [2]


def test_fc_prints_the_effective_source_and_saved_paths(
    shared_bin_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(CIFAR10.source_env, '/some/archive.tar.gz')
  assert run_fc_model.main(['--data_dir', shared_bin_dir, '--train_dir',
                            str(tmp_path), '--max_steps', '2',
                            '--batch_size', '50']) == 0
  out = capsys.readouterr().out
  assert 'data_source = /some/archive.tar.gz\n' in out
  run = os.path.join(str(tmp_path), os.listdir(str(tmp_path))[0])
  assert 'Saved checkpoint %s\n' % os.path.join(run, 'ckpt-2') in out


@pytest.mark.slow
def test_profile_steps_write_a_trace(shared_bin_dir, tmp_path, capsys):
  d = str(tmp_path / 't')
  assert cifar10_train.main(train_args(shared_bin_dir, d) + [
      '--max_steps', '6', '--profile_steps', '2,4']) == 0
  assert 'Profiling steps 3 to 4 into %s' % d in capsys.readouterr().out
  traces = [f for _, _, fs in os.walk(os.path.join(d, 'plugins', 'profile'))
            for f in fs if f.endswith('.xplane.pb')]
  assert len(traces) == 1
  # where the steps' time went, read from that trace by its tool
  done = subprocess.run(
      [sys.executable, '-m', 'tools.profile_summary', '--train_dir', d,
       '--steps', '2'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0 and done.stderr == '', done.stderr
  lines = done.stdout.splitlines()
  assert lines[0].endswith('.xplane.pb: 2 steps'), lines
  wall, total, threads, busy = re.match(
      r'wall ([\d.]+) ms a step; kernels ([\d.]+) thread-ms a step on (\d+) '
      r'threads \(busy (\d+)% of the wall time\)$', lines[1]).groups()
  assert 0 < float(total) <= float(wall) * int(threads) * 1.01
  groups = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in (
      re.match(r'  (.+?) +([\d.]+) ms +([\d.]+)%$', l) for l in lines[2:])}
  assert None not in groups and len(groups) == len(lines) - 2, lines
  for group in ('convolution forward', 'convolution backward-filter',
                'convolution backward-data', 'XLA programs (the LRN)',
                'matmuls', 'pools'):
    assert groups[group][0] > 0, (group, lines)
  assert abs(sum(ms for ms, _ in groups.values()) - float(total)) < 0.1
  assert abs(sum(share for _, share in groups.values()) - 100) < 1


def test_profile_summary_without_a_trace_is_one_line(tmp_path):
  done = subprocess.run(
      [sys.executable, '-m', 'tools.profile_summary', '--train_dir',
       str(tmp_path), '--steps', '2'], cwd=ROOT, capture_output=True,
      text=True, timeout=120)
  assert done.returncode == 1 and done.stdout == ''
  assert done.stderr == (
      'profile_summary.py: error: %s holds no profiler trace (plugins/'
      'profile/*/*.xplane.pb): train with --profile_steps A,B first\n'
      % tmp_path), done.stderr


@pytest.mark.parametrize('value', ['4,2', '3', 'a,b', '-1,2'])
def test_bad_profile_steps(value, capsys):
  with pytest.raises(SystemExit):
    cli.parse(cifar10_train.FLAGS, ['--profile_steps', value])
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and '--profile_steps' in err[0]


@pytest.mark.slow
def test_progress_line_at_a_steady_interval(shared_bin_dir, tmp_path, capsys):
  d = str(tmp_path / 't')
  assert cifar10_train.main(train_args(shared_bin_dir, d) + [
      '--max_steps', '40', '--steps_per_loop', '10',
      '--progress_secs', '0.000001']) == 0
  out = capsys.readouterr().out
  lines = re.findall(r': step (\d+) of 40 \((\d+\.\d)%\), about \d+ min \d\d '
                     r's to go at \d+ examples/sec$', out, re.M)
  # after each call once both training functions have run once (steps 2-11),
  # none at the end, none tied to a checkpoint (there is none before the end)
  assert [s for s, _ in lines] == ['21', '31']
  assert all(float(p) == pytest.approx(100 * int(s) / 40, abs=0.05)
             for s, p in lines)
  assert 'saved checkpoint' not in out.split(': step 31 of 40')[0]


@pytest.mark.slow
def test_console_lines_carry_their_own_step_times(shared_bin_dir, tmp_path,
                                                   capsys):
  d = str(tmp_path / 't')
  assert cifar10_train.main(train_args(shared_bin_dir, d) + [
      '--max_steps', '24', '--steps_per_loop', '10']) == 0
  out = capsys.readouterr().out
  lines = re.findall(
      r'^(\S+ \S+): step (\d+), loss = [\d.]+ \(([\d.]+) '
      r'examples/sec; ([\d.]+) sec/batch(; includes start-up)?\)$', out, re.M)
  assert [int(l[1]) for l in lines] == list(range(1, 25))
  # the first line (step 1: tracing) and the first of train_loop's first
  # call (step 2) include start-up; no later line does
  assert [bool(l[4]) for l in lines] == [True, True] + [False] * 22
  stamps = [datetime.datetime.strptime(l[0], '%Y-%m-%d %H:%M:%S.%f')
            for l in lines]
  assert stamps == sorted(stamps)
  # lines of one call (steps 2-11, 12-21) are stamped each with its step's
  # own time, not all with the time the call returned
  assert len(set(stamps[1:11])) == 10 and len(set(stamps[11:21])) == 10
  summary = re.search(r': trained 24 steps \(0 to 24\) in \d+ min \d\d s: '
                      r'(\d+) examples/sec, (\d+) after start-up$', out, re.M)
  assert summary and int(summary.group(2)) >= int(summary.group(1))


# --- export and classify ----------------------------------------------------
