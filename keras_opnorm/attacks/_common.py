"""Pieces shared by the attacks: argument checks, labels, the sparse l1 step."""

import math
import numbers
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import norms


# ----------------------------------------------------------------------------
# Step directions and random starts.
# ----------------------------------------------------------------------------


def _sparse_l1_direction(g, sparsity):
  """The sparse l1 step of SLIDE (Tramer & Boneh 2019), unit l1 norm.

  ``e_i = sign(g_i)`` on the ``k = max(1, n - floor(sparsity * n))``
  coordinates of largest ``|g_i|`` (ties at the threshold included), 0
  elsewhere, then ``e / ||e||_1``. ``sparsity = 1`` is the one-hot
  steepest ascent ``s_1``; ``sparsity = 0`` is ``sign(g) / n``.
  """
  if sparsity >= 1.0:
    return norms.steepest_ascent(g, 1.0)
  shape = tf.shape(g)
  n_static = g.shape[1:].num_elements()
  flat = tf.reshape(g, [shape[0], -1])
  a = tf.abs(flat)
  if n_static is not None:
    k = max(1, n_static - int(math.floor(sparsity * n_static)))
  else:
    n = tf.shape(flat)[1]
    k = tf.maximum(1, n - tf.cast(tf.floor(sparsity * tf.cast(n, tf.float32)), tf.int32))
  kth = tf.math.top_k(a, k=k, sorted=False).values
  thresh = tf.reduce_min(kth, axis=1, keepdims=True)
  keep = tf.logical_and(a >= thresh, a > 0)
  e = tf.where(keep, tf.sign(flat), tf.zeros_like(flat))
  count = tf.reduce_sum(tf.abs(e), axis=1, keepdims=True)
  e = e / tf.maximum(count, 1.0)
  return tf.reshape(e, shape)


# ----------------------------------------------------------------------------
# Argument checks.
# ----------------------------------------------------------------------------


def _radius(value, name, x):
  """Validates a positive finite radius: a number, or a scalar / [batch] tensor."""
  if isinstance(value, (bool, np.bool_, str, bytes)):
    raise TypeError(f"`{name}` must be a positive finite number or a [batch] tensor. "
                    f"Received: {name}={value!r}")
  if isinstance(value, (numbers.Real, np.number)):
    value = _checks.positive_float(value, name)
    return tf.constant(value, dtype=x.dtype)
  if isinstance(value, keras.Variable):
    value = value.value
  try:
    t = tf.convert_to_tensor(value)
  except (TypeError, ValueError) as e:
    raise TypeError(f"`{name}` must be a positive finite number or a [batch] tensor. "
                    f"Received: {name}={value!r}") from e
  if not (t.dtype.is_floating or t.dtype.is_integer) or t.dtype == tf.bool:
    raise TypeError(f"`{name}` must be a positive finite number or a [batch] tensor. "
                    f"Received: {name} with dtype={t.dtype.name}")
  t = tf.cast(t, x.dtype)
  if t.shape.rank is not None and t.shape.rank > 1:
    raise ValueError(f"`{name}` must be a scalar or have shape [batch]. Received: "
                     f"{name} with shape={t.shape}")
  if t.shape.rank == 1 and t.shape[0] is not None and x.shape[0] is not None:
    if t.shape[0] != x.shape[0]:
      raise ValueError(f"`{name}` must be a scalar or have shape [batch]={x.shape[0]}. "
                       f"Received: {name} with shape={t.shape}")
  if tf.executing_eagerly():
    arr = t.numpy()
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
      raise ValueError(f"`{name}` must be positive and finite. Received: {name}={arr}")
  else:
    # A no-op under XLA (which has no assertions); checked in graph mode.
    with tf.control_dependencies([
        tf.debugging.assert_all_finite(t, f"`{name}` must be finite."),
        tf.debugging.assert_positive(t, f"`{name}` must be positive."),
    ]):
      t = tf.identity(t)
  return t


