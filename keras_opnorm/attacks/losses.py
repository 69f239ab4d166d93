"""Attack losses: ``(logits_adv, logits_clean, y) -> [batch]`` per-example losses.

The losses that PGD and the other attacks of `keras_opnorm.attacks` ascend:
cross-entropy (Madry et al. 2018), the lq logit distance of the theorem
(Roth, Kilcher & Hofmann, NeurIPS 2020, https://arxiv.org/abs/1906.01527),
the TRADES KL divergence (Zhang et al., ICML 2019), and the classification
margin with its scale-invariant forms, the (targeted) difference of logits
ratio of AutoAttack (Croce & Hein, ICML 2020, https://arxiv.org/abs/2003.01690).
"""

import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import norms

__all__ = [
    "attack_loss",
    "crossentropy_loss",
    "logit_distance_loss",
    "kl_loss",
    "margin",
    "dlr_loss",
    "targeted_dlr_loss",
    "ATTACK_LOSSES",
]

ATTACK_LOSSES = ("crossentropy", "logit", "kl")


def _is_sparse_labels(y):
  return y.shape.rank == 1 or not y.dtype.is_floating


def crossentropy_loss(logits_adv, logits_clean=None, y=None):
  """Per-example softmax cross-entropy ``CE(y, f(x*))`` (Madry et al. 2018).

  ``CE(y, z) = -sum_i y_i log softmax(z)_i``; integer labels are one-hot.

  Args:
    logits_adv: ``[batch, d]`` logits at the perturbed input.
    logits_clean: ``[batch, d]`` logits at the clean input; only used to
      derive labels when ``y`` is None (the model's own prediction, so no
      label leaking). Defaults to `None`.
    y: integer labels ``[batch]`` (or ``[batch, 1]``), or one-hot /
      probability labels ``[batch, d]``. Defaults to `None`.

  Returns:
    Float tensor ``[batch]``.

  Raises:
    ValueError: if both ``y`` and ``logits_clean`` are None.

  Example:

  >>> z = tf.constant([[0.0, 0.0]])
  >>> round(float(crossentropy_loss(z, y=tf.constant([1]))[0]), 4)  # log 2
  0.6931
  """
  logits_adv = tf.convert_to_tensor(logits_adv)
  if y is None:
    if logits_clean is None:
      raise ValueError("`crossentropy_loss` needs `y` or `logits_clean`. Received: y=None, "
                       "logits_clean=None")
    y = tf.argmax(logits_clean, axis=-1)
  y = tf.convert_to_tensor(y)
  if _is_sparse_labels(y):
    y = tf.cast(tf.reshape(y, [-1]), tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits_adv)
  return tf.nn.softmax_cross_entropy_with_logits(
      labels=tf.cast(y, logits_adv.dtype), logits=logits_adv)


def logit_distance_loss(logits_adv, logits_clean, y=None, *, q=2):
  """Per-example lq logit distance ``||f(x*) - f(x)||_q`` (Roth et al. 2020).

  The clean logits are a constant (``stop_gradient``), so the gradient with
  respect to ``x*`` is ``J(x*)^T s_{q*}(f(x*) - f(x))``: the power method's
  "forward" and "backward" passes. At ``x* = x`` the loss is 0 with gradient
  0 (a minimum), for every ``q``; never NaN.

  Args:
    logits_adv: ``[batch, d]`` logits at the perturbed input.
    logits_clean: ``[batch, d]`` logits at the clean input.
    y: ignored (present for the common loss signature). Defaults to `None`.
    q: the output norm exponent in ``[1, inf]``. Defaults to `2`.

  Returns:
    Float tensor ``[batch]``.

  Example:

  >>> float(logit_distance_loss(tf.constant([[3.0, 4.0]]), tf.zeros([1, 2]))[0])
  5.0
  """
  del y
  q = _checks.exponent(q, "q")
  logits_adv = tf.convert_to_tensor(logits_adv)
  z = logits_adv - tf.stop_gradient(tf.cast(logits_clean, logits_adv.dtype))
  return norms.lp_norm(z, q)  # Gradient 0 (not NaN) at z = 0 for every q.


