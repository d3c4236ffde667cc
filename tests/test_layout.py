"""The repository's shape: the tutorial's files at the root, the plumbing in
one package whose imports go one way, no script importing another, no
module reaching into another's private names, none over 400 lines."""

import ast
import glob
import importlib
import os

import pytest

import cifar10_toolkit
from cifar10_toolkit import interface
import convnet
import two_layer_fc
from conftest import ROOT

SCRIPTS = ('cifar10_train', 'cifar10_multi_gpu_train', 'cifar10_eval',
           'cifar10_export', 'cifar10_classify', 'run_fc_model',
           'restore_model')
MAX_LINES = 400


def _modules():
  """name -> path of every module of the project (not the tests)."""
  out = {}
  for path in glob.glob(os.path.join(ROOT, '*.py')):
    out[os.path.basename(path)[:-3]] = path
  for folder in ('cifar10_toolkit', 'tools', 'benchmarks'):
    for path in glob.glob(os.path.join(ROOT, folder, '*.py')):
      name = os.path.basename(path)[:-3]
      if name != '__init__':
        out[folder + '.' + name if folder != 'benchmarks' else
            'benchmarks.' + name] = path
  return out


def _imports(path):
  """(module names imported, {local name: module} of those) of a file."""
  tree = ast.parse(open(path).read())
  found, bound = [], {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        found.append(a.name)
        bound[(a.asname or a.name).split('.')[0]] = a.name
    elif isinstance(node, ast.ImportFrom) and node.module:
      for a in node.names:
        full = node.module + '.' + a.name
        package = node.module in ('cifar10_toolkit', 'tools', 'benchmarks')
        found.append(full if package else node.module)
        bound[a.asname or a.name] = (full if package else
                                     node.module + ':' + a.name)
  return found, bound, tree


def _project(name, modules):
  return name in modules or name in ('cifar10_toolkit',)


def test_the_root_holds_the_tutorials_files_and_model_modules_only():
  root = {os.path.basename(p)[:-3]
          for p in glob.glob(os.path.join(ROOT, '*.py'))}
  assert set(SCRIPTS + cifar10_toolkit.ROOT_LIBRARY) <= root
  for name in root - set(SCRIPTS + cifar10_toolkit.ROOT_LIBRARY):
    # (a forker's model beside the scripts: --model NAME)
    assert not interface.missing(importlib.import_module(name)), name


def test_each_model_module_has_the_tutorials_four_functions():
  for module in (convnet, two_layer_fc):
    for fn in ('inference', 'loss', 'training', 'evaluation'):
      assert callable(getattr(module, fn)), (module.__name__, fn)


def test_no_module_is_over_400_lines():
  long = {name: n for name, path in _modules().items()
          if (n := len(open(path).read().splitlines())) > MAX_LINES}
  assert not long, long


def test_imports_go_down_the_layers_and_no_script_imports_another():
  layer = {}
  for i, names in enumerate(cifar10_toolkit.LAYERS):
    for n in names:
      layer[n if n in cifar10_toolkit.ROOT_LIBRARY else
            'cifar10_toolkit.' + n] = i
  package = {'cifar10_toolkit.' + os.path.basename(p)[:-3] for p in glob.glob(
      os.path.join(ROOT, 'cifar10_toolkit', '*.py'))} - {
          'cifar10_toolkit.__init__'}
  assert package | set(cifar10_toolkit.ROOT_LIBRARY) == set(layer), (
      'every package and root library module has a layer')
  modules = _modules()
  for name, path in modules.items():
    for imported in _imports(path)[0]:
      if imported in SCRIPTS:
        pytest.fail('%s imports the script %s' % (name, imported))
      if name in layer and imported in layer:
        assert layer[imported] < layer[name], (
            '%s (layer %d) imports %s (layer %d)' % (
                name, layer[name], imported, layer[imported]))
      if name in layer:  # the library imports no tool or benchmark
        assert not imported.startswith(('tools', 'benchmarks')), (name,
                                                                  imported)
      if name.startswith('cifar10_toolkit.'):  # nor the package the root
        assert imported.split('.')[0] not in (
            cifar10_toolkit.ROOT_LIBRARY + SCRIPTS), (
                '%s imports the root\'s %s: pass it down instead' % (
                    name, imported))


def test_tools_and_benchmarks_run_from_the_root_without_editing_sys_path():
  for name, path in _modules().items():
    if name.startswith(('tools.', 'benchmarks.')):
      tree = ast.parse(open(path).read())
      for node in ast.walk(tree):
        assert not (isinstance(node, ast.Attribute) and node.attr == 'path'
                    and isinstance(node.value, ast.Name) and
                    node.value.id == 'sys'), (
                        '%s touches sys.path (line %d)' % (name, node.lineno))


def test_no_module_uses_another_modules_private_names():
  modules = _modules()
  for name, path in modules.items():
    _, bound, tree = _imports(path)
    ours = {local: target for local, target in bound.items()
            if target.split(':')[0] in modules or
            target.startswith(('cifar10_toolkit', 'tools'))}
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in ours and node.attr.startswith('_')
          and not node.attr.startswith('__')):
        pytest.fail('%s uses %s.%s' % (name, node.value.id, node.attr))
      if isinstance(node, ast.ImportFrom) and node.module and any(
          a.name.startswith('_') for a in node.names) and (
              node.module in modules or node.module.startswith(
                  'cifar10_toolkit')):
        pytest.fail('%s imports a private name of %s' % (name, node.module))


def test_the_package_docstring_lists_every_module():
  for names in cifar10_toolkit.LAYERS:
    for n in names:
      assert n in cifar10_toolkit.__doc__, n


def test_no_import_cycles():
  modules = _modules()
  short = {n.split('.')[-1]: n for n in modules if n.startswith('benchmarks.')}
  graph = {}
  for name, path in modules.items():
    graph[name] = {short.get(i, i) for i in _imports(path)[0]
                   if short.get(i, i) in modules and short.get(i, i) != name}
  state = {}

  def visit(n, trail):
    if state.get(n) == 'done':
      return
    assert state.get(n) != 'open', 'import cycle: ' + ' -> '.join(trail + [n])
    state[n] = 'open'
    for m in sorted(graph[n]):
      visit(m, trail + [n])
    state[n] = 'done'
  for n in sorted(graph):
    visit(n, [])