def _labels(y, x):
  """Checks labels: integer [batch] (or [batch, 1]) or float [batch, d].

  Rank-1 float labels must be whole numbers (`_checks.class_labels`): 3.7 is
  rejected rather than truncated to class 3. Their range is checked against
  the logits by `_check_label_width`.
  """
  y = tf.convert_to_tensor(y)
  if y.dtype == tf.bool or y.dtype == tf.string:
    raise TypeError(f"`y` must hold integer labels [batch] or one-hot labels [batch, d]. "
                    f"Received: y with dtype={y.dtype.name}")
  rank = y.shape.rank
  if rank is not None and rank not in (1, 2):
    raise ValueError(f"`y` must have shape [batch] or [batch, d]. Received: y with "
                     f"shape={y.shape}")
  if rank == 2 and not y.dtype.is_floating:
    y = tf.reshape(y, [-1]) if y.shape[1] == 1 else y
  if rank == 1 and y.dtype.is_floating:
    y = tf.cast(_checks.class_labels(y), tf.int32)
  if y.shape[0] is not None and x.shape[0] is not None and y.shape[0] != x.shape[0]:
    raise ValueError(f"`y` must have the batch size of `x` ({x.shape[0]}). Received: y "
                     f"with shape={y.shape}")
  if y.shape.rank == 2 and not y.dtype.is_floating:
    raise ValueError(f"`y` must have shape [batch] (integer labels) or [batch, d] "
                     f"(one-hot, float). Received: y with shape={y.shape} and "
                     f"dtype={y.dtype.name}")
  return y


def _check_label_width(y, logits):
  """Checks labels against the logits: one-hot width, or integer range.

  Integer labels must lie in ``[0, num_classes)``, ``num_classes`` the
  logits' width (a ValueError eagerly; a graph assertion otherwise). Returns
  the (checked) labels.
  """
  if y is None:
    return y
  if y.shape.rank == 1 and not y.dtype.is_floating:
    if logits.shape[-1] is not None:
      y = _checks.class_labels(y, logits.shape[-1])
    return y
  if y.shape.rank != 2:
    return y
  if y.shape[1] is not None and logits.shape[1] is not None and y.shape[1] != logits.shape[1]:
    raise ValueError(f"`y` must be one-hot with as many classes as `f` has logits "
                     f"({logits.shape[1]}). Received: y with shape={y.shape}")
  return y


def _clip_range(clip):
  if clip is None:
    return None
  if not isinstance(clip, (tuple, list)) or len(clip) != 2:
    raise ValueError(f"`clip` must be None or a pair (lo, hi). Received: clip={clip!r}")
  lo, hi = clip
  if isinstance(lo, (numbers.Real, np.number)) and isinstance(hi, (numbers.Real, np.number)):
    if math.isnan(lo) or math.isnan(hi) or lo >= hi:
      raise ValueError(f"`clip` must be a pair (lo, hi) with lo < hi. Received: clip={clip!r}")
  return lo, hi


def _box_tolerance(lo, hi):
  return 1e-6 * (hi - lo)


def _shown_bound(c):
  """A clip bound for a message: its value if it is one number."""
  if isinstance(c, (numbers.Real, np.number)):
    return c
  value = _checks._eager_value(c)  # pylint: disable=protected-access
  if value is not None and value.size == 1:
    return f"{value.item():g}"
  return f"<tensor shape={tuple(tf.convert_to_tensor(c).shape)}>"


def _check_in_box(x, clip, name="x"):
  """Checks that ``x`` lies inside ``clip = (lo, hi)`` (up to 1e-6 (hi - lo)).

  An input outside the box (data in 0..255 with ``clip=(0, 1)``: the images
  were not scaled) makes the attack's first projection move it by far more
  than ``epsilon``, and the robust accuracy is that of another problem.
  Eagerly a ValueError naming ``x``, ``clip``, the observed min / max and a
  hint; in a graph a ``tf.debugging`` assertion (dropped by XLA).

  Args:
    x: the float batch.
    clip: None or a checked ``(lo, hi)`` (numbers, or tensors broadcastable
      to ``x``).
    name: the argument name used in the message. Defaults to `"x"`.

  Returns:
    ``x`` (in a graph: behind the assertion).

  Raises:
    ValueError: eagerly, for values outside the box.
  """
  if clip is None:
    return x
  lo = tf.cast(clip[0], x.dtype)
  hi = tf.cast(clip[1], x.dtype)
  tol = _box_tolerance(lo, hi)
  inside = tf.logical_and(x >= lo - tol, x <= hi + tol)
  shown = tuple(_shown_bound(c) for c in clip)
  msg = (f"`{name}` must lie inside `clip`=({shown[0]}, {shown[1]}) (up to 1e-6 * (hi - lo)); "
         f"did you forget to scale the inputs to the clip range (e.g. divide images in "
         f"0..255 by 255 for clip=(0, 1))?")
  if tf.executing_eagerly():
    if bool(tf.reduce_all(inside)):
      return x
    outside = int(tf.reduce_sum(tf.cast(tf.logical_not(inside), tf.int32)))
    raise ValueError(
        f"{msg} Received: {name} with values in [{float(tf.reduce_min(x)):.6g}, "
        f"{float(tf.reduce_max(x)):.6g}] ({outside} values outside the box)")
  check = tf.debugging.Assert(
      tf.reduce_all(inside), [msg + f" Received: {name} with min and max", tf.reduce_min(x),
                              tf.reduce_max(x)])
  with tf.control_dependencies([check]):
    return tf.identity(x)


