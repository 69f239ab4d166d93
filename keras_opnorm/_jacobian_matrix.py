"""Private linear-algebra machinery shared by `operator_norm` and `singular_values`.

* `jvp_and_vjp`: ``J v`` and ``J^T u(J v)`` in one forward and one backward
  pass (the inner step of every power method here).
* `full_jacobian`: the whole per-example Jacobian ``[batch, d, n]`` from
  ``d`` reverse-mode or ``n`` forward-mode products, whichever is fewer,
  batched by tiling the input (no ``pfor``, so it compiles with XLA and is
  differentiable by an outer tape).
* `thin_svd`: per-example thin SVD through a QR factorisation first, so that
  only a small ``min(d, n)``-square matrix reaches the SVD routine (XLA's SVD
  of a tall ``10 x 3072`` matrix is ~100x slower than QR + a ``10 x 10`` SVD).
* `safe_norm`: an lq norm whose gradient is finite (0) at ``z = 0``.
"""

import math

import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import jacobian
from keras_opnorm import norms

# Copies of the batch pushed through the network at once when the Jacobian
# is built exactly (bounds memory to ~this many forward/backward passes).
MAX_COPIES_PER_PASS = 32


def num_features(x, name="x"):
  """``n = prod(x.shape[1:])`` as a Python int (static shapes required)."""
  dims = x.shape[1:]
  if not dims.is_fully_defined():
    raise ValueError(
        f"`{name}` must have a static shape apart from the batch axis. "
        f"Received: {name} with shape={x.shape}")
  return int(math.prod(dims.as_list()))


def per_example(mask, like):
  """Reshapes a ``[batch]`` tensor to broadcast against ``like``."""
  return tf.reshape(mask, [-1] + [1] * (like.shape.rank - 1))


def safe_norm(z, q):
  """Per-example ``||z||_q`` with a finite gradient (0) where ``z = 0``."""
  if q == 2.0 or q == 1.0 or math.isinf(q):
    return norms.lp_norm(z, q)  # Already safe at 0 (see norms.lp_norm).
  nonzero = tf.reduce_max(tf.abs(z), axis=list(range(1, z.shape.rank))) > 0
  safe = tf.where(per_example(nonzero, z), z, tf.ones_like(z))
  return tf.where(nonzero, norms.lp_norm(safe, q), tf.zeros_like(nonzero, z.dtype))


def jvp_and_vjp(fn, x, v, u_of_jv, mode="forward"):
  """Returns ``(J v, u, J^T u)`` with ``u = u_of_jv(J v)``, in one forward pass.

  The forward-mode tangent ``J v`` is carried along the same forward pass
  that the reverse-mode tape records, so one power iteration costs one
  forward pass (with tangents) and one backward pass. ``mode =
  'double_backward'`` gets ``J v = d/dz <J^T z, v>`` from the same recorded
  forward pass instead.
  """
  if mode == "forward":
    with tf.autodiff.ForwardAccumulator(x, tf.cast(v, x.dtype)) as acc:
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        y = fn(x)
    jv = acc.jvp(y)
    if jv is None:
      raise _checks.not_differentiable(fn, "forward-mode derivative")
    jv = tf.cast(jv, y.dtype)
  else:
    with tf.GradientTape(watch_accessed_variables=False, persistent=True) as tape:
      tape.watch(x)
      y = fn(x)
    jv = jacobian.double_backward_jvp(fn, tape, y, x, v)
  u = u_of_jv(jv)
  g = tape.gradient(y, x, output_gradients=tf.cast(u, y.dtype))
  if g is None:
    raise _checks.not_differentiable(fn)
  return jv, u, tf.cast(g, x.dtype)


