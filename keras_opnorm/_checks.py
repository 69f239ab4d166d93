"""Argument checks shared by the public functions, in one voice.

Every message names the argument and the value received, Keras style:
"`num_iters` must be a positive integer. Received: num_iters=0".
"""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import norms


class VacuousThreatModelWarning(UserWarning):
  """The attack radius covers the valid input box: the threat model is vacuous.

  Emitted when ``clip=(lo, hi)`` is given and ``epsilon >= ||(hi - lo) / 2||_p``
  over one example's ``n`` coordinates, i.e.

    p = inf:  epsilon >= (hi - lo) / 2
    p = 2:    epsilon >= (hi - lo) * sqrt(n) / 2
    p = 1:    epsilon >= (hi - lo) * n / 2
    (any p:   epsilon >= (hi - lo) * n^(1/p) / 2)

  Why these thresholds: ``||(hi - lo) / 2||_p`` is the lp distance from the
  box midpoint ``c = (lo + hi) / 2`` to its farthest corner, so it bounds
  ``||x - c||_p`` for every valid ``x``. At such a radius every input can be
  moved to the same point ``c`` (the grey image), so an example stays
  robust only if its label is the model's prediction at ``c``: robust
  accuracy is at most the frequency of the most common class, whatever the
  model.
  Typical cause: eps given in pixel units (8 rather than 8/255) or a clip
  range that does not match the data.
  """


