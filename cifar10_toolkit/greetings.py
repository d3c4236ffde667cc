"""The greetings of the rendezvous (rendezvous.py): signed, checked, and
answered from a thread, many callers at once.

  cluster_key(cluster)             what greetings are signed with
  Task(me, others, terms, key)     this task's side: its terms, what it heard
  Answering(listener, task)        its address, answered from a thread
  call(address, name, task)        one exchange with another task
  allowed_addresses(cluster)       the addresses whose callers are answered

The exchange, whoever calls (H: HMAC-SHA256 keyed by cluster_key; G: the
JSON text {"task", "to", "terms"}):

  answering task -> caller   RENDEZVOUS, {"nonce": ns}
  caller -> answering task   {"greeting": G, "nonce": nc, "mac": H(ns, G)}
  answering task -> caller   {"greeting": G', "mac": H(nc, G')}
  caller -> answering task   {"ack": H(ns, "ack" G')}

A stranger's bytes never raise in the thread: a greeting that does not
verify, is malformed or too deep, or comes too slowly is dropped (noted
once); each connection is bounded in bytes and seconds.
"""

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import selectors
import socket
import threading
import time

SECRET_ENV = 'CIFAR10_CLUSTER_SECRET'
RENDEZVOUS = b'cifar10-toolkit: waiting for the cluster\n'
HTTP2_PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
MAX_LINE_BYTES = 1 << 16  # a greeting, at most
EXCHANGE_SECS = 2  # one connection's whole exchange, at most
MAX_CONNECTIONS = 64  # served at once; past it the oldest is dropped
MAX_SEED = 2 ** 31 - 1  # --seed's own range


def split(address):
  host, _, port = address.rpartition(':')
  return host.strip('[]'), int(port)


def cluster_key(cluster):
  """The key of the greetings' HMAC: $CIFAR10_CLUSTER_SECRET (if set) and
  the cluster's addresses, so that tasks of another cluster never agree."""
  return hashlib.sha256(b'\0'.join([
      b'cifar10-toolkit rendezvous',
      os.environ.get(SECRET_ENV, '').encode('utf-8', 'surrogateescape'),
      json.dumps(cluster, sort_keys=True).encode()])).digest()


def sign(key, nonce, text):
  return hmac.new(key, ('%s\n%s' % (nonce, text)).encode(),
                  hashlib.sha256).hexdigest()


def _line(obj):
  return (json.dumps(obj) + '\n').encode()


def _parse(line):
  """A JSON object from a peer's line, or None for anything else (too deep,
  not JSON, not an object): a stranger's bytes never raise."""
  try:
    obj = json.loads(line)
  except (ValueError, RecursionError, MemoryError):
    return None
  return obj if isinstance(obj, dict) else None


def _terms_ok(terms):
  seed = terms.get('seed') if isinstance(terms, dict) else None
  return isinstance(terms, dict) and (seed is None or (
      type(seed) is int and 0 <= seed <= MAX_SEED))


def _greeting(key, nonce, obj, sender, to):
  """The terms of a signed greeting from sender to `to`, or None."""
  text, mac = obj.get('greeting'), obj.get('mac')
  if not isinstance(text, str) or not isinstance(mac, str) or \
      not hmac.compare_digest(sign(key, nonce, text), mac):
    return None
  g = _parse(text)
  if not g or g.get('to') != to or not _terms_ok(g.get('terms')) or (
      g.get('task') not in sender if isinstance(sender, set) else
      g.get('task') != sender):
    return None
  return g['task'], g['terms']


class Task:
  """This task's side: its terms and key, what it has heard, and the
  notes (each said once) about strangers."""

  def __init__(self, me, others, terms, key):
    self.me, self.others, self.terms, self.key = me, others, terms, key
    self.heard, self.heard_us = {}, set()
    self.allowed = set()  # peer addresses (IP text) believed
    self.noted, self.lock = set(), threading.Lock()

  def signed(self, to, nonce):
    text = json.dumps({'task': self.me, 'to': to, 'terms': self.terms})
    return text, sign(self.key, nonce, text)

  def note(self, kind, line):
    with self.lock:
      if kind in self.noted:
        return
      self.noted.add(kind)
    print('Note: ' + line, flush=True)

  def record(self, name, terms=None, heard_us=False):
    with self.lock:
      if terms is not None:
        self.heard[name] = terms
      if heard_us:
        self.heard_us.add(name)


