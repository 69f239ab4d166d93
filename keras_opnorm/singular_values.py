"""Top-k singular values and vectors of a network's Jacobian, per example.

For ``f: R^n -> R^d`` (input to logits) and each example ``x`` of a batch,
``J = J_f(x)`` is ``d x n`` and has at most ``min(d, n)`` non-zero singular
values ``sigma_1 >= sigma_2 >= ...``: ``J = sum_i sigma_i l_i r_i^T``. The
top right singular vector ``r_1`` is the fixed point of the (2,2) power
method and of l2 PGD on the l2 logit distance (Roth, Kilcher & Hofmann,
NeurIPS 2020, https://arxiv.org/abs/1906.01527); the spectrum is what
adversarial training and data-dependent spectral norm regularisation damp.
"""

from typing import NamedTuple

import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import _compiled
from keras_opnorm import _jacobian_matrix
from keras_opnorm import jacobian
from keras_opnorm import logits_view

__all__ = ["SingularValuesResult", "singular_values", "METHODS"]

METHODS = ("auto", "exact", "subspace")
# Extra directions carried by subspace iteration: the k-th value then
# converges at the rate (sigma_{k+OVERSAMPLE+1} / sigma_k)^(2K).
OVERSAMPLE = 5


class SingularValuesResult(NamedTuple):
  """The result of `singular_values`.

  Attributes:
    values: ``[batch, k]``: ``sigma_1 >= ... >= sigma_k >= 0`` per example.
    vectors: ``[batch, k, *x.shape[1:]]``: the right singular vectors
      ``r_i`` (unit l2 norm, sign arbitrary), ``J r_i = sigma_i l_i``.
    left: ``[batch, k, d]``: the left singular vectors ``l_i`` (unit l2).
  """
  values: tf.Tensor
  vectors: tf.Tensor
  left: tf.Tensor


def _to_vectors(right, k, x):
  """``[b, n, m]`` columns -> ``[b, k, *x.shape[1:]]`` (first ``k``)."""
  right = tf.linalg.matrix_transpose(right[:, :, :k])
  return tf.reshape(tf.cast(right, x.dtype), [-1, k] + x.shape[1:].as_list())


def _stack_copies(v):
  """``[b, m, n]`` -> ``[m * b, n]`` (copy-major, as `tf.tile` stacks ``x``)."""
  return tf.reshape(tf.transpose(v, [1, 0, 2]), [-1, v.shape[-1]])


def _unstack_copies(t, m):
  """``[m * b, c]`` -> ``[b, c, m]``."""
  return tf.transpose(tf.reshape(t, [m, -1, t.shape[-1]]), [1, 2, 0])


@tf.autograph.experimental.do_not_convert
def subspace_iteration(fn, x, basis, *, num_iters, jvp_mode="forward"):
  """Block power (subspace) iteration on ``J^T J``, then Rayleigh-Ritz.

  With ``V_0 = basis`` (``[b, n, m]``, orthonormal columns)::

    V_k = orth(J^T J V_{k-1})      (QR per example)
    J V_K = A diag(s) B^T          (SVD of the small d x m matrix)

  gives ``sigma_i ~ s_i``, right vectors ``V_K B`` and left vectors ``A``.
  Each iteration is one forward pass (tangents ``J V``) and one backward
  pass (``J^T (J V)``) of ``m`` stacked copies of the batch.

  Returns:
    ``(s [b, m], left [b, d, m], right [b, n, m])``.
  """
  m = basis.shape[-1]
  n = _jacobian_matrix.num_features(x)
  x_rep = tf.tile(x, [m] + [1] * (x.shape.rank - 1))
  as_input = lambda v: tf.reshape(_stack_copies(tf.linalg.matrix_transpose(v)), tf.shape(x_rep))

  def body(i, basis):
    _, _, g = _jacobian_matrix.jvp_and_vjp(fn, x_rep, as_input(basis), lambda jv: jv, jvp_mode)
    w = _unstack_copies(tf.reshape(g, [-1, n]), m)  # [b, n, m]
    q, _ = tf.linalg.qr(tf.stop_gradient(w))
    # A zero J^T J V (J = 0) keeps the previous basis.
    alive = tf.reduce_max(tf.abs(w), axis=[1, 2]) > 0
    return i + 1, tf.where(alive[:, None, None], q, basis)

  _, basis = tf.while_loop(lambda i, _: i < num_iters, body, (tf.constant(0), basis),
                           maximum_iterations=num_iters)
  _, jv = jacobian.jvp(fn, x_rep, as_input(basis), mode=jvp_mode)
  s, left, small_right = _jacobian_matrix.thin_svd(_unstack_copies(jv, m))  # J V = A S B^T
  return s, left, tf.linalg.matmul(basis, tf.cast(small_right, basis.dtype))