def kl_loss(logits_adv, logits_clean, y=None):
  """Per-example ``KL(softmax f(x) || softmax f(x*))`` (TRADES).

  ``KL(P || Q) = sum_i P_i (log P_i - log Q_i)`` with ``P = softmax(f(x))``
  held constant (Zhang et al., "Theoretically Principled Trade-off between
  Robustness and Accuracy", ICML 2019, https://arxiv.org/abs/1901.08573).

  Args:
    logits_adv: ``[batch, d]`` logits at the perturbed input.
    logits_clean: ``[batch, d]`` logits at the clean input.
    y: ignored (present for the common loss signature). Defaults to `None`.

  Returns:
    Float tensor ``[batch]`` (>= 0).

  Example:

  >>> float(kl_loss(tf.constant([[1.0, 2.0]]), tf.constant([[1.0, 2.0]]))[0])
  0.0
  """
  del y
  logits_adv = tf.convert_to_tensor(logits_adv)
  log_p = tf.stop_gradient(tf.nn.log_softmax(tf.cast(logits_clean, logits_adv.dtype)))
  log_q = tf.nn.log_softmax(logits_adv)
  return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def attack_loss(identifier, *, q=2):
  """Returns the per-example attack loss ``(logits_adv, logits_clean, y) -> [batch]``.

  Args:
    identifier: ``'crossentropy'``, ``'logit'`` (the lq logit distance),
      ``'kl'``, or a callable with that signature (returned unchanged).
    q: the exponent of the ``'logit'`` loss. Defaults to `2`.

  Returns:
    A callable.

  Raises:
    ValueError: for an unknown name or an invalid ``q``.
    TypeError: if ``identifier`` is neither a string nor callable.

  Example:

  >>> loss = attack_loss('logit', q=1)
  >>> float(loss(tf.constant([[3.0, -4.0]]), tf.zeros([1, 2]), None)[0])
  7.0
  """
  if callable(identifier):
    return identifier
  if not isinstance(identifier, str):
    raise TypeError(
        f"`loss` must be one of {ATTACK_LOSSES} or a callable "
        f"(logits_adv, logits_clean, y) -> [batch]. Received: loss={identifier!r}")
  if identifier == "crossentropy":
    return crossentropy_loss
  if identifier == "logit":
    q = _checks.exponent(q, "q")

    def fn(logits_adv, logits_clean, y=None):
      return logit_distance_loss(logits_adv, logits_clean, y, q=q)

    fn.__name__ = f"logit_distance_loss_q{q:g}"
    return fn
  if identifier == "kl":
    return kl_loss
  raise ValueError(
      f"`loss` must be one of {ATTACK_LOSSES} or a callable. Received: loss={identifier!r}")


# ----------------------------------------------------------------------------
# Margins and the difference of logits ratio (AutoAttack).
# ----------------------------------------------------------------------------


def _integer_labels(y, logits):
  y = tf.convert_to_tensor(y)
  if not _is_sparse_labels(y):
    return tf.argmax(y, axis=-1, output_type=tf.int32)
  return tf.cast(tf.reshape(y, [-1]), tf.int32)


def _require_classes(logits, k, name):
  d = logits.shape[-1]
  if d is not None and d < k:
    raise ValueError(f"`{name}` needs logits with at least {k} classes. Received: logits "
                     f"with shape={logits.shape}")