def _chunks(count):
  """Splits ``count`` products into equal passes of at most MAX_COPIES_PER_PASS."""
  num = -(-count // MAX_COPIES_PER_PASS)
  size = -(-count // num)
  return num, size


def _tile(x, copies):
  return tf.tile(x, [copies] + [1] * (x.shape.rank - 1))


def _stacked(count, product):
  """``[count, batch, ...]`` from ``product(indices) -> [len(indices), batch, ...]``.

  One pass when ``count`` fits in a pass, else a ``tf.while_loop`` over
  equal chunks (the last one padded with repeated indices and trimmed).
  """
  num, size = _chunks(count)
  if num == 1:
    return product(tf.range(count))

  def body(i, ta):
    idx = tf.minimum(i * size + tf.range(size), count - 1)
    return i + 1, ta.write(i, product(idx))

  first = product(tf.range(size))  # Traced once for the element shape/dtype.
  ta = tf.TensorArray(first.dtype, size=num, element_shape=first.shape)
  ta = ta.write(0, first)
  _, ta = tf.while_loop(lambda i, _: i < num, body, (tf.constant(1), ta))
  stacked = ta.concat()  # [num * size * ?] along axis 0 of each element
  return stacked[:count]


def full_jacobian(fn, x, d, n, mode="forward"):
  """The per-example Jacobian ``J [batch, d, n]`` of ``fn`` at ``x``, exactly.

  Rows ``J^T e_i`` from ``d`` reverse-mode products when ``d <= n``, else
  columns ``J e_j`` from ``n`` forward-mode products. The products are
  batched by stacking copies of the batch (``MAX_COPIES_PER_PASS`` at a
  time): the examples of a batch do not interact in inference mode, and in
  training mode every copy of the whole batch has the batch's statistics.
  """
  batch = tf.shape(x)[0]
  feature_shape = x.shape[1:].as_list()

  if d <= n:
    def rows(idx):
      c = tf.shape(idx)[0]
      u = tf.repeat(tf.one_hot(idx, d, dtype=tf.float32), batch, axis=0)
      _, g = jacobian.vjp(fn, _tile(x, c), u)
      return tf.reshape(g, [-1, batch, n])  # [c, batch, n]
    stacked = _stacked(d, rows)  # [d, batch, n]
    # Reshape restores the static d and n lost by the dynamic-batch reshapes.
    return tf.reshape(tf.transpose(stacked, [1, 0, 2]), [batch, d, n])

  def cols(idx):
    c = tf.shape(idx)[0]
    e = tf.reshape(tf.one_hot(idx, n, dtype=x.dtype), [-1] + feature_shape)
    _, jv = jacobian.jvp(fn, _tile(x, c), tf.repeat(e, batch, axis=0), mode=mode)
    return tf.reshape(jv, [-1, batch, d])  # [c, batch, d]
  stacked = _stacked(n, cols)  # [n, batch, d]
  return tf.reshape(tf.transpose(stacked, [1, 2, 0]), [batch, d, n])


def thin_svd(jac):
  """Per-example thin SVD ``J = L diag(s) R^T`` of ``jac [batch, d, n]``.

  With ``m = min(d, n)``: QR-factorise the tall side first (``J^T = Q R``
  when ``d <= n``, so ``J = R^T Q^T``), then take the SVD of the small
  ``m x m`` factor: ``R^T = A diag(s) B^T`` gives ``L = A`` and ``R = Q B``.
  Accurate to float precision for every singular value (no Gram matrix).

  Returns:
    ``(s [batch, m] descending, left [batch, d, m], right [batch, n, m])``.
  """
  d, n = jac.shape[-2], jac.shape[-1]
  if d <= n:
    q, r = tf.linalg.qr(tf.linalg.matrix_transpose(jac))  # [b,n,d], [b,d,d]
    s, a, b = tf.linalg.svd(tf.linalg.matrix_transpose(r))
    return s, a, tf.linalg.matmul(q, b)
  q, r = tf.linalg.qr(jac)  # [b,d,n], [b,n,n]
  s, a, b = tf.linalg.svd(r)
  return s, tf.linalg.matmul(q, a), b


def num_logits(fn, x):
  """The static number of logits ``d`` of ``fn`` at ``x``.

  Calls ``fn`` once; inside a ``tf.function`` the unused forward pass is
  pruned from the graph, only its static shape is used.
  """
  d = fn(x).shape[-1]
  if d is None:
    raise ValueError(
        "`f` must return logits with a static number of classes d ([batch, d]). "
        "Received: f(x) with unknown d")
  return int(d)


def top_right_singular_vector(jac):
  """Per-example top right singular vector ``[batch, n]`` of ``jac [batch, d, n]``.

  From the eigenvector ``a`` of the largest eigenvalue of the small Gram
  matrix: ``J J^T a = sigma_1^2 a`` gives ``r_1 = J^T a / ||J^T a||`` when
  ``d <= n``; else ``r_1`` is the top eigenvector of ``J^T J``. ``sigma_1^2``
  is the largest eigenvalue, so its relative accuracy is the float
  precision (only the small singular values lose accuracy in a Gram matrix,
  which is why `thin_svd` avoids it), and a batched ``min(d, n)``-square
  ``eigh`` is several times cheaper than an SVD. ``0`` where ``J = 0``.
  """
  d, n = jac.shape[-2], jac.shape[-1]
  if d <= n:
    _, a = tf.linalg.eigh(tf.linalg.matmul(jac, jac, transpose_b=True))
    return norms.normalize(tf.linalg.matvec(jac, a[:, :, -1], transpose_a=True), 2.0)
  _, b = tf.linalg.eigh(tf.linalg.matmul(jac, jac, transpose_a=True))
  return b[:, :, -1]
