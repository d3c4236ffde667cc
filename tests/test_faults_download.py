"""Downloads are bounded: a server that never answers, a trickle, an
endless source, a Content-Length too large; a stop leaves no .partial.
Every server here is on 127.0.0.1 and stops with its test."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from cifar10_toolkit import dataset
from cifar10_toolkit import download
from cifar10_toolkit import errors
from data_sets import CIFAR10
from conftest import ROOT, train_args


@contextlib.contextmanager
def server(answer):
  """A server on 127.0.0.1 that runs answer(connection) for each client,
  until the block ends. Yields its URL."""
  listener = socket.socket()
  listener.bind(('127.0.0.1', 0))
  listener.listen(4)
  listener.settimeout(0.2)
  done = threading.Event()

  def serve():
    while not done.is_set():
      try:
        conn, _ = listener.accept()
      except OSError:
        continue
      threading.Thread(target=_guarded, args=(answer, conn, done),
                       daemon=True).start()
  thread = threading.Thread(target=serve, daemon=True)
  thread.start()
  try:
    yield 'http://127.0.0.1:%d/cifar-10-binary.tar.gz' % (
        listener.getsockname()[1])
  finally:
    done.set()
    thread.join(5)
    listener.close()


def _guarded(answer, conn, done):
  with conn:
    try:
      answer(conn, done)
    except OSError:
      pass


def _silent(conn, done):
  done.wait(30)  # accepts, never answers


def _trickle(conn, done):
  conn.sendall(b'HTTP/1.0 200 OK\r\nContent-Length: 1000000\r\n\r\n')
  while not done.is_set():
    conn.sendall(b'x')
    time.sleep(0.05)


def _huge(conn, done):
  conn.sendall(b'HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n' % (
      10 * download.ARCHIVE_BYTES))


def _fail(data_dir, url):
  with pytest.raises(errors.DataSetError) as e:
    dataset.maybe_download_and_extract(data_dir, url, CIFAR10)
  assert os.listdir(data_dir) == []  # no .partial, no archive
  return str(e.value)


def test_a_server_that_never_answers_is_given_up(tmp_path, monkeypatch):
  monkeypatch.setattr(download, 'CONNECT_SECS', 1)
  with server(_silent) as url:
    began = time.time()
    message = _fail(str(tmp_path), url)
  assert time.time() - began < 10
  assert 'fetching %s failed (no answer within 1 s)' % url in message


def test_a_trickle_is_a_stall(tmp_path, monkeypatch):
  monkeypatch.setattr(download, 'STALL_SECS', 1)
  with server(_trickle) as url:
    message = _fail(str(tmp_path), url)
  assert 'failed (stalled: ' in message and ' bytes in the last 1 s)' in \
      message


def test_a_content_length_beyond_an_archive_is_refused(tmp_path):
  with server(_huge) as url:
    message = _fail(str(tmp_path), url)
  assert 'failed (it is %d bytes, more than the %d an archive of CIFAR-10 ' \
      'is)' % (10 * download.ARCHIVE_BYTES, download.MAX_ARCHIVE_BYTES) in \
      message


def test_an_endless_source_is_cut_at_the_bound(tmp_path, monkeypatch):
  monkeypatch.setattr(download, 'MAX_ARCHIVE_BYTES', 5 << 20)
  message = _fail(str(tmp_path), 'file:///dev/zero')
  assert 'failed (more than %d bytes, more than an archive of CIFAR-10 ' \
      'is)' % (5 << 20) in message


@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_a_download_leaves_no_partial_file(tmp_path, sig):
  data_dir = str(tmp_path / 'data')
  with server(_trickle) as url:
    proc = subprocess.Popen(
        [sys.executable, 'cifar10_train.py'] + train_args(
            data_dir, str(tmp_path / 't')) + ['--data_source', url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    partial = os.path.join(data_dir, CIFAR10.archive + '.partial')
    while not os.path.exists(partial) and time.time() < deadline:
      time.sleep(0.2)
    assert os.path.exists(partial)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
  assert proc.returncode == 128 + sig, err
  assert err.decode().strip().splitlines()[-1] == (
      'cifar10_train.py: stopped by %s; nothing was left half-written'
      % sig.name)
  assert not os.path.exists(data_dir)  # (made for the download: removed)