def margin(logits, y):
  """Per-example classification margin ``z_y - max_{j != y} z_j``.

  Positive where ``y`` is predicted (strictly), negative where another class
  wins; ``f`` is robust at ``x`` against ``x*`` iff ``margin(f(x*), y) > 0``.

  Args:
    logits: ``[batch, d]`` logits, ``d >= 2``.
    y: integer labels ``[batch]`` (or ``[batch, 1]``) or one-hot ``[batch, d]``.

  Returns:
    Float tensor ``[batch]``.

  Example:

  >>> float(margin(tf.constant([[1.0, 3.0, 2.0]]), tf.constant([2]))[0])
  -1.0
  """
  logits = tf.convert_to_tensor(logits)
  _require_classes(logits, 2, "margin")
  y = _integer_labels(y, logits)
  d = tf.shape(logits)[-1]
  onehot = tf.one_hot(y, d, on_value=True, off_value=False)
  z_y = tf.reduce_sum(tf.where(onehot, logits, tf.zeros_like(logits)), axis=-1)
  lowest = tf.constant(logits.dtype.min, logits.dtype)
  z_other = tf.reduce_max(tf.where(onehot, tf.fill(tf.shape(logits), lowest), logits), axis=-1)
  return z_y - z_other


def dlr_loss(logits_adv, logits_clean=None, y=None):
  """Per-example difference of logits ratio (DLR; Croce & Hein 2020, eq. 6).

  With ``z = f(x*)`` and its entries sorted decreasingly
  ``z_pi1 >= z_pi2 >= z_pi3 >= ...``::

    DLR(z, y) = - (z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)

  It is invariant to shifting and positively rescaling the logits, so it
  cannot be masked by a large logit scale (or a softmax that saturates), and
  it is positive exactly where ``x*`` is misclassified. Needs ``d >= 3``.

  Args:
    logits_adv: ``[batch, d]`` logits at the perturbed input.
    logits_clean: unused; derives the labels when ``y`` is None (the model's
      own predictions). Defaults to `None`.
    y: integer labels ``[batch]`` or one-hot ``[batch, d]``. Defaults to `None`.

  Returns:
    Float tensor ``[batch]`` in ``[-1, 1]`` (for ``d >= 3``).

  Raises:
    ValueError: for fewer than 3 classes, or ``y`` and ``logits_clean`` both None.

  Example:

  >>> z = tf.constant([[4.0, 2.0, 1.0, 0.0]])  # margin 2, z_pi1 - z_pi3 = 3
  >>> round(float(dlr_loss(z, y=tf.constant([0]))[0]), 4)
  -0.6667
  """
  logits_adv = tf.convert_to_tensor(logits_adv)
  _require_classes(logits_adv, 3, "dlr_loss")
  if y is None:
    if logits_clean is None:
      raise ValueError("`dlr_loss` needs `y` or `logits_clean`. Received: y=None, "
                       "logits_clean=None")
    y = tf.argmax(logits_clean, axis=-1, output_type=tf.int32)
  top = tf.math.top_k(logits_adv, k=3).values
  return -margin(logits_adv, y) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits_adv, y, target):
  """Per-example targeted DLR (APGD-T; Croce & Hein 2020, eq. 7).

  With ``t`` the target class and the logits sorted decreasingly::

    DLR_T(z, y, t) = - (z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)

  Ascending it pushes ``z_t`` above ``z_y``; it is shift and scale invariant
  like `dlr_loss`. Needs ``d >= 4``.

  Args:
    logits_adv: ``[batch, d]`` logits at the perturbed input.
    y: integer labels ``[batch]`` or one-hot ``[batch, d]`` (the true class).
    target: integer target classes ``[batch]``.

  Returns:
    Float tensor ``[batch]``.

  Raises:
    ValueError: for fewer than 4 classes.

  Example:

  >>> z = tf.constant([[4.0, 2.0, 1.0, 0.0]])  # -(4 - 2) / (4 - 0.5)
  >>> round(float(targeted_dlr_loss(z, tf.constant([0]), tf.constant([1]))[0]), 4)
  -0.5714
  """
  logits_adv = tf.convert_to_tensor(logits_adv)
  _require_classes(logits_adv, 4, "targeted_dlr_loss")
  y = _integer_labels(y, logits_adv)
  target = tf.cast(tf.reshape(target, [-1]), tf.int32)
  z_y = tf.gather(logits_adv, y, batch_dims=1)
  z_t = tf.gather(logits_adv, target, batch_dims=1)
  top = tf.math.top_k(logits_adv, k=4).values
  return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)