def allowed_addresses(cluster):
  """The IP addresses of the cluster's hosts (those that resolve now); the
  loopback ones too when a host is this machine's."""
  found = set()
  for address in (a for v in cluster.values() for a in v):
    try:
      infos = socket.getaddrinfo(split(address)[0], None,
                                 type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
      continue
    found.update(_ip(i[4][0]) for i in infos)
  if any(ipaddress.ip_address(a).is_loopback for a in found):
    found.update({'127.0.0.1', '::1'})
  return found


def _ip(text):
  """IP text, an IPv4-mapped IPv6 address as IPv4."""
  a = ipaddress.ip_address(text.split('%')[0])
  return str(a.ipv4_mapped or a) if a.version == 6 else str(a)


class _Connection:
  def __init__(self, sock, nonce):
    self.sock, self.nonce, self.data = sock, nonce, b''
    self.deadline = time.monotonic() + EXCHANGE_SECS
    self.caller = self.reply = None  # (after its greeting verified)


class Answering:
  """This task's address, answered from a thread while the cluster forms:
  many callers at once, each bounded in bytes and time."""

  def __init__(self, listener, task):
    self._listener, self._task = listener, task
    self._selector = selectors.DefaultSelector()
    self._selector.register(listener, selectors.EVENT_READ)
    self._open = {}  # socket: _Connection
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._serve, daemon=True)
    self._thread.start()

  def _serve(self):
    while not self._done.is_set():
      try:
        for key, _ in self._selector.select(timeout=0.1):
          if key.fileobj is self._listener:
            self._accept()
          else:
            self._read(self._open.get(key.fileobj))
        now = time.monotonic()
        for c in [c for c in self._open.values() if c.deadline < now]:
          self._drop(c, 'slow' if c.caller is None else None)
      except Exception as e:  # pylint: disable=broad-except
        # (a bug, not a stranger: said once, the port keeps answering)
        self._task.note('bug', 'the rendezvous thread hit %r' % e)

  def _accept(self):
    try:
      sock, peer = self._listener.accept()
    except OSError:
      return
    ip = _ip(peer[0])
    if ip not in self._task.allowed:
      sock.close()
      self._task.note('outside', 'the rendezvous ignores connections from '
                      '%s: not an address of the cluster' % ip)
      return
    if len(self._open) >= MAX_CONNECTIONS:
      self._drop(min(self._open.values(), key=lambda c: c.deadline), None)
    c = _Connection(sock, secrets.token_hex(16))
    try:
      sock.setblocking(False)
      sock.send(RENDEZVOUS + _line({'nonce': c.nonce}))
    except OSError:
      sock.close()
      return
    self._open[sock] = c
    self._selector.register(sock, selectors.EVENT_READ)

  def _read(self, c):
    if c is None:
      return
    try:
      chunk = c.sock.recv(4096)
    except BlockingIOError:
      return
    except OSError:
      chunk = b''
    c.data += chunk
    if b'\n' not in c.data:
      if not chunk or len(c.data) > MAX_LINE_BYTES:
        self._drop(c, 'bad' if c.data and c.caller is None else None)
      return
    line, _, c.data = c.data.partition(b'\n')
    obj = _parse(line)
    t = self._task
    if c.caller is None:  # its greeting
      got = obj and isinstance(obj.get('nonce'), str) and len(
          obj['nonce']) <= 64 and _greeting(t.key, c.nonce, obj,
                                            set(t.others), t.me)
      if not got:
        return self._drop(c, 'bad')
      c.caller = got[0]
      t.record(got[0], got[1])
      text, mac = t.signed(c.caller, obj['nonce'])
      c.reply = text
      try:
        c.sock.send(_line({'greeting': text, 'mac': mac}))
      except OSError:
        return self._drop(c, None)
    else:  # its ack: it heard our reply
      if obj and isinstance(obj.get('ack'), str) and hmac.compare_digest(
          obj['ack'], sign(t.key, c.nonce, 'ack' + c.reply)):
        t.record(c.caller, heard_us=True)
      self._drop(c, None)

  def _drop(self, c, why):
    self._open.pop(c.sock, None)
    self._selector.unregister(c.sock)
    c.sock.close()
    if why == 'bad':
      self._task.note(why, 'the rendezvous ignored a greeting that is '
                      'malformed or not signed for this cluster (every '
                      'task needs the same TF_CONFIG cluster and %s)'
                      % SECRET_ENV)
    elif why:
      self._task.note(why, 'the rendezvous cut off a caller that did not '
                      'greet within %d s' % EXCHANGE_SECS)

  def close(self):
    self._done.set()
    self._thread.join(timeout=5)
    for c in list(self._open.values()):
      self._drop(c, None)
    self._selector.close()


GRPC = 'gRPC'  # a task already in TensorFlow's set-up


def call(address, name, task):
  """One exchange with the task `name` at address, bounded by EXCHANGE_SECS.

  Returns:
    Its terms (it has heard ours); GRPC when a gRPC server answers (the
    task has left its rendezvous for TensorFlow's); None otherwise.
  """
  end = time.monotonic() + EXCHANGE_SECS

  def lines(s, data, count):
    """data and what follows, up to count lines (bounded)."""
    while data.count(b'\n') < count and len(data) <= 2 * MAX_LINE_BYTES:
      s.settimeout(max(0.01, end - time.monotonic()))
      chunk = s.recv(4096)
      if not chunk:
        break
      data += chunk
    return data
  try:
    with socket.create_connection(split(address),
                                  timeout=EXCHANGE_SECS) as s:
      try:
        s.settimeout(1)
        head = s.recv(64)
      except socket.timeout:  # a server that waits for the client to speak
        s.sendall(HTTP2_PREFACE)
        s.settimeout(max(0.01, end - time.monotonic()))
        head = s.recv(64)
      if not head or not head.startswith(RENDEZVOUS[:len(head)]):
        return GRPC if len(head) >= 4 and head[3] == 0x04 else None
      data = lines(s, head, 2).split(b'\n', 2)
      hello = _parse(data[1]) if len(data) == 3 and \
          data[0] + b'\n' == RENDEZVOUS else None
      if not hello or not isinstance(hello.get('nonce'), str):
        return None
      ours = secrets.token_hex(16)
      text, mac = task.signed(name, hello['nonce'])
      s.sendall(_line({'greeting': text, 'nonce': ours, 'mac': mac}))
      reply = _parse(lines(s, data[2], 1).partition(b'\n')[0])
      got = reply and _greeting(task.key, ours, reply, name, task.me)
      if not got:
        return None
      s.sendall(_line({'ack': sign(task.key, hello['nonce'],
                                    'ack' + reply['greeting'])}))
      return got[1]
  except (OSError, ValueError):
    return None
