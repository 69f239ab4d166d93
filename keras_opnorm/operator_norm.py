"""Data-dependent (p,q) operator norms of a network's input-output Jacobian.

For a network ``f: R^n -> R^d`` (input to logits) and one example ``x``,
``J = J_f(x)`` is the ``d x n`` Jacobian and

    ||J||_{p,q} = max_{||v||_p <= 1} ||J v||_q .

Roth, Kilcher & Hofmann, "Adversarial Training is a Form of Data-dependent
Operator Norm Regularization", NeurIPS 2020 (https://arxiv.org/abs/1906.01527)
show that lp-PGD on the lq logit distance is the (p,q) power method on ``J``
(Boyd 1974; Higham 1992)::

    u_k = s_{q*}(J v_{k-1})        v_k = s_p(J^T u_k)        ||J v_k||_q

which `operator_norm` runs batched (every example its own ``J``), together
with the closed forms that exist for some pairs.
"""

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import _compiled
from keras_opnorm import _cost
from keras_opnorm import _jacobian_matrix
from keras_opnorm import jacobian
from keras_opnorm import logits_view
from keras_opnorm import norms

__all__ = ["OperatorNormResult", "operator_norm", "METHODS"]

METHODS = ("auto", "power", "exact")
_INF = float("inf")


class OperatorNormResult(NamedTuple):
  """The result of `operator_norm`.

  Attributes:
    norm: ``[batch]``: ``||J v||_q`` per example, the (p,q) operator norm
      (exactly, or a lower bound: see `operator_norm`).
    v: shaped like ``x``: the maximising input direction, ``||v||_p = 1``
      per example. Held constant (``stop_gradient``).
    u: ``[batch, d]``: the output direction ``s_{q*}(J v)`` (0 where
      ``J v = 0``). Held constant.
    exact: Python bool, ``True`` when a closed form gave ``norm``.
  """
  norm: tf.Tensor
  v: tf.Tensor
  u: tf.Tensor
  exact: bool


def closed_form(p, q):
  """Names the closed form of ``||J||_{p,q}``, or ``None`` if there is none.

  * ``'svd'``: ``(2, 2)``, the largest singular value of ``J``.
  * ``'cols'``: ``(1, q)``, the largest column lq norm ``max_j ||J e_j||_q``
    (the l1 ball is the convex hull of the ``+-e_j``).
  * ``'rows'``: ``(p, inf)``, the largest row lp* norm
    ``max_i ||J^T e_i||_{p*}`` (by duality, row by row).
  * ``'vertices'``: ``(p, 1)`` for ``p > 1``, ``max_{u in {-1, 1}^d}
    ||J^T u||_{p*}``: by duality ``||J v||_1 = max_{||u||_inf <= 1} <u, J v>``,
    so ``||J||_{p,1} = max_{||u||_inf <= 1} ||J^T u||_{p*}``, a convex function
    of ``u`` whose maximum over the cube is at a vertex; ``u`` and ``-u``
    give the same value, so ``2^(d-1)`` sign vectors are enumerated. NP-hard
    in general (Rohn 2000), but exact and cheap for a classifier's few
    logits: `operator_norm` takes it for ``d <= MAX_VERTEX_LOGITS``.

  Args:
    p: input exponent in ``[1, inf]``.
    q: output exponent in ``[1, inf]``.

  Returns:
    ``'svd'``, ``'cols'``, ``'rows'``, ``'vertices'`` or ``None``.
  """
  p = norms.validate_exponent(p, "p")
  q = norms.validate_exponent(q, "q")
  if p == 1.0:
    return "cols"
  if math.isinf(q):
    return "rows"
  if p == 2.0 and q == 2.0:
    return "svd"
  if q == 1.0:
    return "vertices"
  return None


# method='auto' takes the exact (2, 2) path while it costs at most this many
# times the power method (`_cost.cheaper_path`): see `operator_norm`.
AUTO_EXACTNESS_PREMIUM = 2.0

# Most logits d for which the (p, 1) norm enumerates the 2^(d-1) sign vectors.
MAX_VERTEX_LOGITS = 12
# Sign vectors scored per product in that enumeration (memory: batch x this x n).
_VERTEX_CHUNK = 64


def _sign_vertices(d):
  """``[2^(d-1), d]`` float32: every vector of ``{-1, 1}^d`` with ``u_0 = 1``."""
  k = 2 ** (d - 1)
  bits = (np.arange(k)[:, None] >> np.arange(d - 1)[None, :]) & 1
  return np.concatenate([np.ones((k, 1)), 1.0 - 2.0 * bits], axis=1).astype(np.float32)


