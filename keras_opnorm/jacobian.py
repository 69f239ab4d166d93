"""Batched Jacobian-vector products of a network at a batch of inputs.

For ``f: R^n -> R^d`` (a batch of examples mapped to a batch of logits) and
per-example directions, these compute without ever forming ``J = J_f(x)``:

* ``J v``   (forward mode, ``tf.autodiff.ForwardAccumulator``; or the
  "double-backward" trick ``J v = d/du <J^T u, v>``), and
* ``J^T u`` (reverse mode, one ``tf.GradientTape.gradient`` with
  ``output_gradients=u``).

Every example has its own Jacobian: products are per example because the
examples of a batch do not interact in inference mode (no batch statistics).
All products are differentiable by an enclosing ``tf.GradientTape``, which is
what the Jacobian-form regulariser needs.
"""

import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import logits_view

__all__ = ["as_logits_fn", "jvp", "vjp", "JVP_MODES"]

JVP_MODES = ("forward", "double_backward")


def as_logits_fn(f, training=False):
  """Wraps a Keras model or a callable as ``x -> logits`` with checked output.

  A ``keras.Model`` / ``keras.Layer`` is called with ``training=training``
  (inference mode by default, so batch norm uses its moving statistics and
  dropout is off); a `keras_opnorm.LogitsView` gives the logits of its
  selected output (probabilities declared with ``from_logits=False`` become
  ``log p``). Any other callable is called as ``f(x)``. The output must be a
  single ``[batch, d]`` floating tensor; float16/bfloat16 outputs are cast to
  float32.

  Args:
    f: a Keras model or layer, a `keras_opnorm.LogitsView`, or any callable
      from a batch to logits.
    training: the ``training`` flag for Keras objects. Defaults to `False`.

  Returns:
    A callable ``x -> logits`` (float32 for low-precision outputs).

  Raises:
    TypeError: if ``f`` is not callable.
    ValueError: for a Sequential/functional model whose output visibly
      applies a softmax/sigmoid, or with several outputs (name the logits
      with `keras_opnorm.LogitsView`); see `keras_opnorm.logits_view`.
  """
  if not callable(f):
    raise TypeError(f"`f` must be a Keras model or a callable. Received: f={f!r}")
  # Keras models and views: run in their own compute dtype (mixed
  # precision), outputs checked and selected by the view.
  view_fn = logits_view.as_logits_callable(f, training)

  def fn(x):
    if view_fn is not None:
      return view_fn(x)
    return _checks.logits(f(x), None)

  fn.wrapped = logits_view.underlying_model(f)  # Errors name the user's model.
  return fn


def vjp(fn, x, u):
  """Returns ``(fn(x), J^T u)``: the vector-Jacobian product per example.

  ``(J^T u)_b = d/dx_b <u_b, f(x)_b>`` computed with one reverse pass
  (``tape.gradient(f(x), x, output_gradients=u)``).

  Args:
    fn: callable ``x -> logits [batch, d]`` (see `as_logits_fn`).
    x: float tensor ``[batch, ...]``.
    u: tensor ``[batch, d]``, the output directions.

  Returns:
    ``(logits, jtu)`` with ``jtu`` shaped like ``x``.

  Raises:
    ValueError: if the output does not depend differentiably on ``x``
      (the gradient is ``None``: a stop_gradient, an integer cast, an argmax).
  """
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch(x)
    y = fn(x)
  g = tape.gradient(y, x, output_gradients=tf.cast(u, y.dtype))
  if g is None:
    raise _checks.not_differentiable(fn)
  return y, tf.cast(g, x.dtype)


def jvp(fn, x, v, mode="forward"):
  """Returns ``(fn(x), J v)``: the Jacobian-vector product per example.

  * ``mode='forward'``: one forward-mode pass with
    ``tf.autodiff.ForwardAccumulator(x, v)``: cost about one forward pass.
  * ``mode='double_backward'``: ``J v = d/du <J^T u, v>`` at any ``u``
    (two reverse passes); for ops without a forward-mode rule.

  Args:
    fn: callable ``x -> logits [batch, d]``.
    x: float tensor ``[batch, ...]``.
    v: tensor shaped like ``x``, the input directions.
    mode: ``'forward'`` or ``'double_backward'``. Defaults to `'forward'`.

  Returns:
    ``(logits, jv)`` with ``jv`` of shape ``[batch, d]``.

  Raises:
    ValueError: for an unknown ``mode`` or a model that does not depend
      differentiably on ``x``.
  """
  _checks.one_of(mode, JVP_MODES, "jvp_mode")
  v = tf.cast(v, x.dtype)
  if mode == "forward":
    with tf.autodiff.ForwardAccumulator(x, v) as acc:
      y = fn(x)
    jv = acc.jvp(y)
    if jv is None:
      raise _checks.not_differentiable(fn, "forward-mode derivative")
    return y, tf.cast(jv, y.dtype)
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch(x)
    y = fn(x)
  return y, double_backward_jvp(fn, tape, y, x, v)


def double_backward_jvp(fn, tape, y, x, v):
  """``J v = d/dz <J^T z, v>`` from a ``tape`` that recorded ``y = fn(x)``.

  ``g(z) = J^T z`` is linear in ``z``, so the gradient of ``<g(z), v>`` with
  respect to ``z`` is ``J v`` at any ``z`` (here ``z = 0``): two reverse
  passes over the recorded forward pass, for ops without a forward-mode rule.

  Args:
    fn: the callable that produced ``y`` (named in the error).
    tape: a `tf.GradientTape` that watched ``x`` and recorded ``y = fn(x)``.
      Must be persistent if the caller differentiates it again.
    y: logits ``[batch, d]``.
    x: float tensor ``[batch, ...]``.
    v: tensor shaped like ``x``, the input directions.

  Returns:
    ``J v``, shaped like ``y``.

  Raises:
    ValueError: if ``y`` does not depend differentiably on ``x``.
  """
  with tf.GradientTape(watch_accessed_variables=False) as outer:
    z = tf.zeros_like(y)
    outer.watch(z)
    g = tape.gradient(y, x, output_gradients=z)
    if g is None:
      raise _checks.not_differentiable(fn)
    s = tf.reduce_sum(g * tf.cast(v, g.dtype))
  return outer.gradient(s, z)

