"""The data sets that ship, each described once: --dataset NAME picks one.

  get(name)      the DataSet called name; a folder of images
                 (DIR/train/<class>/*, converted.image_folder); or the
                 DATASET of a Python file (my_set.py) or module (my_set)
                 of the user's; anything else is errors.UsageError listing
                 the choices
  NAMES          the names that ship, the default (the tutorial's CIFAR-10)
                 first

Each is a cifar10_toolkit.dataset.DataSet: the image shape, the classes and
their names, the sizes of the official training and test sets, the files
and their record layout, the official archive's URL and md5, and the
environment variable that may name a local copy. Everything else (the
input, the model's output layer, the schedule's epochs, evaluation, export,
classify) takes its sizes from the DataSet a run is given. To add a data
set stored in the same record layout, describe it here (docs/extending.md).
"""

import os

from cifar10_toolkit import converted
from cifar10_toolkit import dataset
from cifar10_toolkit import errors
from cifar10_toolkit import plugins

CIFAR10 = dataset.DataSet(
    name='cifar10', title='CIFAR-10', image_shape=(32, 32, 3),
    class_names=('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                 'frog', 'horse', 'ship', 'truck'),
    train_size=50000, test_size=10000, folder='cifar-10-batches-bin',
    train_files=tuple('data_batch_%d.bin' % i for i in range(1, 6)),
    test_files=('test_batch.bin',), label_bytes=1, label_byte=0,
    names_file='batches.meta.txt', archive='cifar-10-binary.tar.gz',
    url='https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz',
    md5='c32a1d4ab5d03f1284b67883e8d87530', source_env='CIFAR10_DATA_SOURCE')

# CIFAR-100: a coarse-label byte, then a fine-label byte, then the image.
CIFAR100 = dataset.DataSet(
    name='cifar100', title='CIFAR-100', image_shape=(32, 32, 3),
    class_names=(
        'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee',
        'beetle', 'bicycle', 'bottle', 'bowl', 'boy', 'bridge', 'bus',
        'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle',
        'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch',
        'crab', 'crocodile', 'cup', 'dinosaur', 'dolphin', 'elephant',
        'flatfish', 'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo',
        'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard',
        'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain', 'mouse',
        'mushroom', 'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree',
        'pear', 'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy',
        'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket',
        'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper',
        'snail', 'snake', 'spider', 'squirrel', 'streetcar', 'sunflower',
        'sweet_pepper', 'table', 'tank', 'telephone', 'television', 'tiger',
        'tractor', 'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale',
        'willow_tree', 'wolf', 'woman', 'worm'),
    train_size=50000, test_size=10000, folder='cifar-100-binary',
    train_files=('train.bin',), test_files=('test.bin',), label_bytes=2,
    label_byte=1, names_file='fine_label_names.txt',
    archive='cifar-100-binary.tar.gz',
    url='https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz',
    md5='03b5dce01913d631647c71ecec9e9cb8', source_env='CIFAR100_DATA_SOURCE')

# The same files, classified into the 20 superclasses (the first byte).
CIFAR100_COARSE = dataset.DataSet(**dict(
    vars(CIFAR100), name='cifar100_coarse', title='CIFAR-100 (coarse)',
    label_byte=0, names_file='coarse_label_names.txt',
    class_names=(
        'aquatic_mammals', 'fish', 'flowers', 'food_containers',
        'fruit_and_vegetables', 'household_electrical_devices',
        'household_furniture', 'insects', 'large_carnivores',
        'large_man-made_outdoor_things', 'large_natural_outdoor_scenes',
        'large_omnivores_and_herbivores', 'medium_mammals',
        'non-insect_invertebrates', 'people', 'reptiles', 'small_mammals',
        'trees', 'vehicles_1', 'vehicles_2')))

# SVHN's cropped digits (the tutorial's exercise), from the official MATLAB
# files; label 10 there is the digit 0. The same training set and the 531,131
# "extra" digits with svhn_extra.
_SVHN_URL = 'http://ufldl.stanford.edu/housenumbers/'
_SVHN_FILES = (('train.bin', 'train_32x32.mat',
                'e26dedcc434d2e4c54c9b2d4a06d8373'),
               ('test.bin', 'test_32x32.mat',
                'eb5a983be6a315427106f1b164d9cef3'))
_SVHN_EXTRA = ('extra.bin', 'extra_32x32.mat',
               'a93ce644f1a588dc4d68dda5feec44a7')
SVHN = dataset.DataSet(
    name='svhn', title='SVHN', image_shape=(32, 32, 3),
    class_names=tuple(str(d) for d in range(10)), train_size=73257,
    test_size=26032, folder='svhn-bin', train_files=('train.bin',),
    test_files=('test.bin',), label_bytes=1, label_byte=0,
    url=_SVHN_URL, source_env='SVHN_DATA_SOURCE',
    prepare=converted.mat_files(_SVHN_FILES),
    source_files=tuple(f[1] for f in _SVHN_FILES))
SVHN_EXTRA = dataset.DataSet(**dict(
    vars(SVHN), name='svhn_extra', title='SVHN (with extra)',
    train_size=73257 + 531131, folder='svhn-extra-bin',
    train_files=('train.bin', 'extra.bin'),
    records_per_file=(('train.bin', 73257), ('extra.bin', 531131)),
    prepare=converted.mat_files(_SVHN_FILES + (_SVHN_EXTRA,)),
    source_files=SVHN.source_files + (_SVHN_EXTRA[1],)))

_ALL = (CIFAR10, CIFAR100, CIFAR100_COARSE, SVHN, SVHN_EXTRA)
NAMES = tuple(d.name for d in _ALL)


def get(name):
  """The DataSet that --dataset `name` picks: one that ships, or the
  DATASET (a dataset.DataSet) that a Python file (a path ending in .py) or
  an importable module of that name defines.

  Raises:
    errors.UsageError: none of these (the line says why and lists the
      choices).
  """
  for d in _ALL:
    if d.name == name:
      return d
  if os.path.isdir(name):
    return converted.image_folder(name)
  module = plugins.load(name, (
      'choose one of %s, a folder of images (DIR/train/<class>/...), or a '
      'Python file that defines DATASET (a cifar10_toolkit.dataset.DataSet)'
      % ', '.join(NAMES)))
  found = getattr(module, 'DATASET', None)
  if not isinstance(found, dataset.DataSet):
    raise errors.UsageError('%s defines no DATASET (a cifar10_toolkit.'
                            'dataset.DataSet)' % name)
  return found