def _best_vertex(jac, p):
  """``[b, n]``: ``J^T u*`` for the sign vector ``u*`` maximising ``||J^T u||_{p*}``."""
  d = jac.shape[1]
  signs = tf.constant(_sign_vertices(d), dtype=jac.dtype)  # [k, d]
  ps = norms.dual_exponent(p)
  best_val, best_g = None, None
  for start in range(0, signs.shape[0], _VERTEX_CHUNK):
    g = tf.einsum("bdn,kd->bkn", jac, signs[start:start + _VERTEX_CHUNK])  # [b, c, n]
    vals = _flat_norm(g, ps)  # [b, c]
    i = tf.argmax(vals, axis=1, output_type=tf.int32)
    val = tf.gather(vals, i, axis=1, batch_dims=1)
    g = tf.gather(g, i, axis=1, batch_dims=1)  # [b, n]
    if best_val is None:
      best_val, best_g = val, g
    else:
      better = val > best_val
      best_val = tf.where(better, val, best_val)
      best_g = tf.where(better[:, None], g, best_g)
  return best_g


def _unit_basis_vector(x):
  """``e_0`` shaped like ``x``: a unit vector in every lp norm."""
  n = _jacobian_matrix.num_features(x)
  e = tf.one_hot(tf.zeros([tf.shape(x)[0]], tf.int32), n, dtype=x.dtype)
  return tf.reshape(e, tf.shape(x))


def _exact(fn, x, p, q, d, n, form, jvp_mode):
  """``(J v, v)`` at the maximiser ``v`` of the closed form ``form``."""
  jac = _jacobian_matrix.full_jacobian(fn, x, d, n, mode=jvp_mode)  # [b, d, n]
  jac_const = tf.stop_gradient(jac)
  batch = tf.shape(x)[0]
  if form == "svd":
    v = _jacobian_matrix.top_right_singular_vector(jac_const)
  elif form == "cols":
    cols = _per_column_norms(jac_const, q)  # [b, n]
    v = tf.one_hot(tf.argmax(cols, axis=1), n, dtype=jac.dtype)
  elif form == "rows":
    rows = _per_row_norms(jac_const, norms.dual_exponent(p))  # [b, d]
    best = tf.gather(jac_const, tf.argmax(rows, axis=1), axis=1, batch_dims=1)
    v = norms.steepest_ascent(best, p)  # [b, n]
  else:  # 'vertices': v = s_p(J^T u*) attains <u*, J v> = ||J^T u*||_{p*}.
    v = norms.steepest_ascent(_best_vertex(jac_const, p), p)  # [b, n]
  v = tf.reshape(tf.cast(v, x.dtype), tf.shape(x))
  # J = 0 leaves s_p(0) = 0: fall back to e_0, still a unit vector.
  dead = norms.lp_norm(v, _INF) <= 0
  v = tf.where(_jacobian_matrix.per_example(dead, v), _unit_basis_vector(x), v)
  v = tf.stop_gradient(v)
  # ||J v||_q with v held constant: differentiable in x (and the weights)
  # through J, with the gradient of the max (envelope theorem).
  jv = tf.linalg.matvec(jac, tf.reshape(tf.cast(v, jac.dtype), [batch, n]))
  return jv, v


def _per_column_norms(jac, q):
  """``[b, n]``: ``||J e_j||_q`` for every column ``j``."""
  cols = tf.transpose(jac, [0, 2, 1])  # [b, n, d]
  flat = tf.reshape(cols, [-1, tf.shape(cols)[2]])
  return tf.reshape(norms.lp_norm(flat, q), tf.shape(cols)[:2])


def _per_row_norms(jac, ps):
  """``[b, d]``: ``||J^T e_i||_{p*}`` for every row ``i``."""
  flat = tf.reshape(jac, [-1, tf.shape(jac)[2]])
  return tf.reshape(norms.lp_norm(flat, ps), tf.shape(jac)[:2])


# Most singular-vector and row starts of the explicit-Jacobian ascent (each).
MAX_DETERMINISTIC_STARTS = 16
# Best power-method fixed points that the vertex search (p = inf) refines.
VERTEX_SEARCH_STARTS = 2


def _flat_steepest_ascent(g, p):
  """`norms.steepest_ascent` over the last axis of ``g [k, b, m]``."""
  shape = tf.shape(g)
  return tf.reshape(norms.steepest_ascent(tf.reshape(g, [-1, g.shape[-1]]), p), shape)


def _flat_norm(z, q):
  """``||z||_q`` over the last axis of ``z [..., m]`` (shape ``[...]``)."""
  return tf.reshape(norms.lp_norm(tf.reshape(z, [-1, z.shape[-1]]), q), tf.shape(z)[:-1])


