"""Auto-PGD (APGD, APGD-T and l1-APGD): PGD with a budget-aware step size.

``apgd_attack`` is the step-size-free projected gradient ascent of Croce &
Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020 (https://arxiv.org/abs/2003.01690),
Algorithm 1, for ``p in {inf, 2}``::

  z_{k+1} = P( x_k + eta_k s_p(grad l(x_k)) )
  x_{k+1} = P( x_k + alpha (z_{k+1} - x_k) + (1 - alpha) (x_k - x_{k-1}) )

with ``P`` the projection onto the eps-ball (and the box), ``alpha = 1`` for
the first step and ``0.75`` after it, and ``eta_0 = 2 eps``. At the
checkpoints ``w_j`` of `apgd_schedule_checkpoints` the step size of an example
is halved, and its iterate restarted from its best point ``x_max``, if its
loss increased in fewer than a fraction ``rho`` of the steps since the last
checkpoint, or if neither its step size nor its best loss changed since then.

For ``p = 1`` it is l1-APGD (Croce & Hein, "Mind the box: l1-APGD for sparse
adversarial attacks on image classifiers", ICML 2021,
https://arxiv.org/abs/2103.01208): a sparse step on the top-k coordinates of
the gradient with an adaptive sparsity k, and the exact projection onto the
intersection of the l1 ball and the box (`project_l1_box`).

``apgd_targeted_attack`` (APGD-T) runs APGD on the targeted DLR loss against
the classes with the highest clean logits, one target after the other.

Every loop is a ``tf.while_loop``: the attacks run eagerly, inside
``tf.function`` (much faster: eager loops run op by op) and under XLA
(``jit_compile=True``), and do not retrace for a fixed input signature. Randomness is
stateless (``tf.random.stateless_*`` from one ``seed``), so a seed fixes the
result.
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
from keras_opnorm.attacks.losses import crossentropy_loss
from keras_opnorm.attacks.losses import dlr_loss
from keras_opnorm.attacks.losses import targeted_dlr_loss

__all__ = [
    "apgd_attack",
    "apgd_targeted_attack",
    "apgd_schedule_checkpoints",
    "project_l1_box",
    "APGD_LOSSES",
]

_INF = float("inf")
APGD_LOSSES = ("crossentropy", "dlr")

# The checkpoint rule of APGD (Croce & Hein 2020, Sec. 3.2), in hundredths
# of the budget: p_1 = 0.22, steps shrink by 0.03 down to at least 0.06.
_P1, _DECAY, _MIN_GAP = 22, 3, 6

# l1-APGD (Croce & Hein 2021, Sec. 4 and the reference implementation).
_L1_ETA = 1.0              # eta_0 = eps
_L1_ETA_MIN = 0.1          # eta stays in [eps / 10, eps]
_L1_ETA_DECAY = 1.5        # eta <- eta / 1.5 at a checkpoint
_L1_SPARSITY_0 = 0.2       # k_0 = 0.2 n coordinates per step
_L1_SPARSITY_DIV = 1.5     # k <- ||x_max - x||_0 / 1.5
_L1_SPARSITY_DROP = 0.95   # "the sparsity of x_max fell": ratio < 0.95
_L1_PERIOD = 0.04          # a checkpoint every 4% of the budget


# ----------------------------------------------------------------------------
# Pure pieces: the checkpoint schedule and the box-aware l1 projection.
# ----------------------------------------------------------------------------


def apgd_schedule_checkpoints(num_steps):
  """The checkpoints ``w_j`` of APGD at which the step size may be halved.

  Croce & Hein (2020), Sec. 3.2::

    p_0 = 0,  p_1 = 0.22,  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    w_j = ceil(p_j * N_iter)

  for every ``p_j <= 1``: the gaps ``p_j - p_{j-1}`` are 0.22, 0.19, 0.16,
  0.13, 0.10, 0.07, then 0.06 for ever, so ``p = 0, 0.22, 0.41, 0.57, 0.70,
  0.80, 0.87, 0.93, 0.99``. The ``p_j`` are computed exactly (in hundredths,
  integers), so that e.g. ``0.22 * 100`` gives 22 and not 23 from rounding;
  equal ``w_j`` (small budgets) are listed once. The reference
  implementation (fra31/auto-attack, ``autopgd_base.py``) uses
  ``floor(0.22 N)`` for the first gap and then integer gaps
  ``max(gap - floor(0.03 N), floor(0.06 N))``; for ``N = 100`` both give the
  same checkpoints.

  Args:
    num_steps: the iteration budget ``N_iter``, a positive integer.

  Returns:
    The strictly increasing list ``[w_0 = 0, w_1, ...]`` of Python ints, all
    ``<= num_steps``.

  Raises:
    ValueError: if ``num_steps <= 0``.
    TypeError: if ``num_steps`` is not an integer.

  Example:

  >>> apgd_schedule_checkpoints(100)
  [0, 22, 41, 57, 70, 80, 87, 93, 99]
  """
  num_steps = _checks.positive_int(num_steps, "num_steps")
  hundredths = [0, _P1]
  while True:
    gap = max(hundredths[-1] - hundredths[-2] - _DECAY, _MIN_GAP)
    if hundredths[-1] + gap > 100:
      break
    hundredths.append(hundredths[-1] + gap)
  out = []
  for h in hundredths:
    w = -(-h * num_steps // 100)  # ceil(h * N / 100) in integers.
    if not out or w > out[-1]:
      out.append(w)
  return out


def _as_dtype(v, dtype):
  """``v`` as a tensor of ``dtype`` (Python floats converted directly, not via float32)."""
  if tf.is_tensor(v) or isinstance(v, tf.Variable):
    return tf.cast(v, dtype)
  return tf.constant(np.asarray(v, dtype.as_numpy_dtype))


def project_l1_box(delta, x, epsilon, lo=None, hi=None):
  """Exact Euclidean projection onto ``{d : ||d||_1 <= eps, lo <= x + d <= hi}``.

  The "box-aware" projection of l1-APGD (Croce & Hein 2021, Sec. 3.2). Per
  example, the KKT conditions of ``min ||d - delta||_2^2 / 2`` subject to
  ``||d||_1 <= eps`` and ``a <= d <= b`` (``a = lo - x <= 0 <= b = hi - x``)
  separate over coordinates once the multiplier ``lam >= 0`` of the l1
  constraint is fixed::

    d_i(lam) = sign(delta_i) * min( max(|delta_i| - lam, 0), c_i )

  (soft thresholding, then clipping to the room ``c_i`` the box leaves in the
  direction of ``delta_i``: ``b_i`` for ``delta_i >= 0``, ``-a_i`` else).
  If ``phi(0) = ||d(0)||_1 <= eps`` the answer is ``d(0)`` (just the box);
  otherwise ``lam`` solves ``phi(lam) = ||d(lam)||_1 = eps``. ``phi`` is
  piecewise linear and non-increasing with breakpoints ``|delta_i|`` and
  ``max(|delta_i| - c_i, 0)``: it is evaluated at all ``2n`` sorted
  breakpoints by a cumulative sum of slopes and interpolated on the segment
  where it crosses ``eps``, so the result is exact (no iteration). Without a
  box this is the projection of Duchi et al. (2008).

  Args:
    delta: the perturbations, a float tensor ``[batch, ...]``.
    x: the centres, shaped like ``delta``, assumed to lie in ``[lo, hi]``.
    epsilon: positive scalar or ``[batch]`` radii.
    lo: lower bound of the box (number or tensor broadcastable to ``x``),
      None for none. Defaults to `None`.
    hi: upper bound of the box, None for none. Defaults to `None`.

  Returns:
    ``d`` shaped like ``delta`` with ``||d||_1 <= eps`` (up to rounding) and
    ``lo <= x + d <= hi``.

  Example:

  >>> d = project_l1_box(tf.constant([[2.0, 1.0]]), tf.constant([[0.5, 0.0]]),
  ...                    1.0, lo=0.0, hi=1.0)
  >>> d.numpy().tolist()  # lam = 0.5: (min(2 - 0.5, c_1 = 0.5), 1 - 0.5)
  [[0.5, 0.5]]
  """
  delta = tf.convert_to_tensor(delta)
  dtype = delta.dtype
  x = _as_dtype(x, dtype)
  shape = tf.shape(delta)
  b = shape[0]
  flat = tf.reshape(delta, [b, -1])
  xf = tf.reshape(tf.broadcast_to(x, shape), [b, -1])
  eps = tf.reshape(tf.broadcast_to(tf.reshape(_as_dtype(epsilon, dtype), [-1]), [b]), [b, 1])

  def bound(v):
    return tf.reshape(tf.broadcast_to(_as_dtype(v, dtype), shape), [b, -1])

  inf = tf.constant(_INF, dtype)
  room_up = inf if hi is None else bound(hi) - xf
  room_down = inf if lo is None else xf - bound(lo)
  c = tf.maximum(tf.where(flat >= 0, room_up, room_down), 0.0)
  a = tf.abs(flat)
  boxed = tf.minimum(a, c)                                   # d(0)
  inside = tf.reduce_sum(boxed, axis=1, keepdims=True) <= eps

  # Breakpoints of phi: coordinate i moves (slope -1) for lam in (u_i, a_i).
  u = tf.maximum(a - c, 0.0)
  points = tf.concat([a, u], axis=1)
  signs = tf.concat([tf.ones_like(a), -tf.ones_like(a)], axis=1)
  order = tf.argsort(points, axis=1, direction="DESCENDING")
  points = tf.gather(points, order, batch_dims=1)
  slope = tf.cumsum(tf.gather(signs, order, batch_dims=1), axis=1)  # on (P_{k+1}, P_k)
  gaps = points[:, :-1] - points[:, 1:]
  phi = tf.concat([tf.zeros([b, 1], dtype),                 # phi(P_1 = max a) = 0
                   tf.cumsum(slope[:, :-1] * gaps, axis=1)], axis=1)
  # First breakpoint (from the top) where phi reaches eps; phi(P_1) = 0 < eps.
  first = tf.argmax(tf.cast(phi >= eps, tf.int32), axis=1, output_type=tf.int32)
  prev = tf.maximum(first - 1, 0)[:, tf.newaxis]
  p_prev = tf.gather(points, prev, batch_dims=1)
  phi_prev = tf.gather(phi, prev, batch_dims=1)
  s_prev = tf.maximum(tf.gather(slope, prev, batch_dims=1), 1.0)
  lam = tf.maximum(p_prev - (eps - phi_prev) / s_prev, 0.0)
  d = tf.minimum(tf.maximum(a - lam, 0.0), c)
  # Rounding guard: shrinking towards 0 keeps the box (0 lies in [a, b]).
  total = tf.reduce_sum(d, axis=1, keepdims=True)
  d = d * tf.minimum(1.0, eps / tf.maximum(total, tf.constant(1e-30, dtype)))
  out = tf.sign(flat) * tf.where(inside, boxed, d)
  return tf.reshape(out, shape)


# ----------------------------------------------------------------------------
# Argument checks.
# ----------------------------------------------------------------------------


def _unit_interval(value, name, closed_right=False):
  """Returns ``value`` as a float in ``(0, 1)`` (or ``(0, 1]``), else raises."""
  interval = "(0, 1]" if closed_right else "(0, 1)"
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
    raise TypeError(f"`{name}` must be a number in {interval}. Received: {name}={value!r}")
  v = float(value)
  if not (0.0 < v < 1.0 or (closed_right and v == 1.0)):
    raise ValueError(f"`{name}` must be a number in {interval}. Received: {name}={value}")
  return v


def _apgd_exponent(p, name):
  p = _checks.exponent(p, "p")
  if p not in (1.0, 2.0) and not math.isinf(p):
    raise ValueError(f"`{name}` supports p in {{1, 2, inf}}. Received: p={p:g}")
  return p


def _apgd_loss(loss):
  if callable(loss):
    return loss
  if not isinstance(loss, str):
    raise TypeError(f"`loss` must be one of {APGD_LOSSES} or a callable "
                    f"(logits_adv, logits_clean, y) -> [batch]. Received: loss={loss!r}")
  if loss == "crossentropy":
    return crossentropy_loss
  if loss == "dlr":
    return dlr_loss
  raise ValueError(f"`loss` must be one of {APGD_LOSSES} or a callable "
                   f"(logits_adv, logits_clean, y) -> [batch]. Received: loss={loss!r}")


class _Setup:
  """The checked inputs shared by APGD and APGD-T."""

  def __init__(self, f, x, y, epsilon, p, num_steps, num_restarts, rho, clip, seed,
               training, name):
    self.in_dtype = tf.as_dtype(getattr(x, "dtype", tf.float32))
    x = _checks.float_input(x, "x")
    self.p = _apgd_exponent(p, name)
    self.num_steps = _checks.positive_int(num_steps, "num_steps")
    self.num_restarts = _checks.positive_int(num_restarts, "num_restarts")
    self.rho = _unit_interval(rho, "rho")
    eps = _radius(epsilon, "epsilon", x)
    clip = _clip_range(clip)
    x = _check_in_box(x, clip)
    warn_if_vacuous(epsilon, self.p, clip, x.shape[1:], name, stacklevel=4)
    self.lo = None if clip is None else tf.cast(clip[0], x.dtype)
    self.hi = None if clip is None else tf.cast(clip[1], x.dtype)
    if y is not None:
      y = _labels(y, x)
      checks = _same_batch(x, y, "y")
      if checks:
        with tf.control_dependencies(checks):
          x = tf.identity(x)
    self.seed = seed_tensor(seed)
    self.f = f
    self.fn = jacobian.as_logits_fn(f, training=training)
    self.x = x
    self.eps = tf.broadcast_to(tf.reshape(eps, [-1]), tf.shape(x)[:1])
    # Clean logits: labels for y=None, targets, and examples already broken.
    self.logits_clean = tf.stop_gradient(self.fn(x))
    _check_label_width(y, self.logits_clean)
    pred = tf.argmax(self.logits_clean, axis=-1, output_type=tf.int32)
    if y is None:
      y = pred
    self.y = y
    self.labels = (tf.argmax(y, axis=-1, output_type=tf.int32) if y.shape.rank == 2
                   else tf.cast(y, tf.int32))
    self.clean_broken = tf.not_equal(pred, self.labels)

  def value_and_grad(self, loss_of_logits):
    """``x_adv -> (loss [batch] float32, gradient, misclassified [batch])``."""

    def vg(x_adv):
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x_adv)
        logits = self.fn(x_adv)
        loss = loss_of_logits(logits)
        total = tf.reduce_sum(loss)
      g = tape.gradient(total, x_adv)
      if g is None:
        raise _checks.not_differentiable(self.f, of="the attack loss")
      broken = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), self.labels)
      return tf.cast(loss, tf.float32), g, broken

    return vg


# ----------------------------------------------------------------------------
# One run of APGD (one random start).
# ----------------------------------------------------------------------------


def _apgd_run(s, value_and_grad, momentum, seed):
  """One APGD run from a random start; ``(x_best, broken, loss_best)`` per example.

  ``x_best`` is the best iterate: a misclassified one if any (then the one
  with the highest loss among them), else the one with the highest loss.
  """
  x, p, num_steps = s.x, s.p, s.num_steps
  lo, hi = s.lo, s.hi
  dtype = x.dtype
  rank = x.shape.rank
  batch = tf.shape(x)[0]
  n = tf.reduce_prod(tf.shape(x)[1:])
  n_f = tf.cast(n, tf.float32)
  eps = s.eps

  def per_ex(v):
    return tf.reshape(tf.cast(v, dtype), [-1] + [1] * (rank - 1))

  def box(z):
    return z if lo is None else tf.clip_by_value(z, lo, hi)

  def project(z):
    """A feasible point: in the eps-ball around x and in [lo, hi]."""
    if math.isinf(p):
      e = per_ex(eps)
      return box(x + tf.clip_by_value(z - x, -e, e))
    if p == 2.0:
      return box(x + norms.project_lp_ball(z - x, eps, 2.0))
    return x + project_l1_box(z - x, x, eps, lo, hi)

  # Random start as in the reference implementation: a uniform cube point
  # rescaled onto the l_inf sphere; a Gaussian direction on the l2 sphere; a
  # Gaussian (scaled by eps) projected onto the l1 ball and the box.
  shape = tf.shape(x)
  if math.isinf(p):
    t = tf.random.stateless_uniform(shape, seed, -1.0, 1.0, dtype=dtype)
    x0 = box(x + per_ex(eps) * norms.normalize(t, _INF))
  elif p == 2.0:
    t = tf.random.stateless_normal(shape, seed, dtype=dtype)
    x0 = box(x + per_ex(eps) * norms.normalize(t, 2.0))
  else:
    t = per_ex(eps) * tf.random.stateless_normal(shape, seed, dtype=dtype)
    x0 = x + project_l1_box(t, x, eps, lo, hi)

  if p == 1.0:
    period = max(int(_L1_PERIOD * num_steps), 1)
    checks = [k % period == 0 for k in range(num_steps + 1)]
  else:
    checks = [False] * (num_steps + 1)
    for w in apgd_schedule_checkpoints(num_steps)[1:]:
      checks[w] = True
  checks = tf.constant(checks)

  def sparse_direction(g, x_cur, k_frac):
    """sign(g) on the top k_frac * n movable coordinates by |g|, unit l1 norm."""
    if lo is not None:
      # Box-aware: coordinates on the box with g pointing outward cannot move.
      stuck = tf.logical_or(tf.logical_and(x_cur <= lo, g < 0),
                            tf.logical_and(x_cur >= hi, g > 0))
      g = tf.where(stuck, tf.zeros_like(g), g)
    flat = tf.reshape(g, [batch, -1])
    a = tf.abs(flat)
    idx = tf.cast(tf.floor((1.0 - k_frac) * n_f), tf.int32)
    idx = tf.clip_by_value(idx, 0, n - 1)[:, tf.newaxis]
    thresh = tf.gather(tf.sort(a, axis=1), idx, batch_dims=1)
    keep = tf.logical_and(a >= thresh, a > 0)
    e = tf.where(keep, tf.sign(flat), tf.zeros_like(flat))
    e = e / tf.maximum(tf.reduce_sum(tf.abs(e), axis=1, keepdims=True), 1.0)
    return tf.reshape(e, shape)

  l0, g0, broken0 = value_and_grad(x0)
  if p == 1.0:
    eta0 = _L1_ETA * eps
  else:
    eta0 = 2.0 * eps
  init = dict(
      k=tf.constant(0),
      x_cur=x0, x_prev=x0, g_cur=g0, l_cur=l0,
      eta=eta0,
      x_max=x0, g_max=g0, f_max=l0,
      count=tf.zeros([batch], tf.float32),     # loss increases since the last checkpoint
      f_max_last=l0,                           # f_max at the last checkpoint
      reduced_last=tf.zeros([batch], tf.bool),  # eta halved at the last checkpoint
      last_check=tf.constant(0),
      k_frac=tf.fill([batch], tf.constant(_L1_SPARSITY_0, tf.float32)),  # l1 sparsity
      sp_old=tf.fill([batch], n_f),            # ||x_max - x||_0 at the last checkpoint
      x_out=x0, broken_out=broken0, l_out=l0)

  def body(st):
    st = dict(st)
    k, x_cur, g = st["k"], st["x_cur"], st["g_cur"]
    eta = per_ex(st["eta"])
    if p == 1.0:
      x_new = project(x_cur + eta * sparse_direction(g, x_cur, st["k_frac"]))
    else:
      step = tf.sign(g) if math.isinf(p) else norms.normalize(g, 2.0)
      z = project(x_cur + eta * step)
      alpha = tf.where(tf.equal(k, 0), tf.constant(1.0, dtype), tf.constant(momentum, dtype))
      x_new = project(x_cur + alpha * (z - x_cur) + (1.0 - alpha) * (x_cur - st["x_prev"]))
    l_new, g_new, broken = value_and_grad(x_new)

    count = st["count"] + tf.cast(l_new > st["l_cur"], tf.float32)
    better = l_new > st["f_max"]
    better_b = tf.reshape(better, [-1] + [1] * (rank - 1))
    x_max = tf.where(better_b, x_new, st["x_max"])
    g_max = tf.where(better_b, g_new, st["g_max"])
    f_max = tf.where(better, l_new, st["f_max"])
    take = tf.logical_or(
        tf.logical_and(broken, tf.logical_not(st["broken_out"])),
        tf.logical_and(tf.equal(broken, st["broken_out"]), l_new > st["l_out"]))
    take_b = tf.reshape(take, [-1] + [1] * (rank - 1))
    st.update(
        x_out=tf.where(take_b, x_new, st["x_out"]),
        broken_out=tf.logical_or(broken, st["broken_out"]),
        l_out=tf.where(take, l_new, st["l_out"]))

    k1 = k + 1
    check = tf.gather(checks, k1)
    eta = st["eta"]
    if p == 1.0:
      sp = tf.cast(tf.math.count_nonzero(tf.reshape(x_max - x, [batch, -1]), axis=1),
                   tf.float32)
      fell = sp / tf.maximum(st["sp_old"], 1.0) < _L1_SPARSITY_DROP
      new_eta = tf.where(fell, _L1_ETA * eps, eta / _L1_ETA_DECAY)
      new_eta = tf.clip_by_value(new_eta, _L1_ETA_MIN * _L1_ETA * eps, _L1_ETA * eps)
      restart = tf.logical_and(check, fell)
      st.update(
          eta=tf.where(check, new_eta, eta),
          k_frac=tf.where(check, sp / n_f / _L1_SPARSITY_DIV, st["k_frac"]),
          sp_old=tf.where(check, sp, st["sp_old"]))
    else:
      h = tf.cast(k1 - st["last_check"], tf.float32)
      cond1 = count < s.rho * h
      cond2 = tf.logical_and(tf.logical_not(st["reduced_last"]), f_max <= st["f_max_last"])
      restart = tf.logical_and(check, tf.logical_or(cond1, cond2))
      st.update(
          eta=tf.where(restart, 0.5 * eta, eta),
          reduced_last=tf.where(check, restart, st["reduced_last"]),
          f_max_last=tf.where(check, f_max, st["f_max_last"]),
          last_check=tf.where(check, k1, st["last_check"]))
    restart_b = tf.reshape(restart, [-1] + [1] * (rank - 1))
    st.update(
        k=k1,
        x_prev=x_cur,
        x_cur=tf.where(restart_b, x_max, x_new),
        g_cur=tf.where(restart_b, g_max, g_new),
        l_cur=tf.where(restart, f_max, l_new),
        x_max=x_max, g_max=g_max, f_max=f_max,
        count=tf.where(check, tf.zeros_like(count), count))
    return (st,)

  (final,) = tf.while_loop(lambda st: st["k"] < num_steps, body, (init,),
                           maximum_iterations=num_steps)
  return final["x_out"], final["broken_out"], final["l_out"]


# ----------------------------------------------------------------------------
# The attacks.
# ----------------------------------------------------------------------------


@_compiled.compiled_when_eager(
    tensor_args=("x", "y", "epsilon", "clip"), seed_args=("seed",),
    eager_checks=_compiled.vacuous_check("apgd_attack"))
@tf.autograph.experimental.do_not_convert
@logits_view.accepts_views(returns="x")
def apgd_attack(f,
                x,
                y=None,
                *,
                epsilon,
                p=_INF,
                loss="crossentropy",
                num_steps=100,
                num_restarts=1,
                rho=0.75,
                momentum=0.75,
                clip=None,
                seed=None,
                training=False):
  """Auto-PGD (APGD; Croce & Hein 2020) and l1-APGD (Croce & Hein 2021).

  For ``p in {inf, 2}`` (Algorithm 1 of the APGD paper), with ``P`` the
  projection onto the eps-ball followed by clipping to ``clip``, ``s_p`` the
  steepest ascent (``sign(g)`` / ``g / ||g||_2``) and ``alpha = momentum``::

    x_1     = P( x_0 + eta_0 s_p(grad l(x_0)) ),                eta_0 = 2 eps
    z_{k+1} = P( x_k + eta_k s_p(grad l(x_k)) )
    x_{k+1} = P( x_k + alpha (z_{k+1} - x_k) + (1 - alpha) (x_k - x_{k-1}) )

  At each checkpoint ``w_j`` (`apgd_schedule_checkpoints`) and per example,
  ``eta`` is halved and the iterate restarted from the best point ``x_max``
  so far (with its gradient) if

  1. ``sum_{i = w_{j-1}}^{w_j - 1} 1[l(x_{i+1}) > l(x_i)] < rho (w_j - w_{j-1})``
     (the loss rose in too few steps), or
  2. ``eta`` and ``l(x_max)`` did not change since ``w_{j-1}``.

  Condition 2 is checked at the first checkpoint too, as in the paper (the
  reference implementation skips it there). After a restart the momentum
  term is ``x_max - x_k``, as in the paper, and the next step's loss is
  compared with ``l(x_max)`` for condition 1.

  For ``p = 1`` (l1-APGD, Croce & Hein 2021, with the rules of the reference
  implementation fra31/auto-attack): no momentum; the step is
  ``x_{k+1} = x + Proj_{B_1 ∩ box}(x_k + eta_k e_k - x)`` with ``e_k`` the
  sign of the gradient on its ``k_j`` largest coordinates (in ``|g|``),
  normalised to unit l1 norm, leaving out the coordinates that sit on the box
  with the gradient pointing outward (they cannot move), and the exact
  projection onto the intersection of the l1 ball and the box
  (`project_l1_box`). ``eta_0 = eps`` and ``k_0 = 0.2 n``; every
  ``max(floor(0.04 N), 1)`` steps, with ``s_j = ||x_max - x||_0``:
  ``k_j = s_j / 1.5`` and, if ``s_j / s_{j-1} < 0.95``, ``eta = eps`` and a
  restart from ``x_max``, else ``eta = eta / 1.5``; always
  ``eps / 10 <= eta <= eps``. ``rho`` is not used for ``p = 1``.

  The start is random (seeded): for ``p = inf`` a uniform point of the cube
  rescaled onto the sphere, for ``p = 2`` a Gaussian direction on the sphere,
  for ``p = 1`` ``eps`` times a Gaussian projected onto the ball and the box.
  Per example the attack returns its best point: a misclassified one if
  found (the one of highest loss within a run), else the one of highest loss;
  over ``num_restarts`` restarts (each with its own random start) the first
  misclassified point is kept, else the highest loss. Examples already
  misclassified at ``x`` are returned unchanged; restarts stop once every
  example is broken. Each run costs ``num_steps + 1`` forward and backward
  passes.

  Args:
    f: a Keras model (called with ``training=training``) or a callable from a
      batch to logits ``[batch, d]``.
    x: float tensor ``[batch, ...]``; float16/bfloat16 inputs are computed in
      float32 and the result is cast back.
    y: integer labels ``[batch]`` or one-hot labels ``[batch, d]``, or None
      to attack the model's own clean predictions. Defaults to `None`.
    epsilon: the radius: a positive finite number, or a scalar / ``[batch]``
      tensor.
    p: the norm of the ball: ``inf``, ``2`` or ``1``. Defaults to `inf`.
    loss: ``'crossentropy'``, ``'dlr'`` (the difference of logits ratio,
      `keras_opnorm.attacks.losses.dlr_loss`, needs ``d >= 3``), or a
      callable ``(logits_adv, logits_clean, y) -> [batch]`` to ascend.
      Defaults to `'crossentropy'`.
    num_steps: the iteration budget ``N_iter``, > 0. Defaults to `100`.
    num_restarts: number of random restarts, > 0. Defaults to `1`.
    rho: the threshold of condition 1, in ``(0, 1)``. Defaults to `0.75`.
    momentum: ``alpha`` of the update, in ``(0, 1]`` (1: no momentum).
      Defaults to `0.75`.
    clip: None or ``(lo, hi)``, the valid input range (numbers or tensors
      broadcastable to ``x``); ``x`` should lie in it. Defaults to `None`.
    seed: None or a non-negative integer: the same seed gives the same
      result. Defaults to `None`.
    training: the ``training`` flag for Keras models. Defaults to `False`.

  Returns:
    ``x_adv``, with the shape and dtype of ``x``, in the eps-ball around
    ``x`` and in ``clip``.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``x`` outside ``clip`` (beyond 1e-6 * (hi - lo)); labels
      that are not integers or not in ``[0, num_classes)``. Warns with
      `keras_opnorm.VacuousThreatModelWarning` when ``epsilon`` covers the
      ``clip`` box (``epsilon >= ||(hi - lo) / 2||_p``).
    ValueError: for ``p`` not in ``{1, 2, inf}``, ``num_steps <= 0``,
      ``num_restarts <= 0``, ``rho`` outside ``(0, 1)``, ``momentum`` outside
      ``(0, 1]``, an unknown loss, a bad ``epsilon``, ``clip`` or ``seed``,
      labels whose batch differs from ``x``, ``f`` not differentiable.
    TypeError: for integer ``x``, a non-callable ``f`` or ``loss``.

  Example:

  >>> f = lambda x: tf.concat([x, -x, 0.0 * x], axis=1)  # logits (x, -x, 0)
  >>> x_adv = apgd_attack(f, tf.constant([[0.3]]), epsilon=0.5, num_steps=10,
  ...                     seed=0)
  >>> int(tf.argmax(f(x_adv), axis=1)[0]) != 0  # broken: 0.3 - 0.5 < 0
  True
  """
  momentum = _unit_interval(momentum, "momentum", closed_right=True)
  loss_fn = _apgd_loss(loss)
  s = _Setup(f, x, y, epsilon, p, num_steps, num_restarts, rho, clip, seed, training,
             "apgd_attack")
  logits_clean, y = s.logits_clean, s.y

  def loss_of_logits(logits):
    return loss_fn(logits, logits_clean, y)

  vg = s.value_and_grad(loss_of_logits)
  rank = s.x.shape.rank

  def body(r, best_x, best_broken, best_loss):
    x_r, broken_r, loss_r = _apgd_run(s, vg, momentum, fold_seed(s.seed, r))
    take = tf.logical_and(tf.logical_not(best_broken),
                          tf.logical_or(broken_r, loss_r > best_loss))
    take_b = tf.reshape(take, [-1] + [1] * (rank - 1))
    return (r + 1, tf.where(take_b, x_r, best_x), tf.logical_or(best_broken, broken_r),
            tf.where(take, loss_r, best_loss))

  batch = tf.shape(s.x)[0]
  init = (tf.constant(0), s.x, s.clean_broken,
          tf.fill([batch], tf.constant(-_INF, tf.float32)))
  _, x_adv, _, _ = tf.while_loop(
      lambda r, _, broken, __: tf.logical_and(
          r < s.num_restarts, tf.reduce_any(tf.logical_not(broken))),
      body, init, maximum_iterations=s.num_restarts)
  return tf.cast(x_adv, s.in_dtype)


@_compiled.compiled_when_eager(
    tensor_args=("x", "y", "epsilon", "clip"), seed_args=("seed",),
    eager_checks=_compiled.vacuous_check("apgd_targeted_attack"))
@tf.autograph.experimental.do_not_convert
@logits_view.accepts_views(returns="x")
def apgd_targeted_attack(f,
                         x,
                         y=None,
                         *,
                         epsilon,
                         p=_INF,
                         num_targets=9,
                         num_steps=100,
                         num_restarts=1,
                         rho=0.75,
                         clip=None,
                         seed=None,
                         training=False):
  """APGD-T: APGD on the targeted DLR loss, one target class after the other.

  Croce & Hein (2020), Sec. 4. The targets of an example are the
  ``num_targets`` classes other than ``y`` with the highest clean logits
  (the 2nd, 3rd, ... highest for a correctly classified example). For each
  target ``t`` in turn (and ``num_restarts`` random starts each), `apgd_attack`
  ascends the targeted difference of logits ratio
  (`keras_opnorm.attacks.losses.targeted_dlr_loss`)::

    DLR_T(z, y, t) = - (z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)

  with the momentum ``0.75`` of APGD (none for ``p = 1``). Success is
  misclassification (any class other than ``y``). Per example the first
  misclassified point found is kept; examples never broken get the point of
  highest untargeted DLR (`keras_opnorm.attacks.losses.dlr_loss`: the
  smallest scaled margin) over all runs; examples misclassified at ``x``
  are returned unchanged. The loop stops once every example is broken.

  Args:
    f: a Keras model (called with ``training=training``) or a callable from a
      batch to logits ``[batch, d]`` with ``d >= 4``.
    x: float tensor ``[batch, ...]``.
    y: integer labels ``[batch]`` or one-hot labels ``[batch, d]``, or None
      for the model's own clean predictions. Defaults to `None`.
    epsilon: the radius: a positive finite number, or a scalar / ``[batch]``
      tensor.
    p: the norm of the ball: ``inf``, ``2`` or ``1``. Defaults to `inf`.
    num_targets: number of target classes, in ``[1, d - 1]``. Defaults to `9`
      (all classes of a 10-class problem).
    num_steps: iterations per target and restart, > 0. Defaults to `100`.
    num_restarts: random restarts per target, > 0. Defaults to `1`.
    rho: the threshold of condition 1 of APGD, in ``(0, 1)``. Defaults to
      `0.75`.
    clip: None or ``(lo, hi)``, the valid input range. Defaults to `None`.
    seed: None or a non-negative integer. Defaults to `None`.
    training: the ``training`` flag for Keras models. Defaults to `False`.

  Returns:
    ``x_adv``, with the shape and dtype of ``x``.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``x`` outside ``clip`` (beyond 1e-6 * (hi - lo)); labels
      that are not integers or not in ``[0, num_classes)``. Warns with
      `keras_opnorm.VacuousThreatModelWarning` when ``epsilon`` covers the
      ``clip`` box (``epsilon >= ||(hi - lo) / 2||_p``).
    ValueError: for fewer than 4 classes, ``num_targets`` outside
      ``[1, d - 1]``, and the errors of `apgd_attack`.
    TypeError: for integer ``x`` or a non-integer ``num_targets``.

  Example:

  >>> w = tf.constant([[1.0, -1.0, 0.5, 0.0]])  # logits (x, -x, x/2, 0)
  >>> f = lambda x: tf.matmul(x, w)
  >>> x_adv = apgd_targeted_attack(f, tf.constant([[0.3]]), epsilon=0.5,
  ...                              num_targets=3, num_steps=10, seed=0)
  >>> int(tf.argmax(f(x_adv), axis=1)[0]) != 0  # broken: x* < 0
  True
  """
  if isinstance(num_targets, (bool, np.bool_)) or not isinstance(
      num_targets, (numbers.Integral, np.integer)):
    raise TypeError(f"`num_targets` must be an integer in [1, d - 1]. Received: "
                    f"num_targets={num_targets!r}")
  num_targets = int(num_targets)
  s = _Setup(f, x, y, epsilon, p, num_steps, num_restarts, rho, clip, seed, training,
             "apgd_targeted_attack")
  d = s.logits_clean.shape[-1]
  if d is not None and d < 4:
    raise ValueError(f"`apgd_targeted_attack` needs at least 4 classes (the targeted DLR "
                     f"loss). Received: f(x) with shape={s.logits_clean.shape}")
  if num_targets < 1 or (d is not None and num_targets > d - 1):
    bound = "d - 1" if d is None else f"d - 1 = {d - 1}"
    raise ValueError(f"`num_targets` must be in [1, {bound}] (d = number of classes). "
                     f"Received: num_targets={num_targets}")
  labels = s.labels
  # Targets: the highest clean logits among the classes other than y.
  is_y = tf.one_hot(labels, tf.shape(s.logits_clean)[-1], on_value=True, off_value=False)
  lowest = tf.fill(tf.shape(s.logits_clean), tf.constant(s.logits_clean.dtype.min,
                                                         s.logits_clean.dtype))
  targets = tf.math.top_k(tf.where(is_y, lowest, s.logits_clean), k=num_targets).indices
  rank = s.x.shape.rank
  total = num_targets * s.num_restarts

  def body(j, best_x, best_broken, best_score):
    target = tf.gather(targets, j // s.num_restarts, axis=1)

    def loss_of_logits(logits):
      return targeted_dlr_loss(logits, labels, target)

    x_r, broken_r, _ = _apgd_run(s, s.value_and_grad(loss_of_logits), 0.75,
                                 fold_seed(s.seed, j))
    score = tf.cast(dlr_loss(s.fn(x_r), y=labels), tf.float32)
    take = tf.logical_and(tf.logical_not(best_broken),
                          tf.logical_or(broken_r, score > best_score))
    take_b = tf.reshape(take, [-1] + [1] * (rank - 1))
    return (j + 1, tf.where(take_b, x_r, best_x), tf.logical_or(best_broken, broken_r),
            tf.where(take, score, best_score))

  batch = tf.shape(s.x)[0]
  init = (tf.constant(0), s.x, s.clean_broken,
          tf.fill([batch], tf.constant(-_INF, tf.float32)))
  _, x_adv, _, _ = tf.while_loop(
      lambda j, _, broken, __: tf.logical_and(j < total,
                                              tf.reduce_any(tf.logical_not(broken))),
      body, init, maximum_iterations=total)
  return tf.cast(x_adv, s.in_dtype)
