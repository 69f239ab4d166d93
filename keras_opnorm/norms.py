"""lp geometry on batches: dual exponents, norms, steepest ascent, projections.

Every function here is a pure TensorFlow function over a *batch*: axis 0 is the
example axis and every other axis (features, or height/width/channels of an
image) belongs to the example. Norms are therefore taken over all non-batch
axes and return a tensor of shape ``[batch]``.

Notation follows Roth, Kilcher & Hofmann, "Adversarial Training is a Form of
Data-dependent Operator Norm Regularization", NeurIPS 2020
(https://arxiv.org/abs/1906.01527):

* ``p*`` is the Hoelder conjugate of ``p``: ``1/p + 1/p* = 1``.
* ``s_p(g) = argmax_{||v||_p <= 1} <v, g>`` is the steepest-ascent map.
"""

import math
import numbers

import numpy as np
import tensorflow as tf

__all__ = [
    "validate_exponent",
    "dual_exponent",
    "lp_norm",
    "normalize",
    "steepest_ascent",
    "project_lp_ball",
    "project_l1_ball",
    "random_lp_ball",
    "random_direction",
]

_INF = float("inf")


def validate_exponent(p, name="p"):
  """Checks that ``p`` is a real number in ``[1, inf]`` and returns it as float.

  Accepts Python numbers, numpy scalars and the strings ``'inf'``/``'infinity'``.

  Args:
    p: The exponent to check.
    name: The argument name used in the error message. Defaults to `"p"`.

  Returns:
    ``p`` as a Python float (``float('inf')`` for infinity).

  Raises:
    TypeError: if ``p`` is not a number (booleans included).
    ValueError: if ``p`` is NaN or smaller than 1.
  """
  if isinstance(p, str) and p.strip().lower() in ("inf", "infinity", "np.inf"):
    return _INF
  if isinstance(p, (bool, np.bool_)) or not isinstance(p, (numbers.Real, np.number)):
    raise TypeError(
        f"`{name}` must be a real number in [1, inf]. Received: {name}={p!r} "
        f"of type {type(p).__name__}")
  p = float(p)
  if math.isnan(p) or p < 1.0:
    raise ValueError(f"`{name}` must be a real number in [1, inf]. Received: {name}={p}")
  return p


def dual_exponent(p):
  """Returns the Hoelder conjugate ``p*`` of ``p``, with ``1/p + 1/p* = 1``.

  ``1* = inf``, ``inf* = 1``, ``2* = 2``.

  Args:
    p: exponent in ``[1, inf]``.

  Returns:
    ``p*`` as a Python float.

  Raises:
    ValueError, TypeError: if ``p`` is not in ``[1, inf]``.

  Example:

  >>> dual_exponent(2)
  2.0
  >>> dual_exponent(1)
  inf
  >>> dual_exponent(3)
  1.5
  """
  p = validate_exponent(p)
  if p == 1.0:
    return _INF
  if math.isinf(p):
    return 1.0
  return p / (p - 1.0)


def _float_tensor(x, name):
  """``tf.convert_to_tensor(x)``, refusing integer and boolean tensors by name."""
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    raise TypeError(f"`{name}` must be a floating-point tensor (cast integers to float "
                    f"first). Received: {name} with dtype={x.dtype.name}")
  return x


def _reduce_axes(x):
  return list(range(1, x.shape.rank))


def _per_example(t, x):
  """Reshapes a scalar or ``[batch]`` tensor ``t`` to broadcast against ``x``."""
  t = tf.convert_to_tensor(t, dtype=x.dtype)
  if t.shape.rank == 0:
    return t
  return tf.reshape(t, [-1] + [1] * (x.shape.rank - 1))


