"""The fast adaptive boundary attack (FAB) and its targeted version FAB-T.

FAB (Croce & Hein, "Minimally distorted Adversarial Examples with a Fast
Adaptive Boundary Attack", ICML 2020, https://arxiv.org/abs/1907.02044) looks
for the adversarial point of smallest lp norm, p in {1, 2, inf}. At the
current iterate ``x_k`` it linearises the decision boundary between the label
``y`` and the class ``j`` whose linearised boundary is closest::

  pi_j = {z : f_j(x_k) - f_y(x_k) + <grad(f_j - f_y)(x_k), z - x_k> = 0}

  j = argmin_{j != y} |f_j(x_k) - f_y(x_k)| / ||grad(f_j - f_y)(x_k)||_{p*}

projects both ``x_k`` and the original point ``x`` onto ``pi_j`` intersected
with the input box (`project_halfspace_box`: ``d_k`` and ``d_0``), and takes a
biased, extrapolated step between the two projections::

  alpha   = min(||d_k||_p / (||d_k||_p + ||d_0||_p), alpha_max)
  x_{k+1} = clip( (1 - alpha) (x_k + eta d_k) + alpha (x + eta d_0) )

When ``x_{k+1}`` is adversarial it is recorded if its norm is the smallest so
far, and pulled back towards ``x``: ``x_{k+1} <- x + beta (x_{k+1} - x)``.

FAB-T, the version used in AutoAttack (Croce & Hein, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks",
ICML 2020, https://arxiv.org/abs/2003.01690), runs the same iteration against
one fixed target class at a time, the top ``num_targets`` classes other than
``y`` by clean logits: one gradient per step instead of ``d``.

A final search along the segment from ``x`` to the best point found (the
original FAB code's "linear approximation search") removes the overshoot of
the extrapolation ``eta``; see `fab_attack`.

The module is written from the papers and the reference implementation
(fra31/auto-attack: ``fab_base.py``, ``fab_pt.py``, ``fab_projections.py``;
fra31/fab-attack for the final search).
"""

import math
import numbers

import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import _compiled
from keras_opnorm import jacobian
from keras_opnorm import logits_view
from keras_opnorm import norms
from keras_opnorm.attacks._common import _check_label_width
from keras_opnorm.attacks._common import _check_in_box
from keras_opnorm.attacks._common import _clip_range
from keras_opnorm.attacks._common import _labels
from keras_opnorm.attacks._common import _radius
from keras_opnorm.attacks._common import _same_batch
from keras_opnorm.attacks._common import fold_seed
from keras_opnorm.attacks._common import seed_tensor
from keras_opnorm.attacks._common import warn_if_vacuous

__all__ = ["fab_attack", "project_halfspace_box"]

_INF = float("inf")

# Floors of the reference implementation: a projection norm below 1e-8 counts
# as 1e-8 in the step bias alpha; 1e-12 keeps the distance ratio finite.
_MIN_STEP_NORM = 1e-8
_TINY = 1e-12

# The final search probes a relative 1e-4 past the secant root (measured from
# x), so that a root that rounds to the clean side, or that another float
# evaluation order of f puts there, still yields an adversarial point: the
# returned norm is that much above the boundary's.
_SEARCH_NUDGE = 1e-4


# ----------------------------------------------------------------------------
# The projection onto a half-space intersected with a box.
# ----------------------------------------------------------------------------


def _fab_exponent(p):
  p = _checks.exponent(p, "p")
  if p not in (1.0, 2.0) and not math.isinf(p):
    raise ValueError(f"`p` must be 1, 2 or inf for the FAB attack. Received: p={p}")
  return p


def _flat_bound(bound, default, x0, shape):
  if bound is None:
    return tf.fill(tf.shape(x0), tf.constant(default, x0.dtype))
  bound = tf.cast(tf.convert_to_tensor(bound), x0.dtype)
  return tf.reshape(tf.broadcast_to(bound, shape), tf.shape(x0))


