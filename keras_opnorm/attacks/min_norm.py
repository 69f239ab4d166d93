"""Fast minimum-norm adversarial attack (FMN) and minimum-norm bookkeeping.

``fmn_attack`` searches, per example, the smallest lp perturbation that changes
the prediction (Pintor, Roli, Brendel & Biggio, "Fast Minimum-norm Adversarial
Attacks through Adaptive Norm Constraints", NeurIPS 2021,
https://arxiv.org/abs/2102.12827). It needs no radius: it alternates a
gradient step on the logit difference with an update of the radius ``eps_k``
of the ball it projects onto, shrinking ``eps_k`` while the iterate is
adversarial and growing it while it is not::

  m(x*)   = z_y(x*) - max_{j != y} z_j(x*)           (< 0: adversarial)
  eps_k   = min(eps_{k-1} (1 - gamma_k), ||delta_best||_p)    adversarial
          = eps_{k-1} (1 + gamma_k)                   not, but one was found
          = (||delta_k||_p + |m| / ||grad m||_{p*}) (1 + gamma_k)    none found yet
  delta_{k+1} = Proj_{B_p(0, eps_k)}( delta_k - alpha_k grad m / ||grad m||_2 )

followed by clipping to the valid range. The step sizes ``alpha_k`` and
``gamma_k`` follow cosine annealing. The smallest adversarial perturbation of
all iterates is returned. `minimal_perturbation_norms` turns attack results
into per-example minimal radii and `accuracy_curve_from_norms` turns those
into the robust accuracy at every radius at once.
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
from keras_opnorm.attacks._common import _same_batch
from keras_opnorm.attacks._common import seed_tensor
from keras_opnorm.attacks.losses import margin

__all__ = ["fmn_attack", "minimal_perturbation_norms", "accuracy_curve_from_norms"]

_INF = float("inf")
_FMN_P = (1.0, 2.0, _INF)


# ----------------------------------------------------------------------------
# Argument checks.
# ----------------------------------------------------------------------------


def _open_unit_interval(value, name):
  """Returns ``value`` as a float if it is a number in ``(0, 1)``, else raises."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
    raise TypeError(f"`{name}` must be a number in (0, 1). Received: {name}={value!r}")
  v = float(value)
  if not 0.0 < v < 1.0:
    raise ValueError(f"`{name}` must be a number in (0, 1). Received: {name}={value}")
  return v


def _positive_number(value, name):
  """A positive finite Python number (no tensors: the schedule is static)."""
  if isinstance(value, (tf.Tensor, tf.Variable)):
    raise TypeError(f"`{name}` must be a positive finite number. Received: {name}={value!r}")
  return _checks.positive_float(value, name)


def _nonnegative_int(value, name):
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
    raise TypeError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
  if value < 0:
    raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value}")
  return int(value)


def _fmn_exponent(p):
  p = _checks.exponent(p, "p")
  if p not in _FMN_P:
    raise ValueError(f"`p` must be 1, 2 or inf for the FMN attack. Received: p={p}")
  return p


def _integer_labels(y, x):
  y = _labels(y, x)
  if y.shape.rank == 2:
    return tf.argmax(y, axis=-1, output_type=tf.int32)
  return tf.cast(tf.reshape(y, [-1]), tf.int32)


def _like_x(t, x, name):
  t = tf.cast(_checks.float_input(t, name), x.dtype)
  if t.shape.is_fully_defined() and x.shape.is_fully_defined() and t.shape != x.shape:
    raise ValueError(f"`{name}` must have the shape of `x` {x.shape}. Received: {name} "
                     f"with shape={t.shape}")
  return t


# ----------------------------------------------------------------------------
# The attack.
# ----------------------------------------------------------------------------


@_compiled.compiled_when_eager(
    tensor_args=("x", "y", "starting_points", "clip"), seed_args=("seed",))