def lp_norm(x, p, *, keepdims=False):
  """Per-example lp norm over all non-batch axes.

  ``||x||_p = (sum_i |x_i|^p)^(1/p)``; ``||x||_inf = max_i |x_i|``.
  Computed stably for large ``p`` by factoring out ``max_i |x_i|``.

  Args:
    x: tensor of shape ``[batch, ...]`` (rank >= 2).
    p: exponent in ``[1, inf]``.
    keepdims: keep the reduced axes with size 1. Defaults to `False`.

  Returns:
    Tensor of shape ``[batch]`` (or ``[batch, 1, ...]`` with ``keepdims``).

  Raises:
    TypeError, ValueError: if ``p`` is not a number in ``[1, inf]``.
    TypeError: for an integer or boolean tensor.

  Example:

  >>> float(lp_norm(tf.constant([[3.0, -4.0]]), 2)[0])
  5.0
  >>> float(lp_norm(tf.constant([[3.0, -4.0]]), 'inf')[0])
  4.0
  """
  p = validate_exponent(p)
  x = _float_tensor(x, "x")
  axes = _reduce_axes(x)
  a = tf.abs(x)
  if math.isinf(p):
    return tf.reduce_max(a, axis=axes, keepdims=keepdims)
  if p == 1.0:
    return tf.reduce_sum(a, axis=axes, keepdims=keepdims)
  if p == 2.0:
    # sqrt(sum x^2) with a safe gradient at 0 (the subgradient 0).
    sq = tf.reduce_sum(tf.square(x), axis=axes, keepdims=keepdims)
    safe = tf.where(sq > 0, sq, tf.ones_like(sq))
    return tf.where(sq > 0, tf.sqrt(safe), tf.zeros_like(sq))
  m = tf.reduce_max(a, axis=axes, keepdims=True)
  m_safe = tf.where(m > 0, m, tf.ones_like(m))
  s = tf.reduce_sum(tf.pow(a / m_safe, p), axis=axes, keepdims=True)
  # s >= 1 when m > 0; at x = 0 use s = 1 so that the gradient is 0, not
  # 0 * inf = NaN (pow(s, 1/p) has an infinite derivative at s = 0).
  s = tf.where(m > 0, s, tf.ones_like(s))
  out = m * tf.pow(s, 1.0 / p)
  if not keepdims:
    out = tf.reshape(out, [-1])
  return out


def normalize(x, p):
  """Scales each example to unit lp norm: ``x / ||x||_p``; zero examples stay 0.

  Args:
    x: tensor ``[batch, ...]``.
    p: exponent in ``[1, inf]``.

  Returns:
    Tensor shaped like ``x`` whose non-zero examples have ``||.||_p = 1``.

  Raises:
    TypeError, ValueError: if ``p`` is not a number in ``[1, inf]``.
    TypeError: for an integer or boolean tensor.
  """
  x = _float_tensor(x, "x")
  n = lp_norm(x, p, keepdims=True)
  safe = tf.where(n > 0, n, tf.ones_like(n))
  return tf.where(n > 0, x / safe, tf.zeros_like(x))


def steepest_ascent(g, p):
  """The lp steepest-ascent map ``s_p(g) = argmax_{||v||_p <= 1} <v, g>``.

  Per example (Roth et al. 2020, Sec. 3; Boyd 1974)::

    s_p(g)   = sign(g) * |g|^(p*-1) / || |g|^(p*-1) ||_p     1 < p < inf
    s_2(g)   = g / ||g||_2
    s_inf(g) = sign(g)
    s_1(g)   = sign(g_i) e_i,  i = argmax_i |g_i|            (one-hot)

  so that ``<s_p(g), g> = ||g||_{p*}`` and ``||s_p(g)||_p = 1`` for ``g != 0``.
  The gradient of ``z -> ||z||_q`` is ``s_{q*}(z)``. For ``g = 0`` the result
  is 0 (finite, never NaN). Ties in the ``p = 1`` argmax go to the first index.

  Args:
    g: tensor ``[batch, ...]`` (a gradient).
    p: exponent in ``[1, inf]``.

  Returns:
    Tensor shaped like ``g``.

  Raises:
    TypeError, ValueError: if ``p`` is not a number in ``[1, inf]``.
    TypeError: for an integer or boolean tensor.

  Example:

  >>> steepest_ascent(tf.constant([[3.0, -4.0]], tf.float64), 2).numpy().tolist()
  [[0.6, -0.8]]
  >>> steepest_ascent(tf.constant([[3.0, -4.0]]), 1).numpy().tolist()
  [[0.0, -1.0]]
  """
  p = validate_exponent(p)
  g = _float_tensor(g, "g")
  if math.isinf(p):
    return tf.sign(g)
  if p == 2.0:
    return normalize(g, 2.0)
  if p == 1.0:
    flat = tf.reshape(g, [tf.shape(g)[0], -1])
    idx = tf.argmax(tf.abs(flat), axis=1)
    onehot = tf.one_hot(idx, tf.shape(flat)[1], dtype=g.dtype)
    return tf.reshape(onehot * tf.sign(flat), tf.shape(g))
  ps = dual_exponent(p)
  a = tf.abs(g)
  m = tf.reduce_max(a, axis=_reduce_axes(g), keepdims=True)
  m_safe = tf.where(m > 0, m, tf.ones_like(m))
  w = tf.pow(a / m_safe, ps - 1.0)
  return tf.sign(g) * normalize(w, p)