def _known_value(value):
  """A number or an eagerly known tensor / variable as numpy, else None."""
  if isinstance(value, (bool, np.bool_)):
    return None
  if isinstance(value, (numbers.Real, np.number)):
    return np.asarray(float(value))
  return _checks._eager_value(value)  # pylint: disable=protected-access


def vacuous_radius(p, clip, example_shape):
  """``||(hi - lo) / 2||_p`` over one example, or None if not known statically.

  The radius from which the lp ball around the box midpoint contains the
  whole box (see `keras_opnorm.VacuousThreatModelWarning`).
  """
  if clip is None or example_shape is None:
    return None
  example_shape = tf.TensorShape(example_shape)
  if not example_shape.is_fully_defined():
    return None
  lo, hi = (_known_value(c) for c in clip)
  if lo is None or hi is None:
    return None
  try:
    half = np.broadcast_to((hi.astype(np.float64) - lo) / 2.0, example_shape.as_list())
  except ValueError:
    return None
  half = np.abs(half).reshape(-1)
  if half.size == 0:
    return None
  if math.isinf(p):
    return float(half.max())
  m = half.max()
  if m == 0:
    return 0.0
  return float(m * np.power(np.power(half / m, p).sum(), 1.0 / p))


def warn_if_vacuous(epsilon, p, clip, example_shape, caller, stacklevel=3):
  """Warns (`VacuousThreatModelWarning`) if ``epsilon`` covers the clip box.

  Does nothing without ``clip``, or when ``epsilon`` or the box is not known
  at this point (a symbolic tensor). Returns True if it warned.
  """
  if clip is None:
    return False
  eps = _known_value(epsilon)
  if eps is None or eps.size == 0:
    return False
  threshold = vacuous_radius(p, clip, example_shape)
  if threshold is None:
    return False
  eps_max = float(np.max(eps))
  if not eps_max >= threshold:
    return False
  n = tf.TensorShape(example_shape).num_elements()
  p_name = "inf" if math.isinf(p) else f"{p:g}"
  warnings.warn(
      f"{caller}: epsilon={eps_max:g} covers the valid input box clip=({clip[0]}, "
      f"{clip[1]}) in l{p_name}: epsilon >= ||(hi - lo) / 2||_{p_name} = {threshold:g} "
      f"over n={n} input coordinates, so every input can be moved to the box "
      f"midpoint and the threat model is vacuous (robust accuracy is at most the "
      f"frequency of the most common class). Is epsilon in the units of the "
      f"clip range (e.g. 8/255 rather than 8)?",
      _checks.VacuousThreatModelWarning, stacklevel=stacklevel)
  return True


def _same_batch(x, y, name):
  """A graph-safe batch-size equality check for dynamic batches."""
  if x.shape[0] is not None and y.shape[0] is not None:
    return []
  if tf.executing_eagerly():
    return []
  return [tf.debugging.assert_equal(
      tf.shape(x)[0], tf.shape(y)[0],
      message=f"`{name}` must have the batch size of `x`.")]


# ----------------------------------------------------------------------------
# Reproducible randomness: stateless draws from one integer seed.
# ----------------------------------------------------------------------------


def seed_tensor(seed):
  """An int32 ``[2]`` seed for ``tf.random.stateless_*`` from ``seed``.

  ``seed`` is a non-negative Python integer (a reproducible run), an int
  ``[2]`` tensor (passed through: a seed already derived inside a compiled
  function), or None (a fresh seed drawn from the global generator, so
  ``tf.random.set_seed`` still makes the run reproducible).
  """
  if seed is None:
    return tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int32)
  if tf.is_tensor(seed):
    return tf.cast(seed, tf.int32)
  if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (numbers.Integral, np.integer)) or (
      seed < 0):
    raise ValueError(f"`seed` must be None or a non-negative integer. Received: seed={seed!r}")
  return tf.constant([int(seed) % (2**31 - 1), int(seed) // (2**31 - 1)], tf.int32)


def fold_seed(seed, k):
  """The ``k``-th independent stateless seed derived from ``seed`` ([2] int32)."""
  return tf.random.experimental.stateless_fold_in(seed, k)
