"""Walking arrays or a batched tf.data.Dataset in fixed-shape batches; argument checks."""

import numbers

import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm.attacks import _common


def _check_batch_size(batch_size):
  return _checks.positive_int(batch_size, "batch_size")


def _labels(y, name="y"):
  """Integer labels ``[batch]`` from integer labels or one-hot ``[batch, d]``."""
  y = tf.convert_to_tensor(y)
  if y.shape.rank == 2 and y.shape[-1] == 1:
    y = tf.reshape(y, [-1])
  elif y.shape.rank == 2:
    y = tf.argmax(y, axis=-1)
  if y.shape.rank != 1:
    raise ValueError(
        f"`{name}` must be integer labels [batch] or one-hot labels [batch, d]. "
        f"Received: {name} with shape={y.shape}")
  if y.dtype.is_floating:
    y = _checks.class_labels(y, name=name)  # 3.7 is no class: not rounded.
  return tf.cast(y, tf.int32)


def _check_batch(xb, yb, clip, fn):
  """Eager checks of one batch before a compiled kernel (where XLA drops asserts).

  ``xb`` inside ``clip`` and the labels ``yb`` in ``[0, d)``, ``d`` the width
  of ``fn``'s logits (one example's forward pass).
  """
  _common._check_in_box(xb, _common._clip_range(clip))  # pylint: disable=protected-access
  if yb is not None and fn is not None:
    _checks.class_labels(yb, fn(xb[:1]).shape[-1])


def _array_labels(y, n, need_y, x_text):
  """Checks the labels of ``n`` array examples (None allowed unless ``need_y``)."""
  if y is None:
    if need_y:
      raise ValueError(
          "`y` is required (integer or one-hot labels) when `x` is an array. Received: y=None")
    return None
  y = _labels(y)
  if y.shape[0] != n:
    raise ValueError(
        f"`x` and `y` must hold the same number of examples. Received: "
        f"x with {x_text}, y with shape={y.shape}")
  return y


def _pad(t, size):
  """Pads a batch to ``size`` rows with copies of its last row."""
  if t is None or t.shape[0] >= size:
    return t
  return tf.concat([t, tf.repeat(t[-1:], size - t.shape[0], axis=0)], axis=0)


def _batches(x, y, batch_size, need_y):
  """Yields ``(x_batch, y_batch or None, count)`` from arrays or a batched Dataset.

  Every batch has the same number of rows (a short last batch is padded with
  copies of its last example; only its first ``count`` rows are real), so the
  compiled kernels see one static shape: one trace, one XLA compilation.
  """
  if isinstance(x, tf.data.Dataset):
    if y is not None:
      raise ValueError(
          "`y` must be None when `x` is a tf.data.Dataset: the dataset yields "
          f"(x, y) batches. Received: y of type {type(y).__name__}")
    size = None
    for element in x:
      if isinstance(element, (tuple, list)):
        xb = element[0]
        yb = element[1] if len(element) > 1 else None
      else:
        xb, yb = element, None
      xb = _checks.float_input(xb, "x")
      if need_y and yb is None:
        raise ValueError(
            "Labels are needed: the tf.data.Dataset passed as `x` must yield "
            "(x, y) batches. Received: a dataset yielding x only")
      yb = None if yb is None else _labels(yb)
      count = int(xb.shape[0])
      size = size or count
      if count:
        yield _pad(xb, size), _pad(yb, size), count
    if size is None:
      raise ValueError("`x` must contain at least one example. Received: an empty dataset")
    return
  x = _checks.float_input(x, "x")
  n = x.shape[0]
  if n == 0:
    raise ValueError(f"`x` must contain at least one example. Received: x with shape={x.shape}")
  y = _array_labels(y, n, need_y, f"shape={x.shape}")
  size = min(batch_size, n)
  for start in range(0, n, size):
    xb = x[start:start + size]
    yb = None if y is None else y[start:start + size]
    yield _pad(xb, size), _pad(yb, size), int(xb.shape[0])