def _matrix_starts(jac, v0, p, num_restarts, seed):
  """``[k, b, n]`` unit lp starts of the ascent on the explicit ``jac [b, d, n]``.

  ``v0`` (if given), then ``s_p(r_i)`` for the top ``min(d, n, 16)`` right
  singular vectors ``r_i`` of ``J`` (from the eigenvectors of the small Gram
  matrix), ``s_p(J^T e_i)`` for the ``min(d, 16)`` rows of largest lp* norm
  (the maximisers of ``|<J_i, v>|``), then ``num_restarts`` random
  directions. A start without a direction (``J = 0``) becomes ``e_0``.
  """
  d, n = jac.shape[-2], jac.shape[-1]
  batch = tf.shape(jac)[0]
  m = min(d, n, MAX_DETERMINISTIC_STARTS)
  if d <= n:
    _, a = tf.linalg.eigh(tf.linalg.matmul(jac, jac, transpose_b=True))  # Ascending.
    right = tf.linalg.matmul(jac, a[:, :, ::-1][:, :, :m], transpose_a=True)  # [b, n, m]
  else:
    _, b = tf.linalg.eigh(tf.linalg.matmul(jac, jac, transpose_a=True))
    right = b[:, :, ::-1][:, :, :m]
  right = tf.transpose(right, [2, 0, 1])  # [m, b, n]
  r = min(d, MAX_DETERMINISTIC_STARTS)
  rows = _per_row_norms(jac, norms.dual_exponent(p))  # [b, d]
  top = tf.math.top_k(rows, k=r).indices  # [b, r]
  best_rows = tf.transpose(tf.gather(jac, top, axis=1, batch_dims=1), [1, 0, 2])  # [r, b, n]
  starts = [_flat_steepest_ascent(tf.concat([right, best_rows], axis=0), p)]
  if v0 is not None:
    starts.insert(0, tf.reshape(norms.normalize(v0, p), [1, batch, n]))
  starts.append(tf.reshape(norms.random_direction(
      [num_restarts * batch, n], p, dtype=jac.dtype, seed=seed), [num_restarts, batch, n]))
  starts = tf.concat(starts, axis=0)
  e0 = tf.one_hot(tf.zeros([batch], tf.int32), n, dtype=jac.dtype)
  dead = tf.reduce_max(tf.abs(starts), axis=-1, keepdims=True) <= 0
  return tf.where(dead, e0, starts)


def _matrix_power_method(jac, v, p, q, *, num_iters, tol):
  """The (p,q) power method on the explicit ``jac [b, d, n]`` from ``v [k, b, n]``.

  Same iteration and stopping rule as `power_method`, as small batched
  matrix products: ``u = s_{q*}(J v)``, ``v <- s_p(J^T u)`` (kept where
  ``J^T u = 0``).
  """
  qs = norms.dual_exponent(q)

  def step(v):
    jv = tf.einsum("bdn,kbn->kbd", jac, v)
    g = tf.einsum("bdn,kbd->kbn", jac, _flat_steepest_ascent(jv, qs))
    alive = tf.reduce_max(tf.abs(g), axis=-1, keepdims=True) > 0
    return tf.where(alive, _flat_steepest_ascent(g, p), v), jv

  def body(i, v, prev, change):
    v, jv = step(v)
    norm = _flat_norm(jv, q)
    if tol is None:
      return i + 1, v, prev, change
    rel = tf.abs(norm - prev) / tf.maximum(norm, 1e-30)
    return i + 1, v, norm, tf.reduce_max(rel)

  prev0 = -tf.ones(tf.shape(v)[:2], v.dtype)
  stop = -1.0 if tol is None else tol  # No tolerance: the change is always > -1.
  _, v, _, _ = tf.while_loop(
      lambda i, v, prev, change: tf.logical_and(i < num_iters, change > stop),
      body, (tf.constant(0), v, prev0, tf.constant(_INF, v.dtype)),
      maximum_iterations=num_iters)
  return v


