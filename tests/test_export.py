"""Using a trained model: the exported SavedModel and classifying image
files, each against the evaluator."""

import csv
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import conftest

from data_sets import CIFAR10
import tensorflow as tf

import cifar10_classify
import cifar10_export
from cifar10_toolkit import images
import cifar10_input
import convnet
from cifar10_toolkit import run_control
from cifar10_toolkit import evaluation


def _test_images(data_dir):
  raw = np.fromfile(os.path.join(data_dir, CIFAR10.folder,
                                 CIFAR10.test_files[0]), np.uint8)
  raw = raw.reshape(-1, CIFAR10.record_bytes)
  images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), raw[:, 0].astype(np.int32)


def _evaluator_predictions(data_dir, checkpoint_dir):
  ev = evaluation.Evaluator(data_dir, 'test', 10000, CIFAR10,
                            convnet, cifar10_input)
  ev.restore(tf.train.latest_checkpoint(checkpoint_dir))
  precision, _, _ = ev.evaluate()
  images, _ = _test_images(data_dir)
  crops = cifar10_input.central_crop_and_standardize(images)
  return precision, ev.predict(crops).numpy()


def test_exported_model_predicts_as_the_evaluator(shared_bin_dir, trained,
                                                  tmp_path, capsys):
  export_dir = str(tmp_path / 'model')
  assert cifar10_export.main(['--checkpoint_dir', trained, '--export_dir',
                              export_dir]) == 0
  assert 'Exported %s (step 4, moving-average weights)' % os.path.join(
      trained, 'ckpt-4') in capsys.readouterr().out
  serve = tf.saved_model.load(export_dir).signatures['serving_default']
  images, labels = _test_images(shared_bin_dir)
  out = serve(images=tf.constant(images))
  precision, predicted = _evaluator_predictions(shared_bin_dir, trained)
  np.testing.assert_array_equal(out['classes'].numpy(), predicted)
  assert np.mean(out['classes'].numpy() == labels) == precision
  np.testing.assert_allclose(out['probabilities'].numpy().sum(axis=1), 1,
                             rtol=1e-5)
  assert out['class_names'].numpy()[0].decode() == \
      CIFAR10.class_names[predicted[0]]
  # never over an existing export
  status = run_control.run_main(cifar10_export.main, [
      '--checkpoint_dir', trained, '--export_dir', export_dir])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1 and 'exists' in err[0]


@pytest.mark.parametrize('source', ['checkpoint', 'model'])
def test_classify_png_as_the_evaluator_does(shared_bin_dir, trained, tmp_path,
                                            capsys, source):
  images, _ = _test_images(shared_bin_dir)
  _, predicted = _evaluator_predictions(shared_bin_dir, trained)
  paths = []
  for i in range(3):
    paths.append(str(tmp_path / ('image%d.png' % i)))
    tf.io.write_file(paths[-1], tf.io.encode_png(images[i]))
  where = ['--checkpoint_dir', trained]
  if source == 'model':
    where = ['--export_dir', str(tmp_path / 'model')]
    cifar10_export.main(['--checkpoint_dir', trained, '--export_dir',
                         where[1]])
  capsys.readouterr()
  assert cifar10_classify.main(paths + where + ['--top_k', '2']) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == len(paths), out  # a line per file, in order
  for i, line in enumerate(out):
    m = re.match(r'^(.*): (\w+) (0\.\d{3}|1\.000), (\w+) (0\.\d{3})$', line)
    assert m and m.group(1) == paths[i], line
    assert m.group(2) == CIFAR10.class_names[predicted[i]]