def _water_filling(r, w, cap, gain, p):
  """Steps ``t_i = min(lam c_i, cap_i)`` with ``sum_i |w_i| t_i = r`` (p = 2, inf).

  ``c_i = 1`` for ``p = inf`` and ``c_i = |w_i|`` for ``p = 2``. The increase
  ``g(lam) = sum_i |w_i| min(lam c_i, cap_i)`` is piecewise linear and
  non-decreasing in ``lam``, with kinks at ``lam_i = cap_i / c_i``. Sorting
  the kinks gives ``g`` at every kink from two cumulative sums::

    g(lam_(k)) = sum_{j <= k} |w_(j)| cap_(j) + lam_(k) sum_{j > k} |w_(j)| c_(j)

  The number ``k`` of kinks with ``g < r`` is the number of saturated
  coordinates, and ``lam`` solves the linear piece after them::

    lam = (r - sum_{j < k} |w_(j)| cap_(j)) / sum_{j >= k} |w_(j)| c_(j)

  Infinite caps (no box) are kinks at infinity, never saturated.
  """
  aw = tf.abs(w)
  coef = tf.ones_like(aw) if math.isinf(p) else aw
  slope = aw * coef
  active = aw > 0
  kink = tf.where(active, cap / tf.where(active, coef, tf.ones_like(coef)),
                  tf.fill(tf.shape(aw), tf.constant(_INF, aw.dtype)))
  order = tf.argsort(kink, axis=1, stable=True)
  kink_s = tf.gather(kink, order, batch_dims=1)
  gain_s = tf.gather(gain, order, batch_dims=1)
  slope_s = tf.gather(slope, order, batch_dims=1)
  finite = tf.math.is_finite(kink_s)
  saturated = tf.cumsum(gain_s, axis=1)
  after = tf.cumsum(slope_s, axis=1, exclusive=True, reverse=True)
  g_at_kink = tf.where(
      finite, saturated + tf.where(finite, kink_s, tf.zeros_like(kink_s)) * after,
      tf.fill(tf.shape(kink_s), tf.constant(_INF, aw.dtype)))
  n = tf.shape(w)[1]
  k = tf.reduce_sum(tf.cast(g_at_kink < r[:, None], tf.int32), axis=1)
  k = tf.minimum(k, n - 1)[:, None]
  fixed = tf.gather(tf.cumsum(gain_s, axis=1, exclusive=True), k, batch_dims=1)
  free = tf.gather(tf.cumsum(slope_s, axis=1, reverse=True), k, batch_dims=1)
  lam = (r[:, None] - fixed) / tf.where(free > 0, free, tf.ones_like(free))
  return tf.minimum(lam * coef, cap)


def _greedy_l1(r, w, cap, gain):
  """Steps of the l1 projection: fill coordinates by decreasing ``|w_i|``.

  ``min sum_i t_i`` s.t. ``sum_i |w_i| t_i = r``, ``0 <= t_i <= cap_i`` is a
  fractional knapsack: the coordinate of largest ``|w_i|`` buys the most
  increase per unit of l1 norm. With the coordinates sorted by ``|w_i|``
  descending, the first ``k`` (``k`` = the number whose cumulative gain
  ``sum_{j <= k} |w_(j)| cap_(j)`` stays below ``r``) go to their caps, the
  next one takes the remainder ``(r - sum_{j < k} |w_(j)| cap_(j)) / |w_(k)|``
  and the rest stay 0. Without a box this is one coordinate: ``r / ||w||_inf``.
  """
  aw = tf.abs(w)
  order = tf.argsort(aw, axis=1, direction="DESCENDING", stable=True)
  rank = tf.argsort(order, axis=1, stable=True)  # Position of each coordinate.
  aw_s = tf.gather(aw, order, batch_dims=1)
  gain_s = tf.gather(gain, order, batch_dims=1)
  n = tf.shape(w)[1]
  k = tf.reduce_sum(tf.cast(tf.cumsum(gain_s, axis=1) < r[:, None], tf.int32), axis=1)
  k = tf.minimum(k, n - 1)[:, None]
  fixed = tf.gather(tf.cumsum(gain_s, axis=1, exclusive=True), k, batch_dims=1)
  a_k = tf.gather(aw_s, k, batch_dims=1)
  rest = (r[:, None] - fixed) / tf.where(a_k > 0, a_k, tf.ones_like(a_k))
  k = tf.cast(k, rank.dtype)
  return tf.where(rank < k, cap, tf.where(rank == k, rest * tf.ones_like(cap),
                                          tf.zeros_like(cap)))