def project_l1_ball(delta, epsilon):
  """Exact Euclidean projection of each example onto ``{||d||_1 <= eps}``.

  The sort-based algorithm of Duchi, Shalev-Shwartz, Singer & Chandra,
  "Efficient Projections onto the l1-Ball for Learning in High Dimensions",
  ICML 2008: with ``mu`` the entries of ``|d|`` sorted descending,
  ``rho = max{j : mu_j - (sum_{r<=j} mu_r - eps)/j > 0}``,
  ``theta = (sum_{r<=rho} mu_r - eps)/rho`` and
  ``proj(d) = sign(d) * max(|d| - theta, 0)``. Examples already inside the
  ball are returned unchanged. This is the closest point, not a rescale.

  Args:
    delta: tensor ``[batch, ...]``.
    epsilon: positive scalar or ``[batch]`` radii.

  Returns:
    Tensor shaped like ``delta`` with ``||.||_1 <= eps`` per example.
  """
  delta = _float_tensor(delta, "delta")
  shape = tf.shape(delta)
  flat = tf.reshape(delta, [shape[0], -1])
  eps = tf.convert_to_tensor(epsilon, dtype=delta.dtype)
  eps = tf.broadcast_to(tf.reshape(eps, [-1, 1]), [shape[0], 1])
  a = tf.abs(flat)
  mu = tf.sort(a, axis=1, direction="DESCENDING")
  cs = tf.cumsum(mu, axis=1)
  j = tf.cast(tf.range(1, tf.shape(flat)[1] + 1), delta.dtype)[tf.newaxis, :]
  cond = mu - (cs - eps) / j > 0
  rho = tf.reduce_max(tf.where(cond, j, tf.zeros_like(j)), axis=1, keepdims=True)
  rho = tf.maximum(rho, 1.0)
  cs_rho = tf.gather(cs, tf.cast(rho, tf.int32) - 1, axis=1, batch_dims=1)
  theta = tf.maximum((cs_rho - eps) / rho, 0.0)
  proj = tf.sign(flat) * tf.maximum(a - theta, 0.0)
  inside = tf.reduce_sum(a, axis=1, keepdims=True) <= eps
  out = tf.where(inside, flat, proj)
  return tf.reshape(out, shape)


def _project_lp_general(delta, epsilon, p, num_bisection=40):
  """Euclidean projection onto the lp ball for ``1 < p < inf`` by bisection.

  KKT conditions of ``min ||x - d||_2^2/2 s.t. sum |x_i|^p <= eps^p`` give
  ``x_i = sign(d_i) t_i`` with ``t_i + lam * p * t_i^(p-1) = |d_i|``,
  ``t_i in [0, |d_i|]``, and ``lam >= 0`` such that ``||x||_p = eps``.
  Both ``t_i(lam)`` (per coordinate) and ``lam`` (per example, on a log
  scale) are found by bisection, which converges to float precision in
  ``num_bisection`` steps; the result is rescaled onto the sphere at the
  end so that ``||x||_p <= eps`` holds to rounding.
  """
  dtype = delta.dtype
  shape = tf.shape(delta)
  flat = tf.reshape(delta, [shape[0], -1])
  eps = tf.broadcast_to(tf.reshape(tf.cast(epsilon, dtype), [-1, 1]), [shape[0], 1])
  a = tf.abs(flat)
  # Work in units of eps so that the multiplier's range does not depend on it.
  a_s = a / eps

  # tf.while_loop, not Python loops: unrolled, the nested bisections make a
  # graph of num_bisection^2 steps that XLA takes minutes to compile.
  def bisect(step, lo, hi):
    _, lo, hi = tf.while_loop(
        lambda i, lo, hi: i < num_bisection,
        lambda i, lo, hi: (i + 1,) + step(lo, hi),
        (tf.constant(0), lo, hi))
    return lo, hi

  def solve_t(lam):
    def step(lo, hi):
      mid = 0.5 * (lo + hi)
      h = mid + lam * p * tf.pow(mid, p - 1.0) - a_s
      return tf.where(h < 0, mid, lo), tf.where(h < 0, hi, mid)
    lo, hi = bisect(step, tf.zeros_like(a_s), a_s)
    return 0.5 * (lo + hi)

  def norm_p(t):
    return lp_norm(t, p, keepdims=True)

  def lam_step(lo, hi):
    mid = 0.5 * (lo + hi)
    too_big = norm_p(solve_t(tf.exp(mid))) > 1.0
    return tf.where(too_big, mid, lo), tf.where(too_big, hi, mid)

  # Bisection on log(lam) in [-30, 30] (lam = 0 means "inside the ball").
  _, hi = bisect(lam_step, tf.fill([shape[0], 1], tf.cast(-30.0, dtype)),
                 tf.fill([shape[0], 1], tf.cast(30.0, dtype)))
  t = solve_t(tf.exp(hi))
  t = t / tf.maximum(norm_p(t), 1.0)
  proj = tf.sign(flat) * t * eps
  inside = lp_norm(flat, p, keepdims=True) <= eps
  return tf.reshape(tf.where(inside, flat, proj), shape)