def _vertex_search(jac, v, q):
  """Greedy single-coordinate ascent of ``||J v||_q`` over the cube (p = inf).

  From each ``v [k, b, n]`` (``||v||_inf <= 1``), repeatedly moves the one
  coordinate ``v_j -> t in {-1, +1}`` that increases ``||J v||_q`` the most
  (``J v -> J v + (t - v_j) J e_j``, every move scored exactly), until no
  move increases it by more than a relative ``1e-6`` or after ``n`` moves.
  The result is a vertex that no single flip improves (a 1-opt local
  maximum), at least as good as the start.
  """
  n = jac.shape[-1]
  cols = tf.transpose(jac, [0, 2, 1])  # [b, n, d]

  def best_move(v):
    jv = tf.einsum("bdn,kbn->kbd", jac, v)
    current = _flat_norm(jv, q)  # [k, b]
    values, indices = [], []
    for t in (-1.0, 1.0):
      delta = t - v  # [k, b, n]
      if q == 2.0:  # ||z + c a||^2 = ||z||^2 + 2 c <z, a> + c^2 ||a||^2: no [.., n, d].
        za = tf.einsum("kbd,bnd->kbn", jv, cols)
        aa = tf.reduce_sum(tf.square(cols), axis=-1)[tf.newaxis]
        sq = tf.square(current)[..., tf.newaxis] + 2.0 * delta * za + tf.square(delta) * aa
        val = tf.sqrt(tf.maximum(sq, 0.0))
      else:
        val = _flat_norm(jv[:, :, tf.newaxis, :] + delta[..., tf.newaxis] * cols[tf.newaxis],
                         q)  # [k, b, n]
      values.append(tf.reduce_max(val, axis=-1))
      indices.append(tf.argmax(val, axis=-1, output_type=tf.int32))
    plus = values[1] > values[0]
    value = tf.where(plus, values[1], values[0])
    index = tf.where(plus, indices[1], indices[0])
    target = tf.where(plus, 1.0, -1.0)
    improves = value > current * (1.0 + 1e-6)
    return improves, index, tf.cast(target, v.dtype)

  def body(i, v, _):
    improves, index, target = best_move(v)
    hot = tf.one_hot(index, n, dtype=v.dtype) * tf.cast(improves, v.dtype)[..., tf.newaxis]
    v = v + hot * (target[..., tf.newaxis] - v)
    return i + 1, v, tf.reduce_any(improves)

  _, v, _ = tf.while_loop(lambda i, v, go: tf.logical_and(go, i < n), body,
                          (tf.constant(0), v, tf.constant(True)), maximum_iterations=n)
  return v


def _matrix_ascent(fn, x, p, q, d, n, v0, *, num_iters, num_restarts, tol, jvp_mode,
                   seed):
  """``(J v, v)``: the best of a multi-start ascent on the exact Jacobian.

  The starts of `_matrix_starts`, ``num_iters`` (p,q) power iterations each
  (`_matrix_power_method`), then for ``p = inf`` the greedy vertex search
  (`_vertex_search`) from the `VERTEX_SEARCH_STARTS` best fixed points; the
  best ``||J v||_q`` is kept per example.
  """
  jac = _jacobian_matrix.full_jacobian(fn, x, d, n, mode=jvp_mode)  # [b, d, n]
  jac_const = tf.stop_gradient(jac)
  flat_v0 = None if v0 is None else tf.reshape(tf.cast(v0, jac.dtype), [-1, n])
  v = _matrix_starts(jac_const, flat_v0, p, num_restarts, seed)
  v = _matrix_power_method(jac_const, v, p, q, num_iters=num_iters, tol=tol)
  if math.isinf(p):
    # From the best few fixed points only: it costs more than all the power
    # iterations (up to n moves, each scoring 2n candidates).
    values = _flat_norm(tf.einsum("bdn,kbn->kbd", jac_const, v), q)  # [k, b]
    t = min(VERTEX_SEARCH_STARTS, v.shape[0])
    top = tf.math.top_k(tf.transpose(values), k=t).indices  # [b, t]
    v = tf.transpose(tf.gather(tf.transpose(v, [1, 0, 2]), top, axis=1, batch_dims=1),
                     [1, 0, 2])  # [t, b, n]
    v = _vertex_search(jac_const, v, q)
  values = _flat_norm(tf.einsum("bdn,kbn->kbd", jac_const, v), q)  # [k, b]
  best = tf.argmax(values, axis=0, output_type=tf.int32)  # [b]
  v = tf.gather(tf.transpose(v, [1, 0, 2]), best, axis=1, batch_dims=1)  # [b, n]
  v = tf.stop_gradient(v)
  jv = tf.linalg.matvec(jac, v)  # Differentiable through J (envelope theorem).
  return jv, tf.reshape(tf.cast(v, x.dtype), tf.shape(x))


def _initial_directions(x, v0, p, num_restarts, seed):
  """``[num_restarts * batch, ...]`` unit lp starts: ``v0`` (if any) then random."""
  batch = tf.shape(x)[0]
  shape = [num_restarts * batch] + x.shape[1:].as_list()  # Static features.

  def draw():  # One draw for all restarts.
    return norms.random_direction(shape, p, dtype=x.dtype, seed=seed)

  if v0 is None:
    return draw()
  # A zero row of v0 has no direction: that example starts at random.
  zero_rows = norms.lp_norm(v0, _INF) <= 0
  zero = _jacobian_matrix.per_example(zero_rows, v0)
  first = norms.normalize(v0, p)
  if num_restarts == 1:
    # Draw only when some row needs it (the draw costs as much as a few
    # iterations of a small model under XLA on CPU).
    return tf.cond(tf.reduce_any(zero_rows), lambda: tf.where(zero, draw(), first),
                   lambda: first)
  starts = draw()
  first = tf.where(zero, starts[:batch], first)
  return tf.concat([first, starts[batch:]], axis=0)