def test_classify_bad_files_one_line(trained, tmp_path, capsys):
  text = tmp_path / 'text.png'
  text.write_text('not an image')
  big = str(tmp_path / 'big.png')
  tf.io.write_file(big, tf.io.encode_png(np.zeros((40, 30, 3), np.uint8)))
  huge = tmp_path / 'huge.png'  # 1 KB that declares 20,000 x 20,000 pixels
  header = tf.io.encode_png(np.zeros((1, 1, 3), np.uint8)).numpy()
  huge.write_bytes(header[:16] + struct.pack('>II', 20000, 20000) +
                   header[24:])
  fifo = str(tmp_path / 'fifo.png')
  os.mkfifo(fifo)
  for path, what in ((str(tmp_path / 'none.png'), 'no such file'),
                     (str(text), 'not a PNG, JPEG'),
                     (big, '30x40 pixels, the model takes 32x32'),
                     (str(huge), '20000x20000 pixels, more than the 64 '
                      'megapixels an image may have (--max_megapixels)'),
                     (fifo, 'not a regular file (a FIFO, socket or device)')):
    status = run_control.run_main(cifar10_classify.main,
                                [path, '--checkpoint_dir', trained])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and path in err[0] and what in err[0]
  assert cifar10_classify.main([big, '--resize', '--checkpoint_dir',
                                trained]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 1 and re.match(
      r'^%s: (\w+) [01]\.\d{3}, (\w+) [01]\.\d{3}, (\w+) [01]\.\d{3}$'
      % re.escape(big), out[0]), out
  # a name that is not UTF-8 (made under another locale): classified, and
  # written to the CSV with its own bytes
  odd = os.path.join(os.fsencode(str(tmp_path)), b'\xff\xfeimg\xe9.png')
  with open(odd, 'wb') as f:
    f.write(tf.io.encode_png(np.zeros((32, 32, 3), np.uint8)).numpy())
  table = str(tmp_path / 'odd.csv')
  assert cifar10_classify.main([os.fsdecode(odd), '--checkpoint_dir', trained,
                                '--output', table]) == 0
  with open(table, 'rb') as f:
    assert f.read().splitlines()[1].startswith(odd + b',')


def test_classify_folders_and_globs_to_csv_or_jsonl_past_bad_files(
    shared_bin_dir, trained, tmp_path, capsys, monkeypatch):
  images, _ = _test_images(shared_bin_dir)
  _, predicted = _evaluator_predictions(shared_bin_dir, trained)
  photos = tmp_path / 'photos'
  (photos / 'deep' / 'er').mkdir(parents=True)
  (photos / '.hidden').mkdir()
  good = {}
  for i, rel in enumerate(['a.png', 'deep/b.PNG', 'deep/er/c.png',
                           '.hidden/d.png', 'deep/.e.png']):
    path = str(photos / rel)
    tf.io.write_file(path, tf.io.encode_png(images[i]))
    if '/.' not in '/' + rel:
      good[path] = CIFAR10.class_names[predicted[i]]
  (photos / 'notes.txt').write_text('not an image, not looked at')
  broken = photos / 'deep' / 'broken.png'
  broken.write_text('not an image')
  loose = str(tmp_path / 'f.png')
  tf.io.write_file(loose, tf.io.encode_png(images[5]))
  good[loose] = CIFAR10.class_names[predicted[5]]
  monkeypatch.setattr(cifar10_classify, 'BATCH', 2)  # batches, as 10,000
  capsys.readouterr()
  (tmp_path / 'empty').mkdir()
  args = [str(photos), str(tmp_path / '*.png'), str(tmp_path / 'none*.jpg'),
          str(tmp_path / 'empty'), '--checkpoint_dir', trained, '--top_k',
          '2']
  for output in ('top.csv', 'top.jsonl'):
    out_path = str(tmp_path / output)
    status = run_control.run_main(cifar10_classify.main, args + [
        '--output', out_path])
    captured = capsys.readouterr()
    # each bad argument one line on stderr, the rest classified, status 1
    err = captured.err.strip().splitlines()
    assert status == 1 and len(err) == 3, err
    assert '%s: a pattern that matches no image file' % (
        tmp_path / 'none*.jpg') in err[0]  # (said before any is read)
    assert '%s: a folder with no JPEG, PNG, BMP or GIF file' % (
        tmp_path / 'empty') in err[1]
    assert '%s: not a PNG, JPEG' % broken in err[2]
    assert captured.out == 'Classified 4 file(s) to %s; 3 could not be\n' % (
        out_path)
    with open(out_path) as f:
      if output.endswith('.csv'):
        rows = list(csv.reader(f))
        assert rows[0] == ['path', 'class_1', 'probability_1', 'class_2',
                           'probability_2']
        got = {r[0]: r[1] for r in rows[1:]}
        assert all(abs(float(r[2]) + float(r[4]) - 1) < 1 for r in rows[1:])
      else:
        rows = [json.loads(line) for line in f]
        got = {r['path']: r['top_k'][0]['class'] for r in rows}
        assert all(len(r['top_k']) == 2 and r['top_k'][0]['probability'] >=
                   r['top_k'][1]['probability'] for r in rows)
    assert got == good and list(got)[0] == str(photos / 'a.png'), got
  # no output file: one line a file on the console, as before
  assert cifar10_classify.main([str(photos / 'a.png'), '--checkpoint_dir',
                                trained]) == 0
  assert capsys.readouterr().out.startswith('%s: %s ' % (
      photos / 'a.png', good[str(photos / 'a.png')]))
  # an output that cannot be written: one line, before anything is read
  (tmp_path / 'folder.csv').mkdir()
  for output, said in ((str(tmp_path / 'folder.csv'), 'is a folder'),
                       (str(tmp_path / 'no' / 'x.csv'), 'does not exist')):
    status = run_control.run_main(cifar10_classify.main, [
        loose, '--checkpoint_dir', trained, '--output', output])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and said in err[0], err
  with pytest.raises(SystemExit) as e:  # (a flag error, as any)
    cifar10_classify.main([loose, '--output', str(tmp_path / 'x.txt')])
  assert e.value.code == 2 and '.csv or .jsonl' in capsys.readouterr().err


def test_tflite_models_run_in_tensorflows_interpreter_as_the_savedmodel(
    shared_bin_dir, trained, tmp_path, capsys):
  images, _ = _test_images(shared_bin_dir)
  images = np.concatenate([images[:100], np.full((2, 32, 32, 3), 77,
                                                 np.uint8)])  # flat ones
  exports = {}
  for quantize in ('none', 'dynamic', 'int8'):
    exports[quantize] = str(tmp_path / quantize)
    assert cifar10_export.main([
        '--checkpoint_dir', trained, '--export_dir', exports[quantize],
        '--tflite', '--quantize', quantize, '--data_dir',
        shared_bin_dir]) == 0
  assert 'and as TFLite (int8 quantized) to %s/model.tflite' % exports[
      'int8'] in capsys.readouterr().out
  serve = tf.saved_model.load(exports['none']).signatures['serving_default']
  reference = serve(images=tf.constant(images))
  sizes = {}
  for quantize, folder in exports.items():
    path = os.path.join(folder, 'model.tflite')
    sizes[quantize] = os.path.getsize(path)
    runner = tf.lite.Interpreter(model_path=path).get_signature_runner()
    out = runner(images=images)
    probabilities = out['probabilities']
    assert probabilities.shape == (len(images), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-2)
    assert [n.decode() for n in out['class_names']] == [
        CIFAR10.class_names[c] for c in out['classes']]
    if quantize == 'int8':  # int8, but the standardization stays float32
      interpreter = tf.lite.Interpreter(model_path=path)
      dtypes = {t['index']: t['dtype'] for t in
                interpreter.get_tensor_details()}
      ops = interpreter._get_ops_details()
      assert {op['op_name'] for op in ops} >= {'DIV', 'QUANTIZE',
                                                'DEQUANTIZE'}
      assert [dtypes[i] for op in ops if op['op_name'] == 'DIV'
              for i in op['inputs']] == [np.float32] * 2
      assert np.int8 in [dtypes[i] for op in ops if op['op_name'] ==
                         'CONV_2D' for i in op['inputs']]
    if quantize == 'none':  # float32: the SavedModel's function
      np.testing.assert_array_equal(out['classes'],
                                    reference['classes'].numpy())
      np.testing.assert_allclose(probabilities, reference[
          'probabilities'].numpy(), atol=1e-5)
  assert sizes['dynamic'] < sizes['none'] / 3 and sizes['int8'] < sizes[
      'none'] / 3, sizes  # int8 weights
  # classify runs it (the labels from the export's assets), as the SavedModel
  png = str(tmp_path / 'a.png')
  tf.io.write_file(png, tf.io.encode_png(images[0]))
  lines = []
  for where in (['--export_dir', exports['none']],
                ['--tflite', os.path.join(exports['none'], 'model.tflite')]):
    proc = subprocess.run([sys.executable, 'cifar10_classify.py', png] +
                          where, cwd=conftest.ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == '', proc.stderr
    lines.append(proc.stdout)
  assert lines[0] == lines[1] and lines[0].startswith(png + ': '), lines
  status = run_control.run_main(cifar10_classify.main, [
      png, '--tflite', os.path.join(exports['none'], 'saved_model.pb')])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1 and len(err) == 1 and 'is not a model exported by ' \
      'cifar10_export.py --tflite' in err[0], err


def test_the_export_names_its_classes_and_its_input(trained, tmp_path):
  export_dir = str(tmp_path / 'model')
  assert cifar10_export.main(['--checkpoint_dir', trained, '--export_dir',
                              export_dir]) == 0
  # the class names as an asset, one a line, in the probabilities' order
  with open(os.path.join(export_dir, 'assets', 'labels.txt')) as f:
    assert f.read().splitlines() == list(CIFAR10.class_names)
  loaded = tf.saved_model.load(export_dir)
  assert open(loaded.labels_file.asset_path.numpy().decode()).read(
      ).splitlines() == list(CIFAR10.class_names)
  meta = loaded.signatures['metadata']()
  assert [c.decode() for c in meta['class_names'].numpy()] == list(
      CIFAR10.class_names)
  assert meta['input'].numpy().decode().startswith(
      'uint8 RGB images [N, 32, 32, 3]')
  assert 'center 24x24 crop and per-image standardization' in meta[
      'input'].numpy().decode()
  # what TensorFlow's own tool shows of it
  import subprocess
  import sys
  show = subprocess.run(
      [sys.executable, '-m', 'tensorflow.python.tools.saved_model_cli',
       'show', '--dir', export_dir, '--all'], capture_output=True, text=True,
      timeout=120)
  assert show.returncode == 0, show.stderr
  out = show.stdout
  assert "signature_def['metadata']" in out
  assert "signature_def['serving_default']" in out
  assert re.search(r"inputs\['images'\] tensor_info:\s+dtype: DT_UINT8\s+"
                   r"shape: \(-1, 32, 32, 3\)", out), out
  assert re.search(r"outputs\['probabilities'\] tensor_info:\s+dtype: "
                   r"DT_FLOAT\s+shape: \(-1, 10\)", out), out
  # the leftovers of the export's labels are gone
  assert sorted(os.listdir(str(tmp_path))) == ['model']


def test_resize_crops_the_centre_square_or_squashes(tmp_path):
  # a 40x20 picture: a red centre square between blue sides
  image = np.zeros((20, 40, 3), np.uint8)
  image[:, :, 2] = 255
  image[:, 10:30] = [255, 0, 0]
  path = str(tmp_path / 'wide.png')
  tf.io.write_file(path, tf.io.encode_png(image))
  cropped = images.read(path, (32, 32, 3))
  assert cropped.shape == (32, 32, 3)
  assert (cropped == [255, 0, 0]).all()  # the centre square alone
  squashed = images.read(path, (32, 32, 3), squash=True)
  assert squashed.shape == (32, 32, 3)
  assert (squashed[:, 0] == [0, 0, 255]).all()  # the blue sides kept
  assert (squashed[:, 16] == [255, 0, 0]).all()
