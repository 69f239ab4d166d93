"""Argument checks shared by the public functions, in one voice.

Every message names the argument and the value received, Keras style:
"`num_iters` must be a positive integer. Received: num_iters=0".
"""

import math
import numbers

import numpy as np
import tensorflow as tf

from keras_opnorm import norms


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
  if isinstance(value, (tf.Tensor, tf.Variable)):
    return value
  kind = "positive" if strict else "non-negative"
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
    raise TypeError(f"`{name}` must be a {kind} finite number. Received: {name}={value!r}")
  v = float(value)
  if math.isnan(v) or math.isinf(v) or v < 0 or (strict and v == 0):
    raise ValueError(f"`{name}` must be a {kind} finite number. Received: {name}={value}")
  return v


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


def float_input(x, name="x"):
  """Converts a batch to a float32 (or float64) tensor of rank >= 2.

  float16 / bfloat16 inputs are upcast to float32 so that norms, power
  iterations and attacks run in float32 (mixed precision).

  Raises:
    TypeError: for integer, boolean or string inputs.
    ValueError: for rank < 2 (no batch axis).
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
  return x


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