@tf.autograph.experimental.do_not_convert
def power_method(fn, x, v, p, q, *, num_iters, tol=None, jvp_mode="forward"):
  """Runs ``num_iters`` (p,q) power iterations from unit directions ``v``.

  ``u_k = s_{q*}(J v_{k-1})``, ``v_k = s_p(J^T u_k)``; each iteration is one
  forward pass (carrying the tangent ``J v``) and one backward pass, inside
  one ``tf.while_loop``. Where ``J^T u_k = 0`` (dead ReLUs, a constant
  model) the example keeps its previous ``v``. With ``tol``, stops early
  once no example's ``||J v_{k-1}||_q`` changes by more than ``tol``
  relatively between two iterations.

  Args:
    fn: ``x -> logits [batch, d]``.
    x: float tensor ``[batch, ...]``.
    v: tensor shaped like ``x`` with ``||v||_p = 1`` per example.
    p: input exponent.
    q: output exponent.
    num_iters: maximum number of iterations.
    tol: relative tolerance for early stopping, or ``None``. Defaults to `None`.
    jvp_mode: ``'forward'`` or ``'double_backward'``. Defaults to `'forward'`.

  Returns:
    ``v_K`` shaped like ``x`` (held constant).
  """
  qs = norms.dual_exponent(q)
  u_of_jv = lambda jv: norms.steepest_ascent(jv, qs)

  def step(v):
    jv, _, g = _jacobian_matrix.jvp_and_vjp(fn, x, v, u_of_jv, jvp_mode)
    alive = norms.lp_norm(g, _INF) > 0
    v_new = tf.where(_jacobian_matrix.per_example(alive, v),
                     norms.steepest_ascent(g, p), v)
    return tf.stop_gradient(v_new), jv

  if tol is None:
    def body(i, v):
      return i + 1, step(v)[0]
    _, v = tf.while_loop(lambda i, _: i < num_iters, body, (tf.constant(0), v),
                         maximum_iterations=num_iters)
    return v

  def body_tol(i, v, prev, change):
    v, jv = step(v)
    norm = tf.cast(norms.lp_norm(tf.stop_gradient(jv), q), tf.float32)
    rel = tf.abs(norm - prev) / tf.maximum(norm, 1e-30)
    return i + 1, v, norm, tf.reduce_max(rel)

  # The first comparison is against -1: never converged after one iteration.
  prev0 = -tf.ones(tf.shape(x)[:1])
  _, v, _, _ = tf.while_loop(
      lambda i, v, prev, change: tf.logical_and(i < num_iters, change > tol),
      body_tol, (tf.constant(0), v, prev0, tf.constant(_INF)),
      maximum_iterations=num_iters)
  return v