def project_halfspace_box(x0, w, b, p, lo=None, hi=None):
  """The lp projection of ``x0`` onto a half-space intersected with a box.

  Per example, the step ``d`` of smallest lp norm that moves ``x0`` into
  ``H = {z : <w, z> + b >= 0}`` and keeps it in the box ``[lo, hi]``::

    d = argmin ||d||_p  s.t.  <w, x0 + d> + b >= 0,  lo <= x0 + d <= hi

  the projection step of FAB (Croce & Hein, ICML 2020,
  https://arxiv.org/abs/1907.02044). With ``r = -(<w, x0> + b)``:

  * ``r <= 0`` (``x0`` already in ``H``): ``d = 0``.
  * Otherwise ``d`` lies on the hyperplane ``<w, x0 + d> + b = 0`` and every
    coordinate moves by ``d_i = sign(w_i) t_i``, ``0 <= t_i <= cap_i``, where
    ``cap_i`` is the room to the box face in the direction ``sign(w_i)``
    (``hi_i - x0_i`` or ``x0_i - lo_i``), subject to ``sum_i |w_i| t_i = r``.
    Without a box the minimiser is known in closed form, at distance
    ``||d||_p = r / ||w||_{p*}``::

      p = inf:  d = r sign(w) / ||w||_1
      p = 2:    d = r w / ||w||_2^2
      p = 1:    d = r sign(w_i) e_i / |w_i|,   i = argmax_i |w_i|

    With the box: ``p = inf`` and ``p = 2`` solve the KKT conditions
    ``t_i = min(lam c_i, cap_i)`` (``c_i = 1`` for inf, ``|w_i|`` for 2) for
    the one multiplier ``lam``, found exactly by sorting the kinks
    ``cap_i / c_i`` of the piecewise-linear increase and reading off the
    segment that holds ``r`` from cumulative sums (the reference
    implementation bisects over the same sorted breakpoints); ``p = 1``
    fills the coordinates greedily by decreasing ``|w_i|`` (a fractional
    knapsack). ``O(n log n)`` per example, no iteration.
  * If the box does not meet ``H`` (``sum_i |w_i| cap_i < r``), ``d`` moves
    ``x0`` to the box point that maximises ``<w, z>`` (coordinates with
    ``w_i = 0`` stay): the closest the box comes to ``H``.

  FAB projects onto the hyperplane ``<w, z> + b = 0`` from either side: pass
  ``-w, -b`` for points with ``<w, x0> + b > 0``.

  Args:
    x0: float tensor ``[batch, ...]``, the points; assumed inside the box
      (a coordinate outside it cannot move further out).
    w: the normals, shaped like ``x0``.
    b: the offsets, ``[batch]`` (or a scalar).
    p: 1, 2 or inf.
    lo: lower box bound, a number or a tensor broadcastable to ``x0``, or
      None (no bound). Defaults to `None`.
    hi: upper box bound, like ``lo``. Defaults to `None`.

  Returns:
    The step ``d``, shaped like ``x0``; the projection is ``x0 + d``.

  Raises:
    ValueError: for ``p`` other than 1, 2 or inf.
    TypeError: for a non-numeric ``p``.

  Example:

  >>> x0 = tf.constant([[0.0, 0.0]])
  >>> w = tf.constant([[1.0, 2.0]])
  >>> project_halfspace_box(x0, w, tf.constant([-3.0]), 'inf').numpy().tolist()
  [[1.0, 1.0]]
  >>> project_halfspace_box(x0, w, tf.constant([-3.0]), 'inf', hi=0.5).numpy().tolist()
  [[0.5, 0.5]]
  >>> project_halfspace_box(x0, w, tf.constant([-3.0]), 1).numpy().tolist()
  [[0.0, 1.5]]
  """
  p = _fab_exponent(p)
  x0 = tf.convert_to_tensor(x0)
  if not x0.dtype.is_floating:
    x0 = tf.cast(x0, tf.float32)
  dtype = x0.dtype
  shape = tf.shape(x0)
  batch = shape[0]
  x = tf.reshape(x0, [batch, -1])
  w = tf.reshape(tf.cast(tf.convert_to_tensor(w), dtype), [batch, -1])
  b = tf.broadcast_to(tf.reshape(tf.cast(tf.convert_to_tensor(b), dtype), [-1]), [batch])
  lo = _flat_bound(lo, -_INF, x, shape)
  hi = _flat_bound(hi, _INF, x, shape)

  r = -(tf.reduce_sum(w * x, axis=1) + b)
  room = tf.where(w > 0, tf.maximum(hi - x, 0.0), tf.maximum(x - lo, 0.0))
  cap = tf.where(tf.equal(w, 0), tf.zeros_like(room), room)
  gain = tf.abs(w) * cap  # The largest increase of <w, z> per coordinate.
  feasible = tf.reduce_sum(gain, axis=1) >= r
  if p == 1.0:
    t = _greedy_l1(r, w, cap, gain)
  else:
    t = _water_filling(r, w, cap, gain, p)
  t = tf.where(feasible[:, None], t, cap)
  t = tf.where(r[:, None] > 0, t, tf.zeros_like(t))
  return tf.reshape(tf.sign(w) * t, shape)