def _epsilons(epsilons, allow_zero=True, name="epsilons"):
  if isinstance(epsilons, numbers.Real) or (tf.is_tensor(epsilons) and epsilons.shape.rank == 0):
    epsilons = [epsilons]
  try:
    values = list(np.asarray(epsilons, dtype=object).reshape(-1))
  except Exception as e:  # pylint: disable=broad-except
    raise TypeError(
        f"`{name}` must be a number or a sequence of numbers. Received: {name}={epsilons!r}") from e
  if not values:
    raise ValueError(f"`{name}` must not be empty. Received: {name}={epsilons!r}")
  check = _checks.nonnegative_float if allow_zero else _checks.positive_float
  return [float(check(v, name)) for v in values]


def _single_epsilon(epsilon):
  """One positive radius, as a float."""
  values = _epsilons(epsilon, allow_zero=False, name="epsilon")
  if len(values) != 1:
    raise ValueError(f"`epsilon` must be a single positive number. Received: epsilon={values}")
  return values[0]


def _kwargs_if_set(**kwargs):
  return {k: v for k, v in kwargs.items() if v is not None}


def _loss_name(loss):
  if isinstance(loss, str):
    return loss
  return getattr(loss, "__name__", type(loss).__name__)


def _floats(a):
  return [float(v) for v in np.asarray(a).reshape(-1)]


# ---------------------------------------------------------------------------
# Structured x (dict / list of inputs): packed z plus the fixed inputs.
# ---------------------------------------------------------------------------


def _is_structured_data(x):
  """True for a dict/list ``x`` or a dataset whose elements' ``x`` is one."""
  from keras_opnorm import logits_view  # pylint: disable=g-import-not-at-top
  if isinstance(x, tf.data.Dataset):
    spec = x.element_spec
    if isinstance(spec, (tuple, list)) and spec and not isinstance(spec, dict):
      spec = spec[0]
    return isinstance(spec, (dict, list, tuple))
  return logits_view.is_structured(x)


def _pad_fixed(fixed, size):
  return {k: _pad(tf.convert_to_tensor(v), size) for k, v in fixed.items()}


def _slice_fixed(fixed, index):
  """The fixed inputs at the rows ``index`` (a slice or an index array)."""
  return {k: v[index] for k, v in fixed.items()}