def project_lp_ball(delta, epsilon, p):
  """Euclidean projection of each example onto the lp ball of radius ``eps``.

  ``Proj(d) = argmin_{||x||_p <= eps} ||x - d||_2``, exact for every p:

  * ``p = inf``: clipping to ``[-eps, eps]``.
  * ``p = 2``: rescaling ``d * min(1, eps/||d||_2)``.
  * ``p = 1``: the sort-based algorithm of Duchi et al. (2008), not a rescale.
  * ``1 < p < inf``, ``p != 2``: the KKT system solved by nested bisection
    (see ``_project_lp_general``), exact to float tolerance.

  Args:
    delta: tensor ``[batch, ...]``: the perturbations.
    epsilon: positive scalar or ``[batch]`` radii.
    p: exponent in ``[1, inf]``.

  Returns:
    Tensor shaped like ``delta``, inside the ball; points already inside are
    returned unchanged.

  Raises:
    TypeError, ValueError: if ``p`` is not a number in ``[1, inf]``.
    TypeError: for an integer or boolean tensor.
  """
  p = validate_exponent(p)
  delta = _float_tensor(delta, "delta")
  if math.isinf(p):
    e = _per_example(epsilon, delta)
    return tf.clip_by_value(delta, -e, e)
  if p == 2.0:
    e = _per_example(epsilon, delta)
    n = lp_norm(delta, 2.0, keepdims=True)
    scale = tf.minimum(tf.ones_like(n), e / tf.where(n > 0, n, tf.ones_like(n)))
    return delta * scale
  if p == 1.0:
    return project_l1_ball(delta, epsilon)
  return _project_lp_general(delta, epsilon, p)


def _op_seed(seed, k):
  """The ``k``-th op seed derived from ``seed`` (``None`` stays ``None``).

  Two random ops of one graph given the same op seed draw the same stream;
  each draw of a function therefore needs its own seed.
  """
  return None if seed is None else seed + k


def _random_gamma(shape, alpha, dtype, seed=None, num_rounds=12):
  """Gamma(``alpha``, 1) samples for ``0 < alpha <= 1`` that XLA can compile.

  ``tf.random.gamma`` has no XLA kernel. Marsaglia & Tsang, "A simple method
  for generating gamma variables", ACM TOMS 2000: for ``a = alpha + 1 >= 1``,
  with ``d = a - 1/3``, ``c = 1/sqrt(9d)``, ``x ~ N(0,1)``,
  ``v = (1 + c x)^3`` and ``u ~ U(0,1)``, accept ``d v`` when ``v > 0`` and
  ``log u < x^2/2 + d - d v + d log v``; then ``Gamma(alpha) = Gamma(alpha+1)
  * U^(1/alpha)``. Each proposal is accepted with probability > 0.95 for
  ``a >= 1``; ``num_rounds`` proposals are drawn at once and the first
  accepted one is kept (none accepted: probability < 0.05^12, falls back
  to ``d``).
  """
  a = alpha + 1.0
  d = a - 1.0 / 3.0
  c = 1.0 / math.sqrt(9.0 * d)
  rounds_shape = tf.concat([[num_rounds], tf.convert_to_tensor(shape, tf.int32)], 0)
  x = tf.random.normal(rounds_shape, dtype=dtype, seed=_op_seed(seed, 0))
  u = tf.random.uniform(rounds_shape, dtype=dtype, seed=_op_seed(seed, 1))
  v = tf.pow(1.0 + c * x, 3.0)
  v_safe = tf.where(v > 0, v, tf.ones_like(v))
  accept = (v > 0) & (tf.math.log(u) < 0.5 * tf.square(x) + d - d * v_safe + d * tf.math.log(v_safe))
  first = tf.one_hot(tf.argmax(tf.cast(accept, tf.int32), axis=0), num_rounds, axis=0, dtype=dtype)
  sample = tf.reduce_sum(first * d * v_safe, axis=0)
  sample = tf.where(tf.reduce_any(accept, axis=0), sample, tf.cast(d, dtype))
  boost = tf.random.uniform(shape, dtype=dtype, seed=_op_seed(seed, 2))
  return sample * tf.pow(boost, 1.0 / alpha)


