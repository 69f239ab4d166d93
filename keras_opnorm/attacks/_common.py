"""Pieces shared by the attacks: argument checks, labels, the sparse l1 step."""

import math
import numbers

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
  """Checks labels: integer [batch] (or [batch, 1]) or float [batch, d]."""
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
    y = tf.cast(y, tf.int32)
  if y.shape[0] is not None and x.shape[0] is not None and y.shape[0] != x.shape[0]:
    raise ValueError(f"`y` must have the batch size of `x` ({x.shape[0]}). Received: y "
                     f"with shape={y.shape}")
  if y.shape.rank == 2 and not y.dtype.is_floating:
    raise ValueError(f"`y` must have shape [batch] (integer labels) or [batch, d] "
                     f"(one-hot, float). Received: y with shape={y.shape} and "
                     f"dtype={y.dtype.name}")
  return y


def _check_label_width(y, logits):
  if y is None or y.shape.rank != 2:
    return
  if y.shape[1] is not None and logits.shape[1] is not None and y.shape[1] != logits.shape[1]:
    raise ValueError(f"`y` must be one-hot with as many classes as `f` has logits "
                     f"({logits.shape[1]}). Received: y with shape={y.shape}")


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
