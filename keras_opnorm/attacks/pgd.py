"""lp-constrained projected gradient ascent (PGD) and the attack losses.

``pgd_attack`` builds adversarial examples ``x* in B_p(x, eps)`` by projected
gradient ascent on an attack loss (Madry et al., "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083)::

  x_0 = x + delta_0                                    (random, given or 0)
  x_k = clip( x + Proj_{B_p(0, eps)}( x_{k-1} - x + alpha * d_p(grad l(x_{k-1})) ) )

with a unit-lp step direction ``d_p`` (the steepest ascent ``s_p`` for
p in {2, inf}, a sparse ``s_1`` for p = 1, ``g / ||g||_p`` otherwise) and the
exact Euclidean projections of `keras_opnorm.norms`. With the lq logit distance
``l(x*) = ||f(x*) - f(x)||_q`` and ``alpha -> inf`` one step is one iteration
of the (p,q) power method on the Jacobian ``J_f(x)`` (Roth, Kilcher & Hofmann,
"Adversarial Training is a Form of Data-dependent Operator Norm
Regularization", NeurIPS 2020, https://arxiv.org/abs/1906.01527)::

  u_k = s_{q*}(J v_{k-1}),   v_k = s_p(J^T u_k),   x_k = x + eps * v_k .

The whole attack is one ``tf.while_loop`` with one forward and one backward
pass per step; it runs eagerly, inside ``tf.function`` and under XLA
(``jit_compile=True``) and does not retrace for a fixed input signature.
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
from keras_opnorm.attacks._common import _sparse_l1_direction
from keras_opnorm.attacks._common import warn_if_vacuous
from keras_opnorm.attacks.losses import attack_loss

__all__ = ["pgd_attack"]

# Relative radius of the start next to x for losses with a minimum at x* = x.
_STATIONARY_START = 0.01

# Measured default of the sparse l1 step; see `pgd_attack` ("The l1 step").
_DEFAULT_L1_SPARSITY = 0.95


# ----------------------------------------------------------------------------
# The attack.
# ----------------------------------------------------------------------------


@_compiled.compiled_when_eager(
    tensor_args=("x", "y", "epsilon", "step_size", "clip", "delta0"),
    eager_checks=_compiled.vacuous_check("pgd_attack"))
@tf.autograph.experimental.do_not_convert
@logits_view.accepts_views(returns="x", like_x=("delta0",))
def pgd_attack(f,
               x,
               y=None,
               *,
               epsilon,
               p=float("inf"),
               num_steps=10,
               step_size=None,
               random_start=True,
               loss="crossentropy",
               q=2,
               clip=None,
               targeted=False,
               num_restarts=1,
               training=False,
               delta0=None,
               l1_sparsity=_DEFAULT_L1_SPARSITY):
  """lp projected gradient ascent on an attack loss (PGD; Madry et al. 2018).

  Per example, with ``g_k`` the gradient of the attack loss at ``x_{k-1}``::

    x_k = clip( x + Proj_{B_p(0, eps)}( x_{k-1} - x + alpha * d_p(g_k) ) )

  * ``d_p`` is the step direction, of unit lp norm: the steepest ascent
    ``s_p`` (`keras_opnorm.norms.steepest_ascent`) for ``p = inf``
    (``sign(g)``) and ``p = 2`` (``g / ||g||_2``); a sparse version of
    ``s_1`` for ``p = 1`` ("The l1 step" below); ``g / ||g||_p`` for other p
    ("Other p" below).
  * ``Proj`` is the exact Euclidean projection onto the ball
    (`keras_opnorm.norms.project_lp_ball`: clipping, rescaling, Duchi et al.
    2008 for ``p = 1``, a KKT bisection for other ``p``).
  * ``clip`` (to ``[lo, hi]``) after the projection keeps the ball constraint
    when ``x`` itself lies in ``[lo, hi]``: each clipped coordinate moves
    toward ``x_i``, so ``|delta_i|`` shrinks coordinate-wise and no lp norm
    grows. The result lies in both sets (it is not the Euclidean projection
    onto their intersection except for ``p = inf``).

  With ``loss='logit'`` (``||f(x*) - f(x)||_q``), no random start, ``delta0 =
  eps * v0`` and a large ``step_size`` every iterate lands on the sphere at
  ``x + eps * v_k`` and the ``v_k`` are the (p,q) power method's iterates on
  ``J_f(x)`` when the eps-ball lies in one linear region of ``f`` (Roth et al.
  2020; `keras_opnorm.operator_norm` with ``v0``, ``num_iters=num_steps``).

  The l1 step: the steepest ascent ``s_1`` is one-hot and moves one coordinate
  per step, which attacks weakly. By default the step is the sparse l1
  descent of SLIDE (Tramer & Boneh, "Adversarial Training and Robustness for
  Multiple Perturbations", NeurIPS 2019, https://arxiv.org/abs/1904.13000):
  ``sign(g)`` on the top ``1 - l1_sparsity`` fraction of coordinates by
  ``|g|`` (at least one), normalised to unit l1 norm. With ``clip`` set,
  coordinates that sit on the box with the gradient pointing outward are
  left out first (they cannot move; without this, one-hot steps stall on
  them). ``l1_sparsity=1`` gives the one-hot ``s_1``, the theorem's step.
  The default 0.95 is measured: robust accuracy of a 2x256 ReLU MLP on 8x8
  digits in [0, 1] (64 inputs, and upsampled to 256), PGD-l1 with 10 and 20
  steps, ``clip=(0, 1)``, eps in {1, 2, 4} (64) and {2, 4, 8} (256), mean
  over the 12 settings (lower is stronger): one-hot 0.645, 0.99: 0.567,
  0.95: 0.480, 0.9: 0.534, 0.8: 0.597, 0.5: 0.771, dense 0.848. One-hot is
  best only at the smallest eps. Without the box rule, one-hot leaves
  0.81-0.85 accuracy at eps 1-4 on the 64-input model (0.08-0.74 with it).

  Other p (``1 < p < inf``, ``p != 2``): the step is the lp-normalised
  gradient ``g / ||g||_p`` rather than ``s_p(g)``, because the Euclidean
  projection is not radial for these p. With ``s_p(g)`` the fixed points of
  ``delta = Proj(delta + alpha * s_p(g))`` are the points whose outward
  normal is ``s_p(g)``, which do not maximise ``<delta, g>`` (measured: 2-3%
  below ``eps ||g||_{p*}`` for p = 1.5 and 3, and PGD misses the exact robust
  accuracy of a linear classifier). With ``g`` the fixed points are the KKT
  points of the constrained problem, and for ``alpha -> inf`` the step lands
  exactly on ``x + eps * s_p(g)``: the power method's update. For p in
  {1, 2, inf} both choices have these properties, and ``s_p`` is kept.

  Start without ``random_start``: the ``'logit'`` and ``'kl'`` losses have a
  minimum, with gradient exactly 0, at ``x* = x``, where PGD would stall. For
  these two losses the attack then starts at ``x + 0.01 * eps * r`` with a
  random unit lp direction ``r`` (TRADES starts at ``x + 0.001 N(0, I)``):
  the first step is the power method's first iteration from ``v0 = r``. The
  other losses start at ``x``. Pass ``delta0`` for a deterministic start.

  Called eagerly it runs through a cached ``tf.function`` (traced once per
  model and static arguments, `keras_opnorm._compiled`); inside your own
  ``tf.function`` (optionally ``jit_compile=True``) it is traced into yours.
  The loop is a ``tf.while_loop`` with one forward and one backward pass per
  step; the clean logits are computed once, and only when the loss or
  ``y=None`` needs them.

  Args:
    f: a Keras model (called with ``training=training``) or a callable from a
      batch to logits ``[batch, d]``.
    x: float tensor ``[batch, ...]``; float16/bfloat16 inputs are computed in
      float32 and the result is cast back.
    y: integer labels ``[batch]``, or one-hot labels ``[batch, d]``, or None
      to attack the model's own (clean) predictions, so that no true label
      leaks into the attack. Targeted attacks need ``y`` (the targets).
      Defaults to `None`.
    epsilon: the radius: a positive finite number, or a scalar / ``[batch]``
      tensor (or Keras variable, so schedules can change it).
    p: the norm of the ball, any real ``p >= 1`` or ``inf``. Defaults to `inf`.
    num_steps: number of steps, > 0. Defaults to `10`.
    step_size: ``alpha``, a positive number or scalar / ``[batch]`` tensor.
      Defaults to `None`, meaning ``2.5 * epsilon / num_steps`` (Madry et al.).
    random_start: start from a uniform random point of the eps-ball (Barthe
      et al. 2005). If False, start from ``x`` (or ``delta0``). Defaults to
      `True`.
    loss: ``'crossentropy'`` (Madry), ``'logit'`` (``||f(x*) - f(x)||_q``),
      ``'kl'`` (TRADES: ``KL(softmax f(x) || softmax f(x*))``), or a callable
      ``(logits_adv, logits_clean, y) -> [batch]`` (``y`` as given, or the
      predicted integer labels when ``y`` is None). Defaults to
      `'crossentropy'`.
    q: exponent of the ``'logit'`` loss. Defaults to `2`.
    clip: None or ``(lo, hi)``, the valid input range (numbers or tensors
      broadcastable to ``x``). Defaults to `None`.
    targeted: minimise the loss towards the labels ``y`` instead of
      maximising it. Defaults to `False`.
    num_restarts: run the attack this many times (random starts) and keep,
      per example, the point with the highest loss (lowest when targeted);
      with ``'crossentropy'`` a misclassified point (a hit of the target when
      targeted) is preferred to any point that is not. Defaults to `1`.
    training: the ``training`` flag for Keras models. Note that
      ``training=True`` runs batch norm on batch statistics and updates its
      moving averages at every step. Defaults to `False`.
    delta0: optional initial perturbation shaped like ``x`` (projected onto
      the ball and clipped); overrides ``random_start`` for the first restart.
      Defaults to `None`.
    l1_sparsity: for ``p = 1``, the fraction of coordinates left out of each
      step, in ``[0, 1]``: 1 is the one-hot ``s_1``, 0 the dense ``sign(g)/n``.
      Defaults to `0.95`.

  Returns:
    ``x_adv``, with the shape and dtype of ``x``.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``x`` outside ``clip`` (beyond 1e-6 * (hi - lo)); labels
      that are not integers or not in ``[0, num_classes)``. Warns with
      `keras_opnorm.VacuousThreatModelWarning` when ``epsilon`` covers the
      ``clip`` box (``epsilon >= ||(hi - lo) / 2||_p``).
    ValueError: for ``epsilon`` or ``step_size`` that are not positive and
      finite, ``p < 1``, ``num_steps <= 0``, labels whose batch differs from
      ``x``, an unknown loss, ``f`` returning something other than
      ``[batch, d]`` logits or not differentiable with respect to ``x``.
    TypeError: for integer ``x`` or a non-callable ``f`` or ``loss``.

  Example:

  >>> f = lambda x: tf.concat([x, -x], axis=1)  # logits (x, -x)
  >>> x_adv = pgd_attack(f, tf.zeros([1, 1]), tf.constant([0]), epsilon=0.5,
  ...                    num_steps=3, random_start=False)
  >>> x_adv.numpy().tolist()  # pushed away from class 0, onto the sphere
  [[-0.5]]
  """
  in_dtype = tf.as_dtype(getattr(x, "dtype", tf.float32))
  x = _checks.float_input(x, "x")
  p = _checks.exponent(p, "p")
  num_steps = _checks.positive_int(num_steps, "num_steps")
  num_restarts = _checks.positive_int(num_restarts, "num_restarts")
  loss_fn = attack_loss(loss, q=q)
  loss_name = loss if isinstance(loss, str) else None
  if isinstance(l1_sparsity, (bool, np.bool_)) or not isinstance(
      l1_sparsity, (numbers.Real, np.number)) or not 0.0 <= float(l1_sparsity) <= 1.0:
    raise ValueError(f"`l1_sparsity` must be a number in [0, 1]. Received: "
                     f"l1_sparsity={l1_sparsity!r}")
  l1_sparsity = float(l1_sparsity)
  if targeted and y is None:
    raise ValueError("`targeted=True` needs the target labels `y`. Received: y=None")
  eps = _radius(epsilon, "epsilon", x)
  if step_size is None:
    alpha = 2.5 * eps / float(num_steps)
  else:
    alpha = _radius(step_size, "step_size", x)
  clip = _clip_range(clip)
  x = _check_in_box(x, clip)
  warn_if_vacuous(epsilon, p, clip, x.shape[1:], "pgd_attack")
  if clip is not None:
    lo = tf.cast(clip[0], x.dtype)
    hi = tf.cast(clip[1], x.dtype)
  if y is not None:
    y = _labels(y, x)
  if delta0 is not None:
    delta0 = tf.cast(_checks.float_input(delta0, "delta0"), x.dtype)
    if delta0.shape.is_fully_defined() and x.shape.is_fully_defined() and (
        delta0.shape != x.shape):
      raise ValueError(f"`delta0` must have the shape of `x` {x.shape}. Received: "
                       f"delta0 with shape={delta0.shape}")
  fn = jacobian.as_logits_fn(f, training=training)

  checks = _same_batch(x, y, "y") if y is not None else []
  with tf.control_dependencies(checks):
    x = tf.identity(x) if checks else x
  eps_b = norms._per_example(eps, x)  # pylint: disable=protected-access
  alpha_b = norms._per_example(alpha, x)  # pylint: disable=protected-access
  sign = -1.0 if targeted else 1.0

  # Clean logits: once, and only when the loss or y=None needs them.
  logits_clean = None
  if y is None or loss_name != "crossentropy":
    logits_clean = tf.stop_gradient(fn(x))
    _check_label_width(y, logits_clean)
  if y is None:
    y = tf.argmax(logits_clean, axis=-1, output_type=tf.int32)

  def box(x_adv):
    return x_adv if clip is None else tf.clip_by_value(x_adv, lo, hi)

  def direction(g, x_adv):
    if math.isinf(p) or p == 2.0:
      return norms.steepest_ascent(g, p)
    if p != 1.0:
      # The lp-normalised gradient, not s_p(g): see "Other p" in the docstring.
      return norms.normalize(g, p)
    if clip is not None:
      # Coordinates on the box whose gradient points outward cannot move.
      stuck = tf.logical_or(tf.logical_and(x_adv <= lo, g < 0),
                            tf.logical_and(x_adv >= hi, g > 0))
      g = tf.where(stuck, tf.zeros_like(g), g)
    return _sparse_l1_direction(g, l1_sparsity)

  def step(x_adv):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(x_adv)
      logits_adv = fn(x_adv)
      _check_label_width(y, logits_adv)
      objective = sign * tf.reduce_sum(loss_fn(logits_adv, logits_clean, y))
    g = tape.gradient(objective, x_adv)
    if g is None:
      raise _checks.not_differentiable(f, of="the attack loss")
    s = direction(g, x_adv)
    delta = norms.project_lp_ball(x_adv + alpha_b * s - x, eps, p)
    return box(x + delta)

  def attack_once(delta_init):
    x_start = box(x + delta_init)
    _, x_adv = tf.while_loop(
        lambda i, _: i < num_steps,
        lambda i, x_adv: (i + 1, step(x_adv)),
        (tf.constant(0), x_start),
        maximum_iterations=num_steps)
    return x_adv

  def initial_delta(first):
    if delta0 is not None and first:
      return norms.project_lp_ball(delta0, eps, p)
    if random_start:
      return norms.random_lp_ball(tf.shape(x), eps, p, dtype=x.dtype)
    if loss_name in ("logit", "kl"):
      # x is a minimum of these losses (gradient 0): start next to it.
      r = norms.random_direction(tf.shape(x), p, dtype=x.dtype)
      r = tf.sign(r) if math.isinf(p) else r
      return _STATIONARY_START * eps_b * r
    return tf.zeros_like(x)

  if num_restarts == 1:
    x_adv = attack_once(initial_delta(True))
  else:
    x_adv = _best_of_restarts(
        attack_once, initial_delta, fn, loss_fn, x, y, logits_clean, num_restarts,
        targeted, prefer_hits=(loss_name == "crossentropy"))
  return tf.cast(x_adv, in_dtype)


def _best_of_restarts(attack_once, initial_delta, fn, loss_fn, x, y, logits_clean,
                      num_restarts, targeted, prefer_hits):
  """Runs the attack ``num_restarts`` times; keeps the worst case per example."""
  batch = tf.shape(x)[0]
  worst = float("inf") if targeted else -float("inf")
  better = tf.less if targeted else tf.greater
  first_delta = initial_delta(True)
  if y.shape.rank == 2:
    labels = tf.argmax(y, axis=-1, output_type=tf.int32)
  else:
    labels = tf.cast(y, tf.int32)

  def body(r, best_x, best_loss, best_hit):
    delta = tf.cond(tf.equal(r, 0), lambda: first_delta, lambda: initial_delta(False))
    x_adv = attack_once(delta)
    logits_adv = fn(x_adv)
    value = tf.cast(loss_fn(logits_adv, logits_clean, y), tf.float32)
    pred = tf.argmax(logits_adv, axis=-1, output_type=tf.int32)
    hit = tf.equal(pred, labels) if targeted else tf.not_equal(pred, labels)
    if not prefer_hits:
      hit = tf.zeros_like(hit)
    take = tf.logical_or(
        tf.logical_and(hit, tf.logical_not(best_hit)),
        tf.logical_and(tf.equal(hit, best_hit), better(value, best_loss)))
    take_b = tf.reshape(take, [-1] + [1] * (x.shape.rank - 1))
    return (r + 1, tf.where(take_b, x_adv, best_x), tf.where(take, value, best_loss),
            tf.logical_or(best_hit, hit))

  init = (tf.constant(0), x, tf.fill([batch], tf.constant(worst, tf.float32)),
          tf.zeros([batch], tf.bool))
  _, best_x, _, _ = tf.while_loop(
      lambda r, *_: r < num_restarts, body, init, maximum_iterations=num_restarts)
  return best_x