def random_lp_ball(shape, epsilon, p, dtype=tf.float32, seed=None):
  """Draws points uniformly from the lp ball of radius ``eps`` (per example).

  Barthe, Guedon, Mendelson & Naor, "A probabilistic approach to the geometry
  of the lp^n-ball", Ann. Probab. 2005: with ``z_i`` i.i.d. with density
  proportional to ``exp(-|t|^p)`` and ``w ~ Exp(1)`` independent,
  ``z / (||z||_p^p + w)^(1/p)`` is uniform in the unit lp ball. For
  ``p = inf`` the ball is a cube and coordinates are uniform in ``[-1, 1]``.
  ``|z_i|^p ~ Gamma(1/p)``: ``p = 1`` uses exponentials, ``p = 2`` Gaussians
  of variance 1/2, other p a Gamma sampler that XLA compiles.

  Args:
    shape: the batch shape ``[batch, ...]``.
    epsilon: scalar or ``[batch]`` radii.
    p: exponent in ``[1, inf]``.
    dtype: floating dtype. Defaults to `tf.float32`.
    seed: optional op seed. Defaults to `None`.

  Returns:
    Tensor of ``shape``.

  Raises:
    TypeError, ValueError: if ``p`` is not a number in ``[1, inf]``.
    TypeError: for an integer or boolean tensor.
  """
  p = validate_exponent(p)
  if math.isinf(p):
    u = tf.random.uniform(shape, -1.0, 1.0, dtype=dtype, seed=seed)
    return u * _per_example(epsilon, u)
  if p == 2.0:
    # Density exp(-t^2) is N(0, 1/2).
    z = tf.random.normal(shape, stddev=math.sqrt(0.5), dtype=dtype, seed=_op_seed(seed, 0))
  else:
    if p == 1.0:
      e = -tf.math.log(tf.random.uniform(shape, 1e-12, 1.0, dtype=dtype, seed=_op_seed(seed, 0)))
    else:
      e = tf.pow(_random_gamma(shape, 1.0 / p, dtype, seed=_op_seed(seed, 3)), 1.0 / p)
    sign = tf.sign(tf.random.uniform(shape, -1.0, 1.0, dtype=dtype, seed=_op_seed(seed, 1)))
    z = sign * e
  batch = tf.convert_to_tensor(shape)[:1]
  w = -tf.math.log(tf.random.uniform(batch, 1e-12, 1.0, dtype=dtype, seed=_op_seed(seed, 2)))
  zp = tf.pow(lp_norm(z, p), p)
  r = tf.pow(zp + w, 1.0 / p)
  x = z / _per_example(r, z)
  return x * _per_example(epsilon, x)


def random_direction(shape, p, dtype=tf.float32, seed=None):
  """A random direction with unit lp norm per example (Gaussian, normalised).

  Used as the starting vector ``v0`` of the power method. Gaussian entries
  make every coordinate non-zero almost surely, so ``v0`` is not orthogonal
  to the maximiser.

  Args:
    shape: ``[batch, ...]``.
    p: exponent in ``[1, inf]``.
    dtype: floating dtype. Defaults to `tf.float32`.
    seed: optional op seed. Defaults to `None`.

  Returns:
    Tensor of ``shape`` with ``||.||_p = 1`` per example.

  Raises:
    TypeError, ValueError: if ``p`` is not a number in ``[1, inf]``.
    TypeError: for an integer or boolean tensor.
  """
  return normalize(tf.random.normal(shape, dtype=dtype, seed=seed), p)
