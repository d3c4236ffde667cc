"""The plumbing beneath the tutorial's scripts and model files.

The repository's root holds what a user runs and what the tutorial taught
(the scripts; convnet.py, two_layer_fc.py, cifar10_input.py,
data_helpers.py); everything else is here, one concern a module. The
package imports nothing from the root: a script passes its model and input
libraries (models.get: convnet by default, cifar10_input; two_layer_fc,
data_helpers) and its data set (data_sets.get) down as arguments. Imports go down this list only
(tests/test_layout.py checks it):

  1. errors        the toolkit's error types
  2. startup       a script's first seconds: Ctrl-C, TensorFlow's start-up
                   lines kept off stderr (no TensorFlow)
     paths         paths TensorFlow can take, checked (no TensorFlow)
  3. cli           the flags on absl.flags: conventions, shared definitions,
                   one-line errors (no TensorFlow)
  4. download      a bounded download (no TensorFlow)
     folders       the folders a run makes; none left empty on failure;
                   the image files a folder holds
     plugins       a user's Python file or module named by a flag
  5. dataset       a data set described (DataSet); fetching, checking,
                   extracting
     interface     the model interface (--model): what a model module
                   declares, and its checks
  6. hardware      what 'auto' picks on this machine; thread pools
     console       the console's lines
     images        image files read for a model (classify, image folders)
  7. run_control   run_main, exit codes, signals, the stop-and-save votes
     run_record    the data set and schedule a checkpoint records
     converted     data sets made into records: image folders, MATLAB
                   files (SVHN)
     slurm         a Slurm job step's tasks as a cluster
     greetings     the rendezvous's signed greetings, served
  8. checkpoint_index  a checkpoint folder's index file
     rendezvous    a cluster's bounded wait before TensorFlow's
  9. checkpoints   the checkpoint convention; resume, repair
     summaries     scalars, histograms, graph, HParams, profile
     lrn           the fast LRN kernels
     cluster       devices and workers for several replicas
     grad_ops      a step's gradients: across replicas, loss scaling
 10. run_folder    a run's folder: checks, the lock, --fresh
     selection     --checkpoint, and the best checkpoint kept
     config        a training run's configuration, resolved once
 11. device_input  the training set on the device, batches in the graph
     fc_runs       the fully connected model's runs
     serving       the exported classifier
     evaluation    evaluating checkpoints
 12. train_loop    the convnet's training loop
  -- the root's library: data_sets and models (the data sets and models
     that ship), then cifar10_input, data_helpers, two_layer_fc, convnet,
     then resnet20 (which reuses parts of convnet)
  -- the scripts at the root, tools/ and benchmarks/ (no script imports
     another; run tools and benchmarks from the root: python3 -m tools.X)
"""

# The order above, as data: a module imports only from earlier layers.
ROOT_LIBRARY = ('data_sets', 'models', 'cifar10_input', 'data_helpers',
                'two_layer_fc', 'convnet', 'resnet20')
LAYERS = (
    ('errors',), ('startup', 'paths'), ('cli',),
    ('download', 'folders', 'plugins'), ('dataset', 'interface'),
    ('hardware', 'console', 'images'),
    ('run_control', 'run_record', 'converted', 'slurm', 'greetings'),
    ('checkpoint_index', 'rendezvous'),
    ('checkpoints', 'summaries', 'lrn', 'cluster', 'grad_ops'),
    ('run_folder', 'selection', 'config'),
    ('device_input', 'fc_runs', 'serving', 'evaluation'), ('train_loop',),
    ROOT_LIBRARY[:2], ROOT_LIBRARY[2:6], ROOT_LIBRARY[6:])