@_compiled.compiled_when_eager(tensor_args=("x", "v0"))
@tf.autograph.experimental.do_not_convert
@logits_view.accepts_views(returns="vectors", like_x=("v0",))
def singular_values(f, x, k=1, *, num_iters=20, method="auto", training=False, v0=None,
                    jvp_mode="forward", exact_max_dim=256, seed=None):
  """The top-``k`` singular values and vectors of ``J_f(x)``, per example.

  ``J = L diag(sigma) R^T`` (thin SVD) with ``d`` logits and ``n`` inputs,
  two ways:

  * ``method='exact'``: build ``J [batch, d, n]`` from ``min(d, n)`` batched
    products (``d`` backward passes for the rows ``J^T e_i``, or ``n``
    forward-mode columns), QR-factorise it and take the SVD of the small
    ``min(d, n)``-square factor: exact to float precision. ``num_iters``
    and ``v0`` are unused.
  * ``method='subspace'``: block power iteration on ``J^T J`` with
    ``m = min(k + 5, d, n)`` orthonormalised directions (QR per example),
    ``num_iters`` iterations, then Rayleigh-Ritz (the SVD of ``J V``): the
    ``i``-th value converges at the rate ``(sigma_{m+1} / sigma_i)^(2K)``.
  * ``method='auto'`` (default): ``'exact'`` when ``min(d, n) <=
    exact_max_dim`` (always for a classifier: ``d`` = classes), else
    ``'subspace'``.

  ``rank(J) <= min(d, n)``, hence ``k <= min(d, n)``. Singular vectors are
  unique up to sign (and up to rotation within repeated values). All
  outputs are constants (no gradient). Runs inside ``tf.function`` with or
  without ``jit_compile=True``.

  Args:
    f: a Keras model (called with ``training=training``) or a callable from
      ``[batch, ...]`` to logits ``[batch, d]``.
    x: the inputs ``[batch, ...]`` (static non-batch shape); float16 /
      bfloat16 are computed in float32.
    k: number of singular triplets, ``1 <= k <= min(d, n)``. Defaults to `1`.
    num_iters: subspace iterations. Defaults to `20`.
    method: ``'auto'``, ``'exact'`` or ``'subspace'``. Defaults to `'auto'`.
    training: the ``training`` flag for Keras models. Defaults to `False`.
    v0: optional start for subspace iteration, shaped like ``x`` (one
      direction) or ``[batch, j, *x.shape[1:]]`` with ``j <= m`` (e.g. the
      previous ``vectors``); completed with random directions. Defaults to
      `None`.
    jvp_mode: ``'forward'`` or ``'double_backward'`` (see `jacobian.jvp`).
      Defaults to `'forward'`.
    exact_max_dim: largest ``min(d, n)`` for which ``'auto'`` builds the
      exact Jacobian. Defaults to `256`.
    seed: optional op seed of the random start. Defaults to `None`.

  Returns:
    A `SingularValuesResult` ``(values [batch, k], vectors [batch, k,
    *x.shape[1:]], left [batch, k, d])``.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``k`` outside ``[1, min(d, n)]``, non-positive
      ``num_iters`` / ``exact_max_dim``, an unknown ``method`` / ``jvp_mode``,
      ``v0`` of the wrong shape, ``f`` not returning ``[batch, d]`` logits or
      not differentiable in ``x``.
    TypeError: non-integer counts, an integer ``x``, a non-callable ``f``.

  Example:

  >>> w = tf.constant([[3.0, 0.0], [0.0, -4.0], [0.0, 0.0]])  # J = W^T
  >>> result = singular_values(lambda x: tf.matmul(x, w), tf.zeros([1, 3]), k=2)
  >>> result.values.numpy().round(4).tolist()
  [[4.0, 3.0]]
  >>> result.vectors.shape, result.left.shape
  (TensorShape([1, 2, 3]), TensorShape([1, 2, 2]))
  """
  return _singular_values(
      f, x, k, num_iters=num_iters, method=method, training=training, v0=v0,
      jvp_mode=jvp_mode, exact_max_dim=exact_max_dim, seed=seed)