class _Structured:
  """A structured ``x`` walked in fixed-shape batches of ``(z, y, count, fixed)``.

  ``x`` is a dict or list/tuple of ``[n, ...]`` arrays, or a batched
  ``tf.data.Dataset`` whose elements are ``(x, y)`` (or ``x``) with a
  structured ``x``. Each batch is packed (`keras_opnorm.logits_view.Packing`)
  into ``z [batch, n_in]`` (the perturbed inputs, concatenated) and the
  fixed inputs ``{key: [batch, ...]}``; a short last batch is padded with
  copies of its last row in both, so the compiled kernels see one shape.
  ``bind(fixed)`` is the model as ``z -> logits`` for a batch's fixed inputs.

  Args:
    model: a model or a `keras_opnorm.LogitsView` (its ``inputs`` name the
      perturbed inputs).
    x: the structured data.
    y: labels ``[n]`` (None with a dataset).
    training: the ``training`` flag of the bound model.
  """

  def __init__(self, model, x, y, training=False):
    from keras_opnorm import logits_view  # pylint: disable=g-import-not-at-top
    self.view = logits_view.as_view(model)
    self.x, self.y, self.training = x, y, training
    if isinstance(x, tf.data.Dataset):
      if y is not None:
        raise ValueError(
            "`y` must be None when `x` is a tf.data.Dataset: the dataset yields "
            f"(x, y) batches. Received: y of type {type(y).__name__}")
      first = None
      for element in x.take(1):
        first = element[0] if isinstance(element, tuple) else element
      if first is None:
        raise ValueError("`x` must contain at least one example. Received: an empty dataset")
      self.packing = logits_view.Packing(first, self.view.inputs, name="x")
    else:
      self.packing = logits_view.Packing(x, self.view.inputs, name="x")
      if int(self.packing.z.shape[0]) == 0:
        raise ValueError("`x` must contain at least one example. Received: no rows")
    self.num_inputs = int(sum(self.packing.sizes))

  def bind(self, fixed):
    """The model as ``z -> logits`` (a bound view) for the fixed inputs ``fixed``."""
    return self.view.bind_fixed(self.packing, fixed)

  def logits_fn(self, fixed):
    from keras_opnorm import jacobian  # pylint: disable=g-import-not-at-top
    return jacobian.as_logits_fn(self.bind(fixed), training=self.training)

  def num_classes(self, z, fixed):
    """The width of the logits at the first row of a batch."""
    return self.logits_fn(_slice_fixed(fixed, slice(0, 1)))(z[:1]).shape[-1]

  def batches(self, batch_size, need_y):
    """Yields ``(z, y or None, count, fixed)`` (see the class docstring)."""
    from keras_opnorm import logits_view  # pylint: disable=g-import-not-at-top
    if isinstance(self.x, tf.data.Dataset):
      size = None
      for element in self.x:
        if isinstance(element, tuple):
          xb, yb = element[0], (element[1] if len(element) > 1 else None)
        else:
          xb, yb = element, None
        if need_y and yb is None:
          raise ValueError(
              "Labels are needed: the tf.data.Dataset passed as `x` must yield "
              "(x, y) batches. Received: a dataset yielding x only")
        packing = logits_view.Packing(xb, self.view.inputs, name="x")
        zb = _checks.float_input(packing.z, "x")
        yb = None if yb is None else _labels(yb)
        count = int(zb.shape[0])
        size = size or count
        if count:
          yield _pad(zb, size), _pad(yb, size), count, _pad_fixed(packing.fixed, size)
      return
    z = _checks.float_input(self.packing.z, "x")
    n = int(z.shape[0])
    y = _array_labels(self.y, n, need_y, f"{n} examples")
    fixed = {k: tf.convert_to_tensor(v) for k, v in self.packing.fixed.items()}
    size = min(batch_size, n)
    for start in range(0, n, size):
      sl = slice(start, start + size)
      count = int(z[sl].shape[0])
      yield (_pad(z[sl], size), None if y is None else _pad(y[sl], size), count,
             _pad_fixed(_slice_fixed(fixed, sl), size))

  def materialize(self, batch_size, need_y=True):
    """``(z [n, n_in], y [n] int32 or None, fixed {key: [n, ...]})`` as numpy."""
    zs, ys, fixed = [], [], {k: [] for k in self.packing.fixed}
    for zb, yb, count, fb in self.batches(batch_size, need_y):
      zs.append(zb.numpy()[:count])
      if yb is not None:
        ys.append(yb.numpy()[:count])
      for k, v in fb.items():
        fixed[k].append(v.numpy()[:count])
    y = np.concatenate(ys).astype(np.int32) if ys else None
    return np.concatenate(zs), y, {k: np.concatenate(v) for k, v in fixed.items()}

  def unpack(self, z, fixed):
    """Numpy arrays in the structure of ``x`` from ``z`` and the fixed inputs."""
    return self.packing.unpack_numpy(z, fixed)


def _any_batches(x, y, batch_size, need_y, structured):
  """``(x_batch, y_batch, count, extra)``: ``extra`` is ``()`` for a single-tensor
  ``x`` (`_batches`), ``(fixed,)`` for a structured one (``x_batch`` is ``z``)."""
  if structured is None:
    for xb, yb, count in _batches(x, y, batch_size, need_y):
      yield xb, yb, count, ()
  else:
    for zb, yb, count, fixed in structured.batches(batch_size, need_y):
      yield zb, yb, count, (fixed,)
