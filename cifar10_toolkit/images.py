"""Image files read for a model: checked, decoded, brought to its size.

  read(path, shape, resize, squash)   uint8 [height, width, channels]
  pixel_size(data)                    (width, height) from the file's header
  MAX_PIXELS                          the largest image decoded

What cifar10_classify.py classifies and what an image-folder data set
(converted.py) is made of are read here, in one way: JPEG, PNG, BMP or GIF
(its first frame), as RGB (grey repeated, alpha dropped); an image of
another size is cut to the square around its centre, then scaled to the
model's size with antialiasing (the convention of image classifiers), or
with squash scaled whole, whatever its aspect ratio.
"""

import os
import stat
import struct

import tensorflow as tf

from cifar10_toolkit import errors
from cifar10_toolkit import folders

MAX_PIXELS = folders.MAX_MEGAPIXELS << 20  # (see there)
MAX_FILE_BYTES = 1 << 28  # 256 MB


class ImageError(errors.DataSetError):
  """An image file that cannot be used (one line naming it)."""


def pixel_size(data):
  """(width, height) that a PNG, GIF, BMP or JPEG file's header declares, or
  None for anything else (then left to the decoder to refuse)."""
  if data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) >= 24:
    return struct.unpack('>II', data[16:24])
  if data[:4] in (b'GIF8',) and len(data) >= 10:
    return struct.unpack('<HH', data[6:10])
  if data[:2] == b'BM' and len(data) >= 26:
    width, height = struct.unpack('<ii', data[18:26])
    return abs(width), abs(height)
  if data[:2] == b'\xff\xd8':
    try:
      height, width, _ = tf.io.extract_jpeg_shape(data).numpy()
    except tf.errors.OpError:
      return None
    return int(width), int(height)
  return None


def read(path, shape, resize=True, squash=False, title=None,
         max_pixels=MAX_PIXELS, bound_flag=''):
  """An image file as uint8 [height, width, channels] of `shape`.

  Args:
    path: the file; a regular file (a FIFO or device is refused unread).
    shape: (height, width, channels) the model takes.
    resize: an image of another size is cropped to its centre square and
      scaled (with squash: scaled whole); otherwise refused.
    title: the data set's name, for the message on a size refused.
    max_pixels: more pixels than this are refused, from the header;
      bound_flag, the flag that sets it, is named then.

  Raises:
    ImageError: missing, not a regular file, empty, too large, not a PNG,
      JPEG, BMP or GIF image, or of another size without resize; the line
      names the file.
  """
  size = tuple(shape[:2])
  try:
    info = os.stat(path)
  except OSError as e:
    raise ImageError('%s: %s' % (path, 'no such file' if isinstance(
        e, FileNotFoundError) else e.strerror))
  if stat.S_ISDIR(info.st_mode):
    raise ImageError('%s: a folder, not an image file' % path)
  if not stat.S_ISREG(info.st_mode):
    raise ImageError('%s: not a regular file (a FIFO, socket or device)' %
                     path)
  if info.st_size == 0:
    raise ImageError('%s: an empty (0-byte) file' % path)
  if info.st_size > MAX_FILE_BYTES:
    raise ImageError('%s: %d bytes, more than the %d an image may have' % (
        path, info.st_size, MAX_FILE_BYTES))
  with open(path, 'rb') as f:
    data = f.read(MAX_FILE_BYTES + 1)
  declared = pixel_size(data)
  if declared and declared[0] * declared[1] > max_pixels:
    raise ImageError('%s: %dx%d pixels, more than the %g megapixels an image '
                     'may have%s' % (path, declared[0], declared[1],
                                   max_pixels / 2**20, bound_flag))
  try:
    image = tf.io.decode_image(data, channels=shape[2],
                               expand_animations=False)
  except tf.errors.InvalidArgumentError:
    raise ImageError('%s: not a PNG, JPEG, BMP or GIF image' % path)
  except tf.errors.OpError as e:
    raise ImageError('%s: cannot be read (%s)' % (
        path, e.message.strip().splitlines()[0]))
  height, width = int(image.shape[0]), int(image.shape[1])
  if height * width > max_pixels:  # (a header it could not read)
    raise ImageError('%s: %dx%d pixels, more than the %g megapixels an image '
                     'may have%s' % (path, width, height, max_pixels / 2**20,
                                  bound_flag))
  if (height, width) == size:
    return image.numpy()
  if not resize:
    raise ImageError(
        '%s: %dx%d pixels, the model takes %dx%d images%s; pass --resize to '
        'scale it' % (path, width, height, size[1], size[0],
                      ' (%s\'s)' % title if title else ''))
  if not squash:
    side = min(height, width)
    image = tf.image.crop_to_bounding_box(
        image, (height - side) // 2, (width - side) // 2, side, side)
  return tf.cast(tf.round(tf.clip_by_value(tf.image.resize(
      image, size, antialias=True), 0, 255)), tf.uint8).numpy()