@_compiled.compiled_when_eager(tensor_args=("x", "v0"))
@tf.autograph.experimental.do_not_convert
@logits_view.accepts_views(returns="v", like_x=("v0",))
def operator_norm(f, x, p=2, q=2, *, num_iters=20, num_restarts=1, method="auto",
                  v0=None, training=False, jvp_mode="forward", tol=None,
                  exact_max_dim=256, seed=None):
  """The (p,q) operator norm ``||J_f(x)||_{p,q}`` of the Jacobian, per example.

  ``||J||_{p,q} = max_{||v||_p <= 1} ||J v||_q`` (Roth, Kilcher & Hofmann,
  NeurIPS 2020, https://arxiv.org/abs/1906.01527), computed one of two ways:

  * **Closed forms** (``exact=True``), on the exact Jacobian built from
    ``min(d, n)`` batched products (``d`` reverse-mode rows ``J^T e_i`` or
    ``n`` forward-mode columns ``J e_j``, where ``d`` is the number of
    logits and ``n`` the input size):

    - ``(2, 2)``: the largest singular value of ``J``, ``v`` the top right
      singular vector (top eigenpair of the ``min(d, n)``-square Gram
      matrix: accurate to float precision for ``sigma_1``);
    - ``(1, q)``: ``max_j ||J e_j||_q``, the largest column lq norm, ``v = e_j``;
    - ``(p, inf)``: ``max_i ||J^T e_i||_{p*}``, the largest row lp* norm,
      ``v = s_p(J^T e_i)``;
    - ``(p, 1)`` with ``d <= MAX_VERTEX_LOGITS`` logits (12), ``p > 1``:
      ``max_{u in {-1,1}^d} ||J^T u||_{p*}`` by enumerating the ``2^(d-1)``
      sign vectors (see `closed_form`), ``v = s_p(J^T u*)``. This makes the
      NP-hard ``(inf, 1)`` exact for a classifier with up to 12 classes
      (``2^(d-1) n`` multiply-adds per example: 512 sign vectors for 10
      classes).

    ``method='auto'`` takes them when ``min(d, n) <= exact_max_dim``, and
    for ``(2, 2)`` only while the pass-count cost model (`_cost.cheaper_path`)
    puts the exact path at most ``AUTO_EXACTNESS_PREMIUM = 2`` times the
    cost of ``num_iters * num_restarts`` power iterations: the closed form
    is exact where the power method is a lower bound that converges at the
    rate ``(sigma_2 / sigma_1)^(2K)``, so exactness is worth up to twice the
    time, not more. With the default 20 iterations that is ``min(d, n) <=
    58`` (measured on a 2-core CPU: the exact path costs 0.25x the power
    method at 10 logits, 1.3-2.2x at 60 and 2.9-3.1x at 100). The other
    closed forms (``(1, q)``, ``(p, inf)``, ``(p, 1)``) are taken up to
    ``exact_max_dim`` whatever the cost: their power method is a local
    ascent, not a slower way to the same answer.
    The products run on stacked copies of the batch, at most 32 copies per
    pass (memory ~ 32 batches' activations).
  * **A multi-start ascent on the exact Jacobian** (``exact=False``): for
    the pairs without a closed form, ``method='auto'`` with
    ``min(d, n) <= exact_max_dim`` builds ``J`` the same way and runs the
    (p,q) power method below on the matrix (small batched products, no
    network passes) from ``k`` starts at once: ``v0`` if given,
    ``s_p(r_i)`` for the top ``min(d, n, 16)`` right singular vectors
    ``r_i`` of ``J`` (the (2,2) directions mapped to the lp sphere),
    ``s_p(J^T e_i)`` for the ``min(d, 16)`` rows of largest lp* norm, and
    ``num_restarts`` random directions; ``num_iters`` iterations each. For
    ``p = inf`` the two best fixed points are then refined by a greedy
    vertex search (move the one coordinate ``v_j -> +-1`` that increases
    ``||J v||_q`` most, scored exactly, until none does: a 1-opt local
    maximum). The best ``||J v||_q`` is kept per example: a lower bound
    that is never below the first start's power-method value. On the main
    job's 8x8-digits MLPs (standard, PGD-trained, d.d.-regularised at
    l-inf eps = 0.1; 300 test inputs each) it is within 2% of a strong
    lower bound (the best of ~230 starts each refined by the power method
    and the vertex search to convergence, in float64) on every input for
    ``(inf, 2)`` and ``(3, 3)`` (worst 0.99), where one random start of the
    network power method was below 0.98 on 12-50% of them for ``(inf, 2)``
    (worst 0.59-0.70 over runs). (On ``(inf, 1)``, which now has the exact
    enumeration for ``d <= 12``, the ascent reached >= 0.98 of the exact
    norm on only 88-99% of the inputs, worst 0.92; one random start of the
    power method on 11-25%.) Cost (wall
    time, interleaved): 1.6-2.2x the network power method's ``num_iters =
    20`` iterations for ``p = inf``, ~3x for ``(3, 3)``, on those models
    (``benchmarks/bench_operator_norm_bounds.py``);
    memory ~ ``k`` Jacobians ``[batch, d, n]``.
  * **The (p,q) power method** (``exact=False``)::

      u_k = s_{q*}(J v_{k-1}),   v_k = s_p(J^T u_k),   norm = ||J v_K||_q

    with ``J v`` by forward-mode (``jvp_mode='forward'``) or double-backward
    products and ``J^T u`` by ``GradientTape``: ``num_iters`` iterations of
    one forward pass (with tangents) and one backward pass each, plus one
    forward pass for the final ``J v_K``; ``num_restarts`` starts run
    side by side as one stacked batch and the best is kept per example.
    The result is always a **lower bound** (``norm = ||J v||_q`` at a
    feasible ``v``). For ``(2, 2)`` it converges to the top singular value
    at the rate ``(sigma_2 / sigma_1)^(2K)`` (slow when the top two are
    close: use the exact path). ``(1, q)`` above ``exact_max_dim`` uses it
    too: then it is a lower bound, not the column maximum. For the NP-hard
    pairs (``(inf, 1)`` with many logits, ``(inf, 2)``, ``p -> p`` with ``p != 1, 2``; Rohn
    2000, Hendrickx & Olshevsky 2010) and every other pair without a closed
    form it is the value at a fixed point of a local ascent, not
    necessarily the maximum (from one random start, often well below it:
    prefer ``method='auto'`` when ``min(d, n) <= exact_max_dim``, or
    raise ``num_restarts``). ``method='power'`` is the computation that
    lp-PGD performs (the objectives use it).

  Where ``J = 0`` (a constant model, all-dead ReLUs) the norm is 0, ``u`` is
  0 and ``v`` is a finite unit vector (the start, or ``e_0``): never NaN.
  ``norm`` is differentiable in ``x`` and the weights with ``v`` held
  constant (the gradient of the maximum, by the envelope theorem); ``v`` and
  ``u`` are constants. Runs inside ``tf.function``, with or without
  ``jit_compile=True``, without retracing for a fixed input signature.
  ``f`` is called several times; for a Keras model with ``training=True``
  every call updates batch-norm statistics.

  Args:
    f: a Keras model (called with ``training=training``) or a callable from
      a batch ``[batch, ...]`` to logits ``[batch, d]``.
    x: the inputs ``[batch, ...]`` of any rank (static non-batch shape);
      float16/bfloat16 inputs are computed in float32.
    p: input exponent in ``[1, inf]`` (non-integers allowed). Defaults to `2`.
    q: output exponent in ``[1, inf]``. Defaults to `2`.
    num_iters: power iterations ``K``. Defaults to `20`.
    num_restarts: power-method starts (the first is ``v0`` if given, the
      others random); the best is kept per example. On the exact-Jacobian
      ascent: the random starts added to ``v0`` and the deterministic ones.
      Defaults to `1`.
    method: ``'auto'`` (when ``min(d, n) <= exact_max_dim``: the closed
      form if one exists (for ``(2, 2)`` while it costs at most twice the
      power method), else the multi-start ascent on the exact
      Jacobian; otherwise the power method), ``'exact'`` (closed form or
      ``ValueError``) or ``'power'`` (always the network power method).
      Defaults to `'auto'`.
    v0: optional start shaped like ``x`` (e.g. the previous step's ``v``),
      normalised to unit lp norm; zero rows start at random. Defaults to
      `None` (random).
    training: the ``training`` flag for Keras models. Defaults to `False`.
    jvp_mode: ``'forward'`` (ForwardAccumulator) or ``'double_backward'``.
      Defaults to `'forward'`.
    tol: optional relative tolerance on the norm for stopping the power
      method early. Defaults to `None` (exactly ``num_iters`` iterations).
    exact_max_dim: largest ``min(d, n)`` for which ``'auto'`` builds the
      exact Jacobian (closed forms and the multi-start ascent). Defaults to
      `256`.
    seed: optional op seed of the random starts. Defaults to `None`.

  Returns:
    An `OperatorNormResult` ``(norm [batch], v like x, u [batch, d], exact)``.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``p`` or ``q`` < 1, non-positive ``num_iters`` /
      ``num_restarts`` / ``tol`` / ``exact_max_dim``, an unknown ``method``
      or ``jvp_mode``, ``method='exact'`` without a tractable closed form,
      ``x`` of rank < 2 or with a dynamic feature shape, ``v0`` not shaped
      like ``x``, ``f`` not returning ``[batch, d]`` or not differentiable.
    TypeError: non-numeric exponents or counts, an integer ``x``, a
      non-callable ``f``.

  Example:

  >>> w = tf.constant([[3.0, 0.0], [0.0, -4.0]])
  >>> f = lambda x: tf.matmul(x, w)
  >>> x = tf.zeros([1, 2])
  >>> float(operator_norm(f, x).norm[0])  # sigma_max(W)
  4.0
  >>> float(operator_norm(f, x, p=1, q=1).norm[0])  # max column l1 norm
  4.0
  >>> float(operator_norm(f, x, p='inf', q='inf').norm[0])  # max row l1 norm
  4.0
  """
  return _operator_norm(
      f, x, p, q, num_iters=num_iters, num_restarts=num_restarts, method=method,
      v0=v0, training=training, jvp_mode=jvp_mode, tol=tol,
      exact_max_dim=exact_max_dim, seed=seed)