# ----------------------------------------------------------------------------
# The attack.
# ----------------------------------------------------------------------------


def _real_in(value, name, lo, hi, *, open_lo=False):
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
    raise TypeError(f"`{name}` must be a number. Received: {name}={value!r}")
  v = float(value)
  if math.isnan(v) or v > hi or v < lo or (open_lo and v == lo):
    interval = f"({lo}, {hi}]" if open_lo else f"[{lo}, {hi}]"
    raise ValueError(f"`{name}` must be in {interval}. Received: {name}={value}")
  return v


def _dual_norm(g, p):
  """``||g||_{p*}`` per row of ``[..., n]``: l1 for inf, l2 for 2, linf for 1."""
  a = tf.abs(g)
  if math.isinf(p):
    return tf.reduce_sum(a, axis=-1)
  if p == 2.0:
    return tf.sqrt(tf.reduce_sum(tf.square(g), axis=-1))
  return tf.reduce_max(a, axis=-1)


def _random_sphere_direction(shape, p, seed, dtype):
  """A random point of the unit lp sphere, as in the reference restarts."""
  if math.isinf(p):
    t = tf.random.stateless_uniform(shape, seed, -1.0, 1.0, dtype=dtype)
  else:
    t = tf.random.stateless_normal(shape, seed, dtype=dtype)
  return norms.normalize(t, p)


@_compiled.compiled_when_eager(
    tensor_args=("x", "y", "epsilon", "clip"), seed_args=("seed",),
    eager_checks=_compiled.vacuous_check("fab_attack"))