# Not converted by AutoGraph (no Python control flow on tensors), which would
# otherwise cost seconds at the first trace.
@tf.autograph.experimental.do_not_convert
def _singular_values(f, x, k, *, num_iters, method, training, v0, jvp_mode,
                     exact_max_dim, seed):
  """`singular_values` without AutoGraph."""
  k = _checks.positive_int(k, "k")
  num_iters = _checks.positive_int(num_iters, "num_iters")
  exact_max_dim = _checks.positive_int(exact_max_dim, "exact_max_dim")
  _checks.one_of(method, METHODS, "method")
  _checks.one_of(jvp_mode, jacobian.JVP_MODES, "jvp_mode")
  x = _checks.float_input(x, "x")
  n = _jacobian_matrix.num_features(x)
  fn = jacobian.as_logits_fn(f, training)
  d = _jacobian_matrix.num_logits(fn, x)
  if k > min(d, n):
    raise ValueError(
        f"`k` must be at most min(d, n) = min({d}, {n}) = {min(d, n)}, the "
        f"largest possible rank of the {d} x {n} Jacobian. Received: k={k}")
  m = min(k + OVERSAMPLE, d, n)
  if v0 is not None:
    v0 = _check_subspace_start(v0, x, m)

  exact = method == "exact" or (method == "auto" and min(d, n) <= exact_max_dim)
  if exact:
    jac = tf.stop_gradient(_jacobian_matrix.full_jacobian(fn, x, d, n, mode=jvp_mode))
    s, left, right = _jacobian_matrix.thin_svd(jac)
  else:
    basis = tf.random.normal(tf.stack([tf.shape(x)[0], n, m]), dtype=x.dtype, seed=seed)
    if v0 is not None:
      j = v0.shape[1]
      given = tf.linalg.matrix_transpose(tf.reshape(v0, [-1, j, n]))
      basis = tf.concat([given, basis[:, :, j:]], axis=2)
    basis, _ = tf.linalg.qr(basis)
    s, left, right = subspace_iteration(fn, x, basis, num_iters=num_iters, jvp_mode=jvp_mode)
  values = _checks.nan_where_nonfinite(tf.stop_gradient(s[:, :k]), x)  # XLA: no assertions.
  vectors = tf.stop_gradient(_to_vectors(right, k, x))
  left = tf.stop_gradient(tf.linalg.matrix_transpose(left[:, :, :k]))
  return SingularValuesResult(values=values, vectors=vectors, left=left)


def _check_subspace_start(v0, x, m):
  """``v0`` as ``[batch, j, *x.shape[1:]]`` with ``1 <= j <= m``."""
  v0 = tf.convert_to_tensor(v0)
  if not v0.dtype.is_floating:
    raise TypeError(f"`v0` must be a floating-point tensor. Received: v0 with "
                    f"dtype={v0.dtype.name}")
  v0 = tf.cast(v0, x.dtype)
  if v0.shape.rank == x.shape.rank:
    v0 = v0[:, tf.newaxis]
  ok = (v0.shape.rank == x.shape.rank + 1 and v0.shape[1] is not None
        and 1 <= v0.shape[1] <= m
        and v0.shape[2:].is_compatible_with(x.shape[1:])
        and tf.TensorShape(v0.shape[:1]).is_compatible_with(x.shape[:1]))
  if not ok:
    raise ValueError(
        f"`v0` must be shaped like `x` {x.shape} or [batch, j, *x.shape[1:]] "
        f"with 1 <= j <= {m}. Received: v0 with shape={v0.shape}")
  return v0