# Not converted by AutoGraph (it has no Python control flow on tensors): the
# conversion of this module would otherwise cost seconds at the first trace.
@tf.autograph.experimental.do_not_convert
def _operator_norm(f, x, p, q, *, num_iters, num_restarts, method, v0, training,
                   jvp_mode, tol, exact_max_dim, seed):
  """`operator_norm` without AutoGraph."""
  p = _checks.exponent(p, "p")
  q = _checks.exponent(q, "q")
  num_iters = _checks.positive_int(num_iters, "num_iters")
  num_restarts = _checks.positive_int(num_restarts, "num_restarts")
  exact_max_dim = _checks.positive_int(exact_max_dim, "exact_max_dim")
  _checks.one_of(method, METHODS, "method")
  _checks.one_of(jvp_mode, jacobian.JVP_MODES, "jvp_mode")
  if tol is not None:
    tol = _checks.positive_float(tol, "tol")
  x = _checks.float_input(x, "x")
  n = _jacobian_matrix.num_features(x)
  if v0 is not None:
    v0 = _check_start(v0, x)
  fn = jacobian.as_logits_fn(f, training)
  qs = norms.dual_exponent(q)

  form = closed_form(p, q)
  if method == "exact" and form is None:
    raise ValueError(
        f"`method='exact'` needs a closed form, which exists for (2, 2), "
        f"(1, q), (p, inf) and (p, 1) only; ({p}, {q}) is not one of them (use "
        f"method='power' or 'auto'). Received: p={p}, q={q}")
  use_exact = False
  if form is not None and method != "power":
    d = _jacobian_matrix.num_logits(fn, x)
    if form == "vertices" and d > MAX_VERTEX_LOGITS:
      if method == "exact":
        raise ValueError(
            f"`method='exact'` for (p, 1) enumerates the 2^(d-1) sign vectors of "
            f"the logits, which needs d <= {MAX_VERTEX_LOGITS}; this model has "
            f"d = {d} logits (use method='auto' or 'power'). Received: p={p}, q={q}")
      form = None  # The multi-start ascent below.
    use_exact = form is not None and min(d, n) <= exact_max_dim
    if use_exact and method == "auto":  # (2, 2): by cost (see `_cost`).
      use_exact = _cost.cheaper_path(
          d, n, num_iters=num_iters * num_restarts, p=p, q=q,
          exactness_premium=AUTO_EXACTNESS_PREMIUM) == "exact"
    if method == "exact" and not use_exact:
      raise ValueError(
          f"`method='exact'` builds the Jacobian from min(d, n) products, but "
          f"min(d, n) = min({d}, {n}) exceeds `exact_max_dim`. Raise "
          f"exact_max_dim or use method='power'. Received: "
          f"exact_max_dim={exact_max_dim}")
  use_matrix = False
  if form is None and method == "auto":
    d = _jacobian_matrix.num_logits(fn, x)
    use_matrix = min(d, n) <= exact_max_dim

  if use_exact:
    jv, v = _exact(fn, x, p, q, d, n, form, jvp_mode)
  elif use_matrix:
    jv, v = _matrix_ascent(fn, x, p, q, d, n, v0, num_iters=num_iters,
                           num_restarts=num_restarts, tol=tol, jvp_mode=jvp_mode, seed=seed)
  else:
    starts = _initial_directions(x, v0, p, num_restarts, seed)
    x_rep = x if num_restarts == 1 else tf.tile(x, [num_restarts] + [1] * (x.shape.rank - 1))
    v = power_method(fn, x_rep, starts, p, q, num_iters=num_iters, tol=tol,
                     jvp_mode=jvp_mode)
    _, jv = jacobian.jvp(fn, x_rep, v, mode=jvp_mode)
    if num_restarts > 1:
      batch = tf.shape(x)[0]
      all_norms = tf.reshape(tf.stop_gradient(norms.lp_norm(jv, q)), [num_restarts, batch])
      best = tf.argmax(all_norms, axis=0, output_type=tf.int32)  # [batch]
      pick = best * batch + tf.range(batch)
      jv = tf.gather(jv, pick)
      v = tf.gather(v, pick)
  norm = _checks.nan_where_nonfinite(_jacobian_matrix.safe_norm(jv, q), x)  # XLA: no assertions.
  u = tf.stop_gradient(norms.steepest_ascent(tf.stop_gradient(jv), qs))
  return OperatorNormResult(norm=norm, v=v, u=u, exact=use_exact)


def _check_start(v0, x, name="v0"):
  """Converts ``v0`` to ``x``'s dtype and checks that it is shaped like ``x``."""
  v0 = tf.convert_to_tensor(v0)
  if not v0.dtype.is_floating:
    raise TypeError(f"`{name}` must be a floating-point tensor. Received: {name} "
                    f"with dtype={v0.dtype.name}")
  v0 = tf.cast(v0, x.dtype)
  if not v0.shape.is_compatible_with(x.shape):
    raise ValueError(f"`{name}` must have the shape of `x`, {x.shape}. Received: "
                     f"{name} with shape={v0.shape}")
  return v0