@tf.autograph.experimental.do_not_convert
@logits_view.accepts_views(returns="x")
def fab_attack(f,
               x,
               y=None,
               *,
               epsilon=None,
               p=float("inf"),
               targeted=True,
               num_targets=9,
               num_steps=100,
               num_restarts=1,
               alpha_max=0.1,
               eta=1.05,
               beta=0.9,
               clip=None,
               seed=None,
               training=False,
               num_search_steps=10):
  """Minimum-norm adversarial examples by FAB (Croce & Hein, ICML 2020).

  Per example, every run iterates from ``x_0`` (``x``, or a random start)::

    j       = argmin_{j != y} |f_j - f_y|(x_k) / ||grad(f_j - f_y)(x_k)||_{p*}
    pi      = {z : (f_j - f_y)(x_k) + <grad(f_j - f_y)(x_k), z - x_k> = 0}
    d_k     = proj_p(x_k -> pi),   d_0 = proj_p(x -> pi)    (in the box)
    alpha   = min(||d_k||_p / (||d_k||_p + ||d_0||_p), alpha_max)
    x_{k+1} = clip( (1 - alpha) (x_k + eta d_k) + alpha (x + eta d_0) )
    if max_{k != y} f_k(x_{k+1}) > f_y(x_{k+1}):
        record x_{k+1} if it is the smallest so far,
        x_{k+1} <- x + beta (x_{k+1} - x)

  with the exact projections of `project_halfspace_box`. ``targeted=True``
  is FAB-T (Croce & Hein, ICML 2020, https://arxiv.org/abs/2003.01690): ``j``
  is fixed to a target class instead of the closest one, and the attack runs
  once per target, the ``num_targets`` classes other than ``y`` with the
  largest clean logits; one gradient per step instead of ``d``. Success is
  misclassification (any class other than ``y``), in both versions, with a
  strict win (``f_k > f_y``), so that a returned point is adversarial
  whatever the tie rule of ``argmax``.

  Restarts: each run (each target, for FAB-T) starts at ``x`` first; the
  ``num_restarts - 1`` further runs start on the lp sphere around ``x`` of
  radius ``min(best, epsilon) / 2`` (clipped to the box), with ``best`` the
  smallest adversarial norm found so far for that example (the original FAB;
  AutoAttack's copy uses ``epsilon / 2``). Without ``epsilon`` the radius is
  ``best / 2``, or half the linearised distance to the boundary at ``x``
  while nothing was found.

  Final search: after each run, a few steps of false position (Illinois
  rule) on the margin ``f_y - max_{k != y} f_k`` along the segment from
  ``x`` to the best point (the "linear approximation search" of the
  original FAB code). The extrapolation ``eta > 1`` keeps the recorded
  iterates about ``(eta - 1)(1 - beta)`` past the boundary in relative norm
  (measured on linear models with the defaults: 0.52-0.53%); the search
  removes that, and lands on a linear piece in one step, ``1e-4`` (relative)
  past the root so that the point is adversarial beyond float rounding
  (measured: at most 1.5e-4 above the exact minimal distance of a linear
  model, for p in {1, 2, inf}, FAB and FAB-T). Each step costs one forward
  pass; ``num_search_steps=0`` leaves it out.

  With ``epsilon`` the attack stops (between steps and between runs) once
  every example of the batch has an adversarial point within ``epsilon``
  (the AutoAttack use); the returned point is still the smallest found.

  Run it inside ``tf.function`` for speed: the runs and the steps are
  ``tf.while_loop``s, and it does not retrace for a fixed input signature.
  Untargeted FAB takes the ``d`` gradients of a step in one backward pass
  over ``d`` stacked copies of the batch (``d`` times the memory of a
  gradient; with ``training=True`` batch statistics are those of the copies,
  i.e. of the batch).

  Args:
    f: a Keras model (called with ``training=training``) or a callable from a
      batch to logits ``[batch, d]`` (``d`` static).
    x: float tensor ``[batch, ...]``, inside ``clip`` if given.
    y: integer labels ``[batch]``, one-hot labels ``[batch, d]``, or None
      for the model's own clean predictions. Defaults to `None`.
    epsilon: None, or a positive radius (number, scalar or ``[batch]``
      tensor) for the random restarts and the early stop. Defaults to
      `None`.
    p: 1, 2 or inf. Defaults to `inf`.
    targeted: FAB-T (True) or the untargeted FAB (False). Defaults to
      `True`.
    num_targets: the number of target classes of FAB-T, in ``[1, d - 1]``;
      checked only when ``targeted``. Defaults to `9`.
    num_steps: steps per run, > 0. Defaults to `100`.
    num_restarts: runs per target (FAB-T) or in all (FAB), > 0. Defaults to
      `1`.
    alpha_max: the largest bias towards ``x``, in ``[0, 1]``. Defaults to
      `0.1`.
    eta: the extrapolation (overshoot) factor, in ``[1, 10]``. Defaults to
      `1.05`.
    beta: the backward step after a success, in ``(0, 1]``. Defaults to
      `0.9`.
    clip: None or ``(lo, hi)``, the valid input range (numbers or tensors
      broadcastable to ``x``). Defaults to `None`.
    seed: None or a non-negative integer for the random restarts. Defaults
      to `None`.
    training: the ``training`` flag for Keras models. Defaults to `False`.
    num_search_steps: steps of the final search after each run, >= 0.
      Defaults to `10`.

  Returns:
    ``x_adv`` with the shape and dtype of ``x``: per example the adversarial
    point of smallest lp norm found (``x`` itself where ``x`` is already
    misclassified), or ``x`` where none was found.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``x`` outside ``clip`` (beyond 1e-6 * (hi - lo)); labels
      that are not integers or not in ``[0, num_classes)``. Warns with
      `keras_opnorm.VacuousThreatModelWarning` when ``epsilon`` covers the
      ``clip`` box (``epsilon >= ||(hi - lo) / 2||_p``).
    ValueError: for ``p`` other than 1, 2 or inf, ``num_steps`` or
      ``num_restarts`` <= 0, ``num_targets`` outside ``[1, d - 1]`` (when
      ``targeted``), ``alpha_max``, ``eta`` or ``beta`` out of range, an
      ``epsilon`` that is not positive and finite, labels whose batch
      differs from ``x``, or ``f`` without a static number of classes.
    TypeError: for integer ``x``, a non-callable ``f`` or non-numeric
      arguments.

  Example:

  >>> s = lambda x: tf.reduce_sum(x, axis=1, keepdims=True)
  >>> f = lambda x: tf.concat([s(x), -s(x)], axis=1)  # class 0 iff x_1 + x_2 > 0
  >>> x = tf.constant([[1.0, 1.0]])
  >>> x_adv = fab_attack(f, x, p=2, targeted=False, num_steps=5)
  >>> round(float(tf.norm(x_adv - x)), 3)  # the l2 distance 2 / sqrt(2)
  1.414
  """
  in_dtype = tf.as_dtype(getattr(x, "dtype", tf.float32))
  x = _checks.float_input(x, "x")
  p = _fab_exponent(p)
  num_steps = _checks.positive_int(num_steps, "num_steps")
  num_restarts = _checks.positive_int(num_restarts, "num_restarts")
  num_targets = _checks.positive_int(num_targets, "num_targets")
  if isinstance(num_search_steps, (bool, np.bool_)) or not isinstance(
      num_search_steps, (numbers.Integral, np.integer)) or num_search_steps < 0:
    raise ValueError(f"`num_search_steps` must be a non-negative integer. Received: "
                     f"num_search_steps={num_search_steps!r}")
  num_search_steps = int(num_search_steps)
  alpha_max = _real_in(alpha_max, "alpha_max", 0.0, 1.0)
  eta = _real_in(eta, "eta", 1.0, 10.0)
  beta = _real_in(beta, "beta", 0.0, 1.0, open_lo=True)
  eps = None if epsilon is None else _radius(epsilon, "epsilon", x)
  clip = _clip_range(clip)
  x = _check_in_box(x, clip)
  if epsilon is not None:
    warn_if_vacuous(epsilon, p, clip, x.shape[1:], "fab_attack")
  seed = seed_tensor(seed)
  if y is not None:
    y = _labels(y, x)
  fn = jacobian.as_logits_fn(f, training=training)

  checks = _same_batch(x, y, "y") if y is not None else []
  with tf.control_dependencies(checks):
    x = tf.identity(x) if checks else x
  dtype = x.dtype
  shape = tf.shape(x)
  batch = shape[0]
  rank = x.shape.rank
  if clip is None:
    lo = hi = None
  else:
    lo = tf.cast(clip[0], dtype)
    hi = tf.cast(clip[1], dtype)

  logits0 = tf.stop_gradient(fn(x))
  d = logits0.shape[-1]
  if d is None:
    raise ValueError("`f` must return logits with a static number of classes d "
                     "([batch, d]). Received: f(x) with unknown d")
  d = int(d)
  _check_label_width(y, logits0)
  if y is None:
    y = tf.argmax(logits0, axis=-1, output_type=tf.int32)
  elif y.shape.rank == 2:
    y = tf.argmax(y, axis=-1, output_type=tf.int32)
  else:
    y = tf.cast(y, tf.int32)
  if targeted and not num_targets <= d - 1:
    raise ValueError(f"`num_targets` must be in [1, d - 1] = [1, {d - 1}] for `f` with "
                     f"d={d} classes. Received: num_targets={num_targets}")
  y_hot = tf.one_hot(y, d, dtype=logits0.dtype)
  num_runs = num_restarts * (num_targets if targeted else 1)

  def per_example(t):
    return tf.reshape(t, [-1] + [1] * (rank - 1))

  def box(z):
    return z if clip is None else tf.clip_by_value(z, lo, hi)

  def lp(delta):
    return norms.lp_norm(delta, p)

  def margin(z):
    """``f_y - max_{k != y} f_k``: positive iff ``y`` wins (ties aside)."""
    others = tf.where(y_hot > 0, tf.fill(tf.shape(z), tf.constant(-_INF, z.dtype)), z)
    return tf.cast(tf.reduce_sum(z * y_hot, 1) - tf.reduce_max(others, 1), dtype)

  def misclassified(z):
    """A class other than ``y`` wins strictly (adversarial for every tie rule)."""
    return margin(z) < 0

  def flat(t):
    return tf.reshape(t, [batch, -1])

  def closest_boundary(x1):
    """``(w, df)`` of the closest linearised boundary: d gradients, one pass."""
    xt = tf.tile(x1, [d] + [1] * (rank - 1))
    eye = tf.eye(d, dtype=logits0.dtype)
    # Copy j of the batch carries the output gradient e_j - e_y.
    u = tf.reshape(eye[:, None, :] - y_hot[None, :, :], [-1, d])
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(xt)
      zt = fn(xt)
    g = tape.gradient(zt, xt, output_gradients=tf.cast(u, zt.dtype))
    if g is None:
      raise _checks.not_differentiable(f)
    g = tf.transpose(tf.reshape(tf.cast(g, dtype), [d, batch, -1]), [1, 0, 2])
    z = tf.cast(zt[:batch], dtype)
    df = z - tf.reduce_sum(z * tf.cast(y_hot, dtype), 1, keepdims=True)  # [b, d]
    dist = tf.abs(df) / (_dual_norm(g, p) + _TINY)
    dist = tf.where(y_hot > 0, tf.fill(tf.shape(dist), tf.constant(_INF, dtype)), dist)
    j = tf.argmin(dist, axis=1, output_type=tf.int32)
    return (tf.gather(g, j, batch_dims=1), tf.gather(df, j, batch_dims=1),
            tf.reduce_min(dist, axis=1))

  def target_boundary(x1, target):
    """``(w, df)`` of the boundary between ``y`` and ``target``: one gradient."""
    t_hot = tf.one_hot(target, d, dtype=logits0.dtype)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(x1)
      z = fn(x1)
      diff = tf.reduce_sum(z * tf.cast(t_hot - y_hot, z.dtype), axis=1)
      total = tf.reduce_sum(diff)
    g = tape.gradient(total, x1)
    if g is None:
      raise _checks.not_differentiable(f)
    return flat(tf.cast(g, dtype)), tf.cast(diff, dtype)

  def onto_boundary(point, w, b):
    """The step from ``point`` onto ``<w, z> + b = 0`` (from either side)."""
    side = tf.reduce_sum(w * flat(point), axis=1) + b
    s = tf.where(side > 0, -tf.ones_like(side), tf.ones_like(side))
    return project_halfspace_box(point, tf.reshape(w * s[:, None], shape), b * s, p,
                                 lo, hi)

  def fab_step(x1, target, best_x, best_norm):
    if targeted:
      w, df = target_boundary(x1, target)
    else:
      w, df, _ = closest_boundary(x1)
    b = df - tf.reduce_sum(w * flat(x1), axis=1)
    d1 = onto_boundary(x1, w, b)
    d0 = onto_boundary(x, w, b)
    a1 = tf.maximum(lp(d1), _MIN_STEP_NORM)
    a0 = tf.maximum(lp(d0), _MIN_STEP_NORM)
    alpha = per_example(tf.clip_by_value(a1 / (a1 + a0), 0.0, alpha_max))
    x1 = box((1.0 - alpha) * (x1 + eta * d1) + alpha * (x + eta * d0))
    adv = misclassified(fn(x1))
    norm = lp(x1 - x)
    better = tf.logical_and(adv, norm < best_norm)
    best_x = tf.where(per_example(better), x1, best_x)
    best_norm = tf.where(better, norm, best_norm)
    x1 = tf.where(per_example(adv), x + beta * (x1 - x), x1)
    return x1, best_x, best_norm

  def final_search(best_x, best_norm):
    """False position on the margin along ``x -> best_x`` (Illinois rule)."""
    v = best_x - x
    found = tf.logical_and(tf.math.is_finite(best_norm), best_norm > 0)
    zeros = tf.zeros([batch], dtype)

    def body(k, t_lo, g_lo, t_hi, g_hi, x_hi, side):
      gap = g_lo - g_hi
      theta = tf.where(gap > 0, g_lo / tf.where(gap > 0, gap, tf.ones_like(gap)),
                       0.5 * tf.ones_like(gap))
      t = t_lo + (t_hi - t_lo) * tf.clip_by_value(theta, 0.0, 1.0)
      t = tf.minimum(t * (1.0 + _SEARCH_NUDGE), t_hi)
      x3 = x + per_example(t) * v
      z3 = fn(x3)
      adv = tf.logical_and(misclassified(z3), found)
      g3 = margin(z3)
      # Illinois: halve the value kept at an end that survives twice in a row.
      g_lo = tf.where(adv & (side > 0), 0.5 * g_lo, g_lo)
      g_hi = tf.where(~adv & (side < 0), 0.5 * g_hi, g_hi)
      return (k + 1, tf.where(adv, t_lo, t), tf.where(adv, g_lo, g3),
              tf.where(adv, t, t_hi), tf.where(adv, g3, g_hi),
              tf.where(per_example(adv), x3, x_hi),
              tf.where(adv, tf.ones_like(side), -tf.ones_like(side)))

    init = (tf.constant(0), zeros, margin(logits0), tf.ones([batch], dtype),
            margin(fn(best_x)), best_x, tf.zeros([batch], tf.int32))
    out = tf.while_loop(lambda k, *_: k < num_search_steps, body, init,
                        maximum_iterations=num_search_steps)
    x_hi = out[5]
    norm = lp(x_hi - x)
    better = tf.logical_and(found, norm < best_norm)
    return (tf.where(per_example(better), x_hi, best_x),
            tf.where(better, norm, best_norm))

  eps_b = None if eps is None else tf.broadcast_to(tf.reshape(eps, [-1]), [batch])

  def all_done(best_norm):
    if eps_b is None:
      return tf.constant(False)
    return tf.reduce_all(best_norm <= eps_b)

  if targeted:
    others = tf.where(y_hot > 0, tf.fill(tf.shape(logits0), tf.constant(-_INF, logits0.dtype)),
                      logits0)
    targets = tf.math.top_k(others, k=num_targets).indices  # [batch, num_targets]
  # Radius scale of a random restart while nothing has been found.
  if eps_b is None and num_restarts > 1:
    fallback = closest_boundary(x)[2]
  else:
    fallback = eps_b

  def run(r, best_x, best_norm):
    target = tf.gather(targets, r // num_restarts, axis=1) if targeted else None
    radius = best_norm if eps_b is None else tf.minimum(best_norm, eps_b)
    if fallback is not None:
      radius = tf.where(tf.math.is_finite(radius), radius, fallback)
    direction = _random_sphere_direction(shape, p, fold_seed(seed, r), dtype)
    x_start = box(x + per_example(0.5 * radius) * direction)
    x1 = tf.cond(r % num_restarts > 0, lambda: x_start, lambda: x)

    def step(i, x1, best_x, best_norm):
      return (i + 1,) + fab_step(x1, target, best_x, best_norm)

    _, _, best_x, best_norm = tf.while_loop(
        lambda i, _, __, best_norm: tf.logical_and(i < num_steps,
                                                   tf.logical_not(all_done(best_norm))),
        step, (tf.constant(0), x1, best_x, best_norm), maximum_iterations=num_steps)
    best_x, best_norm = final_search(best_x, best_norm)
    return r + 1, best_x, best_norm

  # Clean points that are already misclassified are their own best (norm 0).
  wrong = tf.not_equal(tf.argmax(logits0, axis=-1, output_type=tf.int32), y)
  best_norm = tf.where(wrong, tf.zeros([batch], dtype), tf.fill([batch], tf.constant(_INF, dtype)))
  _, best_x, _ = tf.while_loop(
      lambda r, _, best_norm: tf.logical_and(r < num_runs,
                                             tf.logical_not(all_done(best_norm))),
      run, (tf.constant(0), x, best_norm), maximum_iterations=num_runs)
  return tf.cast(best_x, in_dtype)