def positive_int(value, name):
  """Returns ``value`` if it is an integer > 0, else raises."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
    raise TypeError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
  if value <= 0:
    raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
  return int(value)


def nonnegative_float(value, name):
  """Returns ``value`` as a float if it is a finite number >= 0, else raises."""
  return _real(value, name, strict=False)


def positive_float(value, name):
  """Returns ``value`` as float if it is a finite number > 0, else raises.

  Tensors and variables pass through unchecked (they may be schedules).
  """
  return _real(value, name, strict=True)


def _real(value, name, strict):
  kind = "positive" if strict else "non-negative"
  if _is_tensor_like(value):
    # A variable (a schedule may change it) or a tensor: checked here when its
    # value is known (eagerly), returned as is; a symbolic tensor is checked
    # where a step reads it (`hyperparameter_in_step`).
    arr = _eager_value(value)
    if arr is None:
      return value
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or
                                     np.issubdtype(arr.dtype, np.integer)):
      raise TypeError(f"`{name}` must be a {kind} finite number. Received: {name} "
                      f"with dtype={arr.dtype}")
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0) or (
        strict and np.any(arr == 0)):
      shown = arr.item() if arr.size == 1 else arr
      raise ValueError(f"`{name}` must be a {kind} finite number. Received: {name}={shown} "
                       f"(a {type(value).__name__})")
    return value
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
    raise TypeError(f"`{name}` must be a {kind} finite number. Received: {name}={value!r}")
  v = float(value)
  if math.isnan(v) or math.isinf(v) or v < 0 or (strict and v == 0):
    raise ValueError(f"`{name}` must be a {kind} finite number. Received: {name}={value}")
  return v


def _is_tensor_like(value):
  return isinstance(value, (tf.Tensor, tf.Variable, keras.Variable)) or tf.is_tensor(value)


def _eager_value(value):
  """The numpy value of a tensor or variable if it is known now, else None.

  A variable is read outside any function being traced (`tf.init_scope`), so
  that its current value is known even at trace time; a symbolic tensor has
  no value (None).
  """
  try:
    with tf.init_scope():
      if isinstance(value, keras.Variable):
        value = value.value
      if isinstance(value, tf.Variable):
        value = value.read_value()
      if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
      return np.asarray(value)
  except (TypeError, ValueError, AttributeError, NotImplementedError, tf.errors.OpError):
    return None


def hyperparameter_in_step(value, name, allow_zero=True):
  """Checks a hyper-parameter where a (compiled) step reads it.

  Eagerly a ValueError for a non-finite, negative (or, with
  ``allow_zero=False``, zero) value. In a graph a ``tf.debugging`` assertion
  (InvalidArgumentError naming ``name``); XLA drops assertions, so the value
  is also replaced by NaN where it is invalid: the loss becomes NaN instead of
  training silently with a wrong (e.g. clamped negative) radius.

  Args:
    value: a float tensor (read from the objective's variable).
    name: the hyper-parameter's name, used in the message.
    allow_zero: accept 0 (an epsilon schedule ramping up from 0). Defaults to
      `True`.

  Returns:
    ``value`` (NaN where invalid, in a graph).

  Raises:
    ValueError: eagerly, for an invalid value.
  """
  value = tf.convert_to_tensor(value)
  kind = "non-negative" if allow_zero else "positive"
  valid = tf.math.is_finite(value) & (value >= 0 if allow_zero else value > 0)
  if tf.executing_eagerly():
    if not bool(tf.reduce_all(valid)):
      arr = value.numpy()
      raise ValueError(f"`{name}` must be a {kind} finite number. Received: "
                       f"{name}={arr.item() if arr.size == 1 else arr}")
    return value
  check = tf.debugging.Assert(
      tf.reduce_all(valid),
      [f"`{name}` must be a {kind} finite number. Received: {name}=", value])
  with tf.control_dependencies([check]):
    return tf.where(valid, value, tf.constant(float("nan"), value.dtype))


def exponent(value, name):
  """Checks an lp exponent in [1, inf]; see `norms.validate_exponent`."""
  return norms.validate_exponent(value, name)


def one_of(value, choices, name):
  """Returns ``value`` if it is one of the strings ``choices``, else raises."""
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")
  return value


def not_differentiable(f, derivative="gradient", of="f(x)"):
  """The ValueError for a ``None`` derivative of ``of`` with respect to ``x``.

  Args:
    f: the model or callable, named in the message as ``f`` (by its
      ``__name__`` if it has one).
    derivative: ``'gradient'`` or ``'forward-mode derivative'``.
    of: what was differentiated. Defaults to `"f(x)"`.
  """
  f = getattr(f, "wrapped", f)  # The user's f behind `jacobian.as_logits_fn`.
  name = getattr(f, "name", None) or getattr(f, "__name__", None) or f
  return ValueError(
      f"`f` is not differentiable with respect to its input: the {derivative} "
      f"of {of} with respect to x is None (is there a stop_gradient, argmax, "
      f"integer cast or a non-TensorFlow computation in f?). Received: "
      f"f={name!r}")


def float_input(x, name="x", finite=True):
  """Converts a batch to a float32 (or float64) tensor of rank >= 2.

  float16 / bfloat16 inputs are upcast to float32 so that norms, power
  iterations and attacks run in float32 (mixed precision). With ``finite``
  the batch must hold no NaN or inf (`finite_input`): a non-finite example
  would otherwise come out as a zero norm (it looks perfectly robust), since
  the norms' zero guards ``n > 0`` are False for NaN.

  Args:
    x: the batch.
    name: the argument name used in messages. Defaults to `"x"`.
    finite: check that every value is finite. Defaults to `True`.

  Raises:
    TypeError: for integer, boolean or string inputs.
    ValueError: for rank < 2 (no batch axis); eagerly, for NaN or inf values
      (in a graph: an InvalidArgumentError when the step runs).
  """
  if isinstance(x, dict) or (isinstance(x, (list, tuple)) and x and tf.is_tensor(x[0])):
    raise TypeError(
        f"`{name}` must be a single tensor; multi-input and dict inputs are "
        f"not supported. Received: {name} of type {type(x).__name__}")
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    raise TypeError(
        f"`{name}` must be a floating-point tensor (cast integer images to "
        f"float first). Received: {name} with dtype={x.dtype.name}")
  if x.dtype in (tf.float16, tf.bfloat16):
    x = tf.cast(x, tf.float32)
  if x.shape.rank is not None and x.shape.rank < 2:
    raise ValueError(
        f"`{name}` must be a batch of rank >= 2 ([batch, ...]). Received: "
        f"{name} with shape={x.shape}")
  if finite:
    x = finite_input(x, name)
  return x


def _nonfinite_examples(x):
  """``[batch]`` bool: the examples of ``x`` holding a NaN or inf."""
  bad = tf.logical_not(tf.math.is_finite(x))
  if x.shape.rank is not None and x.shape.rank > 1:
    bad = tf.reduce_any(tf.reshape(bad, [tf.shape(x)[0], -1]), axis=1)
  return bad


def finite_input(x, name="x"):
  """Checks that a float batch holds no NaN or inf; returns it.

  Eagerly a ValueError naming ``name``, how many examples are non-finite and
  which (the first few indices) and how many NaN / inf values there are. In
  a graph (``tf.function``, ``model.fit``) a ``tf.debugging`` assertion with
  the same content, raised as an InvalidArgumentError when the step runs.
  XLA drops assertions: compiled callers turn their per-example outputs to
  NaN with `nan_where_nonfinite`.

  Args:
    x: a float tensor ``[batch, ...]``.
    name: the argument name used in the message. Defaults to `"x"`.

  Returns:
    ``x`` (in a graph: behind the assertion).

  Raises:
    ValueError: eagerly, for a NaN or inf in ``x``.
  """
  if tf.executing_eagerly():
    if bool(tf.reduce_all(tf.math.is_finite(x))):
      return x
    arr = x.numpy()
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1) if arr.ndim > 1 else (
        ~np.isfinite(arr))
    idx = np.flatnonzero(bad)
    shown = idx[:10].tolist()
    more = ", ..." if idx.size > 10 else ""
    raise ValueError(
        f"`{name}` must be finite (no NaN or inf): {idx.size} of {bad.size} "
        f"examples hold non-finite values (indices {str(shown)[1:-1]}{more}), "
        f"{int(np.isnan(arr).sum())} NaN and {int(np.isinf(arr).sum())} inf "
        f"values in all. Received: {name} with shape={arr.shape}")
  bad = _nonfinite_examples(x)
  count = tf.reduce_sum(tf.cast(bad, tf.int32))
  first = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
  check = tf.debugging.Assert(
      tf.equal(count, 0),
      [f"`{name}` must be finite (no NaN or inf). Received: {name} with "
       f"non-finite values in this many examples:", count, "the first at index:", first])
  with tf.control_dependencies([check]):
    return tf.identity(x)


def nan_where_nonfinite(values, x):
  """``values`` with NaN in the rows whose example of ``x`` is not finite.

  Per-example results (norms, singular values) of a non-finite example would
  otherwise be a finite, plausible number (0 from the zero guards). In eager
  mode `finite_input` has already raised; in a graph its assertion runs, but
  XLA drops it, so this makes a compiled result NaN instead. Finite examples
  are unchanged (a zero Jacobian at a finite ``x`` still gives 0).

  Args:
    values: a tensor ``[batch, ...]``.
    x: the input batch ``[batch, ...]``.

  Returns:
    ``values``, NaN in the rows of non-finite examples.
  """
  if tf.executing_eagerly():
    return values
  values = tf.convert_to_tensor(values)
  bad = _nonfinite_examples(x)
  bad = tf.reshape(bad, [-1] + [1] * (values.shape.rank - 1)) if values.shape.rank else bad
  return tf.where(bad, tf.constant(float("nan"), values.dtype), values)


def class_labels(y, num_classes=None, name="y"):
  """Checks integer class labels ``[batch]``: integer-valued, in range.

  Float labels must hold whole numbers (3.7 is not a class: a cast would
  truncate it to 3); with ``num_classes`` every label must lie in
  ``[0, num_classes)``, else a ValueError here rather than a raw TensorFlow
  error (or, on GPU, a silent NaN) from the cross-entropy; without it the
  labels must be >= 0. Eagerly a ValueError naming ``name`` and an offending
  value; in a graph a ``tf.debugging`` assertion (dropped by XLA).

  Args:
    y: a tensor of labels (any shape; integer or float dtype).
    num_classes: the number of logits, or None if not known yet. Defaults
      to `None`.
    name: the argument name used in the message. Defaults to `"y"`.

  Returns:
    ``y`` (in a graph: behind the assertions).

  Raises:
    ValueError: eagerly, for a non-integer float label or one out of range.
  """
  y = tf.convert_to_tensor(y)
  if num_classes is not None:
    num_classes = int(num_classes)
  if tf.executing_eagerly():
    arr = y.numpy()
    if y.dtype.is_floating:
      bad = ~np.isfinite(arr) | (np.round(arr) != arr)
      if bad.any():
        raise ValueError(
            f"`{name}` must hold integer class labels (a float label is not "
            f"rounded or truncated). Received: {name} with the value "
            f"{arr[bad].reshape(-1)[0].item()!r} at index {int(np.flatnonzero(bad.reshape(-1))[0])}")
    hi = np.inf if num_classes is None else num_classes
    bad = (arr < 0) | (arr >= hi)
    if bad.any():
      where = f"[0, {num_classes})" if num_classes is not None else ">= 0"
      raise ValueError(
          f"`{name}` must hold class labels in {where}"
          f"{'' if num_classes is None else f' (the model has num_classes={num_classes} logits)'}. "
          f"Received: {name} with the value {arr[bad].reshape(-1)[0].item()!r} at index "
          f"{int(np.flatnonzero(bad.reshape(-1))[0])}")
    return y
  checks = []
  if y.dtype.is_floating:
    checks.append(tf.debugging.Assert(
        tf.reduce_all(tf.equal(y, tf.round(y))),
        [f"`{name}` must hold integer class labels (a float label is not rounded "
         f"or truncated). Received: {name}=", y], summarize=10))
  ok = y >= 0
  if num_classes is not None:
    ok = ok & (y < tf.cast(num_classes, y.dtype))
  checks.append(tf.debugging.Assert(
      tf.reduce_all(ok),
      [f"`{name}` must hold class labels in "
       f"{'>= 0' if num_classes is None else f'[0, num_classes={num_classes})'}. "
       f"Received: {name}=", y], summarize=10))
  with tf.control_dependencies(checks):
    return tf.identity(y)


def logits(out, batch_size, name="f(x)"):
  """Checks that a model output is a single ``[batch, d]`` float tensor."""
  if isinstance(out, (dict, list, tuple)):
    raise TypeError(
        f"`f` must return a single logits tensor of shape [batch, d]. "
        f"Received: {name} of type {type(out).__name__}")
  out = tf.convert_to_tensor(out)
  if out.shape.rank is not None and out.shape.rank != 2:
    raise ValueError(
        f"`f` must return logits of shape [batch, d]. Received: {name} with "
        f"shape={out.shape}")
  if not out.dtype.is_floating:
    raise TypeError(f"`f` must return floating-point logits. Received: {name} with dtype={out.dtype.name}")
  if out.dtype != tf.float32 and out.dtype != tf.float64:
    out = tf.cast(out, tf.float32)
  return out