@tf.autograph.experimental.do_not_convert
@logits_view.accepts_views(returns="x")
def fmn_attack(f,
               x,
               y=None,
               *,
               p=_INF,
               num_steps=100,
               alpha_init=1.0,
               alpha_final=None,
               gamma_init=0.05,
               gamma_final=0.001,
               starting_points=None,
               binary_search_steps=10,
               targeted=False,
               num_targets=9,
               clip=None,
               seed=None,
               training=False):
  """The fast minimum-norm attack FMN (Pintor et al., NeurIPS 2021).

  Per example, with the logit difference ``m(x*) = z_y - max_{j != y} z_j``
  (``x*`` is adversarial iff ``argmax f(x*) != y``), its gradient ``g_k`` at
  ``x_k = x + delta_k``, ``p*`` the dual exponent, ``delta_best`` the
  smallest adversarial perturbation seen so far and ``c_k = (1 + cos(pi k /
  K)) / 2`` (``K = num_steps``)::

    alpha_k = alpha_final + (alpha_init - alpha_final) c_k
    gamma_k = gamma_final + (gamma_init - gamma_final) c_k
    eps_k   = min(eps_{k-1} (1 - gamma_k), ||delta_best||_p)   x_k adversarial
            = eps_{k-1} (1 + gamma_k)                    an adversarial was found
            = (||delta_k||_p + |m(x_k)| / ||g_k||_{p*}) (1 + gamma_k)   none found yet
    delta_{k+1} = clip( x + Proj_{B_p(0, eps_k)}( delta_k - alpha_k g_k / ||g_k||_2 ) ) - x

  * The last branch is the distance to the linear approximation of the
    decision boundary (exact for a linear model), enlarged here by
    ``1 + gamma_k`` (the paper and its reference code do not): without it an
    iterate that lands exactly on the boundary (``m = 0``, a tie, not
    adversarial) keeps its radius and never crosses; the linear model of the
    example below does just that at its first step.
  * ``Proj`` is the exact Euclidean projection
    (`keras_opnorm.norms.project_lp_ball`: clipping for ``p = inf``,
    rescaling for ``p = 2``, the sort-based l1 projection of Duchi et al.
    2008 for ``p = 1``). As in the paper the step is l2-normalised for every
    ``p``; the projection makes it sparse for ``p = 1`` and saturated for
    ``p = inf``. ``alpha`` is an l2 length in input units: coordinates whose
    gradient is small against ``||g||_2`` move by ``alpha |g_i| / ||g||_2``
    per step and reach the linf vertex late when ``alpha`` is small for the
    data's scale.
  * With ``clip``, ``eps_k`` never exceeds the largest lp distance from ``x``
    inside the box, and coordinates on the box whose step points outward are
    left out of ``g_k`` (for the step and the boundary estimate; the box rule
    of `keras_opnorm.attacks.pgd_attack`). Without it an l1 step spends its
    budget on coordinates the clipping then removes, and FMN-l1 can stall
    near ``x`` for good (measured on a ReLU MLP on ``[0, 1]^8``).

  Targets: ``m`` switches between classes as ``x_k`` moves, and FMN
  converges to the nearest boundary of the class it heads for, which need
  not be the nearest boundary overall (a local minimum: measured on random
  linear models with 3-10 classes, 1-3 of 12 examples per model end 10-57%
  above the exact distance). ``targeted=True`` runs FMN once per target ``t``, the
  ``num_targets`` classes other than ``y`` with the largest clean logits,
  on ``m_t = z_y - z_t`` (as FAB-T and APGD-T of AutoAttack; success is
  still any misclassification), and keeps the smallest adversarial point:
  ``num_targets`` times the cost, and exact on a linear model with
  ``num_targets = d - 1``.

  Starts: with ``starting_points`` (adversarial points, e.g. of another
  attack) the attack first bisects ``binary_search_steps`` times on the
  segment ``x + t (x1 - x)``, ``t in [0, 1]``, for the adversarial point
  closest to ``x``, and starts there with ``eps_0`` its norm; otherwise it
  starts at ``delta_0 = 0`` with no radius yet. Examples whose starting
  point is not adversarial start at ``x``.

  The attack is deterministic: ``seed`` is accepted (and checked) for the
  common signature of the attacks and draws nothing. Run it inside
  ``tf.function`` for speed: each run is one ``tf.while_loop`` with one
  forward and one backward pass per step.

  Args:
    f: a Keras model (called with ``training=training``) or a callable from a
      batch to logits ``[batch, d]``.
    x: float tensor ``[batch, ...]``; float16/bfloat16 inputs are computed in
      float32 on iterates rounded to the input dtype (so that the result,
      cast back, is the point found adversarial).
    y: integer labels ``[batch]``, one-hot labels ``[batch, d]``, or None to
      attack the model's own (clean) predictions. Defaults to `None`.
    p: the norm, 1, 2 or inf. Defaults to `inf`.
    num_steps: number of iterations ``K`` per run, > 0. Defaults to `100`.
    alpha_init: the first step size (an l2 length in input units), > 0.
      Defaults to `1.0`.
    alpha_final: the last step size, > 0. Defaults to `None`, meaning
      ``alpha_init / 100`` (as in the paper).
    gamma_init: the first relative radius update, in ``(0, 1)``. Defaults to
      `0.05`.
    gamma_final: the last relative radius update, in ``(0, 1)``; it bounds
      the relative precision of the radius at the end. Defaults to `0.001`.
    starting_points: optional adversarial points shaped like ``x`` to start
      from (clipped to ``clip``). Defaults to `None`.
    binary_search_steps: bisection steps towards ``x`` from
      ``starting_points``, >= 0; unused without them. Defaults to `10`.
    targeted: run once per target class on ``z_y - z_t`` ("Targets" above)
      instead of once on ``z_y - max_{j != y} z_j``. Defaults to `False`.
    num_targets: the number of target classes when ``targeted``, in
      ``[1, d - 1]``; unused otherwise. Defaults to `9`.
    clip: None or ``(lo, hi)``, the valid input range (numbers or tensors
      broadcastable to ``x``). Defaults to `None`.
    seed: None or a non-negative integer; unused (FMN draws nothing).
      Defaults to `None`.
    training: the ``training`` flag for Keras models. Defaults to `False`.

  Returns:
    ``x_adv`` with the shape and dtype of ``x``: per example the adversarial
    point of smallest lp distance to ``x`` among the iterates, and ``x``
    itself where no iterate was adversarial or where ``x`` is misclassified
    already (distance 0). An ``x`` outside ``clip`` raises (see Raises).

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``x`` outside ``clip`` (beyond 1e-6 * (hi - lo)); labels
      that are not integers or not in ``[0, num_classes)``.
    ValueError: for ``p`` not in {1, 2, inf}, ``num_steps <= 0``,
      ``alpha_init`` or ``alpha_final`` not positive and finite, ``gamma_init``
      or ``gamma_final`` outside ``(0, 1)``, ``binary_search_steps < 0``,
      ``num_targets`` outside ``[1, d - 1]`` (when ``targeted``),
      ``starting_points`` or labels whose shape does not match ``x``, a
      negative ``seed``, or ``f`` not differentiable with respect to ``x``.
    TypeError: for integer ``x``, non-numeric hyper-parameters or a
      non-callable ``f``.

  Example:

  >>> f = lambda x: tf.concat([x, -x], axis=1)  # class 0 iff x > 0
  >>> x_adv = fmn_attack(f, tf.constant([[0.5]]), num_steps=50)
  >>> round(float(0.5 - x_adv[0, 0]), 2)  # the boundary x = 0 is 0.5 away
  0.5
  >>> bool(x_adv[0, 0] < 0)  # just across it
  True
  """
  in_dtype = tf.as_dtype(getattr(x, "dtype", tf.float32))
  x = _checks.float_input(x, "x")
  p = _fmn_exponent(p)
  q = norms.dual_exponent(p)
  num_steps = _checks.positive_int(num_steps, "num_steps")
  alpha_init = _positive_number(alpha_init, "alpha_init")
  alpha_final = alpha_init / 100.0 if alpha_final is None else _positive_number(
      alpha_final, "alpha_final")
  gamma_init = _open_unit_interval(gamma_init, "gamma_init")
  gamma_final = _open_unit_interval(gamma_final, "gamma_final")
  binary_search_steps = _nonnegative_int(binary_search_steps, "binary_search_steps")
  num_targets = _checks.positive_int(num_targets, "num_targets")
  if seed is not None:
    seed_tensor(seed)  # Checked only: the attack is deterministic.
  clip = _clip_range(clip)
  x = _check_in_box(x, clip)
  if y is not None:
    y = _integer_labels(y, x)
  if starting_points is not None:
    starting_points = _like_x(starting_points, x, "starting_points")
  fn = jacobian.as_logits_fn(f, training=training)

  checks = _same_batch(x, y, "y") if y is not None else []
  with tf.control_dependencies(checks):
    x = tf.identity(x) if checks else x
  dtype = x.dtype
  rank = x.shape.rank
  batch = tf.shape(x)[0]

  def per_example(v):
    return tf.reshape(v, [-1] + [1] * (rank - 1))

  def box(x_adv):
    """Clips to the box and rounds to ``in_dtype``, so the returned cast is exact."""
    x_adv = x_adv if clip is None else tf.clip_by_value(x_adv, lo, hi)
    # Half-precision inputs: every evaluated point is a half-precision point,
    # else the cast of a point just across the boundary may round back.
    return x_adv if in_dtype == dtype else tf.cast(tf.cast(x_adv, in_dtype), dtype)

  logits_clean = tf.stop_gradient(fn(x))
  _check_label_width(y, logits_clean)
  d = logits_clean.shape[-1]
  if targeted:
    if d is None:
      raise ValueError("`f` must return logits with a static number of classes d "
                       "([batch, d]) for `targeted=True`. Received: f(x) with unknown d")
    d = int(d)
    if not num_targets <= d - 1:
      raise ValueError(f"`num_targets` must be in [1, d - 1] = [1, {d - 1}] for `f` with "
                       f"d={d} classes. Received: num_targets={num_targets}")
  if y is None:
    y = tf.argmax(logits_clean, axis=-1, output_type=tf.int32)
  # Examples to attack: correctly classified (and, with clip, inside the box).
  active = tf.equal(tf.argmax(logits_clean, axis=-1, output_type=tf.int32), y)
  inf_b = tf.fill([batch], tf.constant(_INF, dtype))
  if clip is None:
    worst = inf_b
  else:
    lo = tf.cast(clip[0], dtype)
    hi = tf.cast(clip[1], dtype)
    axes = list(range(1, rank))
    inside = tf.reduce_all(tf.logical_and(x >= lo, x <= hi), axis=axes)
    active = tf.logical_and(active, inside)
    # The largest lp distance from x inside the box caps the radius.
    worst = norms.lp_norm(tf.maximum(x - lo, hi - x), p)

  def is_adversarial(x_adv):
    pred = tf.argmax(fn(x_adv), axis=-1, output_type=tf.int32)
    return tf.not_equal(pred, y)

  # The start: x, or the adversarial point closest to x on [x, x1].
  x_start = x
  best_norm = inf_b
  if starting_points is not None:
    d1 = box(starting_points) - x
    adv1 = tf.logical_and(is_adversarial(box(x + d1)), active)

    def bisect(i, t_lo, t_hi):
      t = 0.5 * (t_lo + t_hi)
      adv = is_adversarial(box(x + per_example(t) * d1))
      return i + 1, tf.where(adv, t_lo, t), tf.where(adv, t, t_hi)

    _, _, t_hi = tf.while_loop(
        lambda i, *_: i < binary_search_steps, bisect,
        (tf.constant(0), tf.zeros([batch], dtype), tf.ones([batch], dtype)),
        maximum_iterations=binary_search_steps)
    t = tf.where(adv1, t_hi, tf.zeros_like(t_hi))
    x_start = box(x + per_example(t) * d1)
    best_norm = tf.where(adv1, norms.lp_norm(x_start - x, p), inf_b)
  start_norm = best_norm

  a_init, a_final = tf.constant(alpha_init, dtype), tf.constant(alpha_final, dtype)
  g_init, g_final = tf.constant(gamma_init, dtype), tf.constant(gamma_final, dtype)

  def evaluate(x_adv, target):
    """Adversarial flags, the logit difference ``m`` and its gradient at ``x_adv``."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(x_adv)
      logits = fn(x_adv)
      if target is None:
        m = margin(logits, y)
      else:
        m = (tf.gather(logits, y, axis=1, batch_dims=1) -
             tf.gather(logits, target, axis=1, batch_dims=1))
    g = tape.gradient(m, x_adv)
    if g is None:
      raise _checks.not_differentiable(f, of="the logit difference")
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    adv = tf.logical_and(tf.not_equal(pred, y), active)
    return adv, tf.cast(m, dtype), g

  def keep_best(adv, x_adv, norm, best_x, best_norm):
    better = tf.logical_and(adv, norm <= best_norm)
    return (tf.where(per_example(better), x_adv, best_x),
            tf.where(better, norm, best_norm))

  def run(target):
    """One FMN run (towards ``target``, or untargeted for None) from ``x_start``."""

    def body(k, x_adv, eps, best_x, best_norm, found):
      c = 0.5 * (1.0 + tf.cos(math.pi * tf.cast(k, dtype) / float(num_steps)))
      alpha = a_final + (a_init - a_final) * c
      gamma = g_final + (g_init - g_final) * c
      adv, m, g = evaluate(x_adv, target)
      delta = x_adv - x
      norm = norms.lp_norm(delta, p)
      best_x, best_norm = keep_best(adv, x_adv, norm, best_x, best_norm)
      found = tf.logical_or(found, adv)
      if clip is not None:
        # Coordinates on the box that the step -g would push out cannot move.
        stuck = tf.logical_or(tf.logical_and(x_adv <= lo, g > 0),
                              tf.logical_and(x_adv >= hi, g < 0))
        g = tf.where(stuck, tf.zeros_like(g), g)

      g_dual = norms.lp_norm(g, q)
      to_boundary = tf.where(g_dual > 0, tf.abs(m) / tf.where(g_dual > 0, g_dual, 1.0),
                             inf_b)
      eps = tf.where(adv, tf.minimum(eps * (1.0 - gamma), best_norm),
                     (1.0 + gamma) * tf.where(found, eps, norm + to_boundary))
      eps = tf.minimum(eps, worst)

      step = delta - alpha * norms.normalize(g, 2.0)
      x_next = box(x + norms.project_lp_ball(step, eps, p))
      return k + 1, x_next, eps, best_x, best_norm, found

    _, x_last, _, best_x, best_norm, _ = tf.while_loop(
        lambda k, *_: k < num_steps, body,
        (tf.constant(0), x_start, start_norm, x_start, start_norm,
         tf.math.is_finite(start_norm)),
        maximum_iterations=num_steps)
    # The last iterate has not been looked at yet.
    adv_last = tf.logical_and(is_adversarial(x_last), active)
    return keep_best(adv_last, x_last, norms.lp_norm(x_last - x, p), best_x, best_norm)

  if not targeted:
    best_x, best_norm = run(None)
  else:
    # The num_targets most likely classes other than y at x, most likely first.
    others = tf.where(tf.one_hot(y, d, on_value=True, off_value=False),
                      tf.fill(tf.shape(logits_clean), tf.constant(-_INF, logits_clean.dtype)),
                      logits_clean)
    targets = tf.math.top_k(others, k=num_targets).indices

    def next_target(r, best_x, best_norm):
      run_x, run_norm = run(targets[:, r])
      better = run_norm < best_norm
      return (r + 1, tf.where(per_example(better), run_x, best_x),
              tf.where(better, run_norm, best_norm))

    _, best_x, best_norm = tf.while_loop(
        lambda r, *_: r < num_targets, next_target,
        (tf.constant(0), x_start, start_norm), maximum_iterations=num_targets)
  success = tf.logical_and(active, tf.math.is_finite(best_norm))
  x_adv = tf.where(per_example(success), best_x, x)
  return tf.cast(x_adv, in_dtype)


# ----------------------------------------------------------------------------
# Minimum-norm bookkeeping.
# ----------------------------------------------------------------------------


@tf.autograph.experimental.do_not_convert
@logits_view.accepts_views(like_x=("x_adv",))
def minimal_perturbation_norms(f, x, y, x_adv, *, p, training=False):
  """Per-example norms of successful perturbations: the radius each attack broke.

  ::

    r_i = 0                       argmax f(x_i) != y_i   (misclassified already)
        = ||x_adv_i - x_i||_p     argmax f(x_adv_i) != y_i
        = +inf                    otherwise (not broken)

  so that an example counts as robust at radius ``eps`` iff ``r_i > eps``
  (`accuracy_curve_from_norms`).

  Args:
    f: a Keras model or a callable from a batch to logits ``[batch, d]``.
    x: float tensor ``[batch, ...]``, the clean inputs.
    y: integer labels ``[batch]`` or one-hot labels ``[batch, d]``.
    x_adv: the attack's points, shaped like ``x``.
    p: the norm exponent, any real ``p >= 1`` or ``inf``.
    training: the ``training`` flag for Keras models. Defaults to `False`.

  Returns:
    Float tensor ``[batch]`` (the dtype of ``x``, float32 for half inputs).

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: for ``p < 1``, or ``x_adv`` or ``y`` not matching ``x``.
    TypeError: for integer inputs or a non-callable ``f``.

  Example:

  >>> f = lambda x: tf.concat([x, -x], axis=1)  # class 0 iff x > 0
  >>> x = tf.constant([[0.5], [-1.0], [2.0]])
  >>> x_adv = tf.constant([[-0.25], [-1.0], [1.0]])
  >>> minimal_perturbation_norms(f, x, tf.constant([0, 0, 0]), x_adv, p=2).numpy().tolist()
  [0.75, 0.0, inf]
  """
  x = _checks.float_input(x, "x")
  p = _checks.exponent(p, "p")
  x_adv = _like_x(x_adv, x, "x_adv")
  y = _integer_labels(y, x)
  fn = jacobian.as_logits_fn(f, training=training)
  checks = _same_batch(x, y, "y")
  with tf.control_dependencies(checks):
    x = tf.identity(x) if checks else x
  pred_clean = tf.argmax(fn(x), axis=-1, output_type=tf.int32)
  pred_adv = tf.argmax(fn(x_adv), axis=-1, output_type=tf.int32)
  r = norms.lp_norm(x_adv - x, p)
  r = tf.where(tf.not_equal(pred_adv, y), r, tf.fill(tf.shape(r), tf.constant(_INF, r.dtype)))
  return tf.where(tf.not_equal(pred_clean, y), tf.zeros_like(r), r)


def accuracy_curve_from_norms(norms, epsilons):  # pylint: disable=redefined-outer-name
  """Robust accuracy at each radius from per-example minimal norms (numpy).

  ``acc(eps) = mean_i [r_i > eps]``: an example whose perturbation has norm
  exactly ``eps`` counts as broken (it was found at that radius); ``r_i =
  +inf`` (never broken) is robust at every radius and ``r_i = 0``
  (misclassified) at none.

  Args:
    norms: per-example minimal norms ``[batch]`` (`minimal_perturbation_norms`),
      non-negative, ``+inf`` allowed; a numpy array, list or tensor.
    epsilons: a non-negative radius or a 1-D sequence of them.

  Returns:
    float64 numpy array ``[len(epsilons)]`` (a 0-d array for a scalar).

  Raises:
    ValueError: for empty, NaN or negative norms, or NaN or negative radii.

  Example:

  >>> accuracy_curve_from_norms([0.0, 0.5, 1.0, float('inf')], [0.0, 0.5, 2.0]).tolist()
  [0.75, 0.5, 0.25]
  """
  r = np.asarray(norms, dtype=np.float64).reshape(-1)
  if r.size == 0 or np.any(np.isnan(r)) or np.any(r < 0):
    raise ValueError(f"`norms` must be a non-empty array of non-negative norms (inf "
                     f"allowed). Received: norms={norms!r}")
  e = np.asarray(epsilons, dtype=np.float64)
  if e.ndim > 1 or np.any(np.isnan(e)) or np.any(e < 0):
    raise ValueError(f"`epsilons` must be a non-negative number or a 1-D sequence of them. "
                     f"Received: epsilons={epsilons!r}")
  return np.mean(r[np.newaxis, :] > e.reshape(-1, 1), axis=1).reshape(e.shape)
