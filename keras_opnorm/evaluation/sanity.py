"""Sanity checks of a robustness evaluation: signs of gradient masking.

A gradient attack reports a robust accuracy that is only an upper bound on
the true one; it can be far too high when the model's gradients are
useless (zero, shattered, saturated softmax: "gradient masking" /
"obfuscated gradients"). Athalye, Carlini & Wagner, "Obfuscated Gradients
Give a False Sense of Security", ICML 2018 (https://arxiv.org/abs/1802.00420),
Sec. 3.1, and Carlini et al., "On Evaluating Adversarial Robustness", 2019
(https://arxiv.org/abs/1902.06705), Sec. 5 and its checklist, list the
symptoms that `gradient_masking_checks` tests:

* ``'monotonic'``: the robust accuracy must fall (weakly) as eps grows, and
  be about 0 at an eps that lets the attacker reach any input (the whole
  box for l-inf: ``eps >= hi - lo``).
* ``'gradient_free'``: a gradient-free attack (Square; Andriushchenko et
  al., ECCV 2020) must not be stronger than the gradient attacks.
* ``'budget'``: more steps and restarts of APGD-CE must change the robust
  accuracy little (an attack that has converged).
* ``'zero_gradients'``: the input gradient of the cross-entropy must not be
  exactly zero at many points (the check of fra31/auto-attack,
  ``autoattack/checks.py``, ``check_zero_gradients``).

Each failed check issues a ``UserWarning`` naming it and its numbers. A
passing report does not prove robustness; a failing one says the evaluation
cannot be trusted.
"""

import dataclasses
import importlib.util
import math
import time
import warnings

import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import jacobian
from keras_opnorm import logits_view
from keras_opnorm.attacks import losses
from keras_opnorm.evaluation._data import _Structured
from keras_opnorm.evaluation._data import _check_batch_size
from keras_opnorm.evaluation._data import _is_structured_data
from keras_opnorm.evaluation._data import _slice_fixed
from keras_opnorm.evaluation._data import _single_epsilon
from keras_opnorm.evaluation._results import _Result
from keras_opnorm.evaluation.autoattack import _materialize
from keras_opnorm.evaluation.autoattack import auto_attack

__all__ = ["SanityCheck", "SanityReport", "gradient_masking_checks"]

_INF = float("inf")

# Without clip, the "unbounded" radius of check (a) is this many times eps.
_UNBOUNDED_FACTOR = 100.0


@dataclasses.dataclass(frozen=True)
class SanityCheck(_Result):
  """One check of `gradient_masking_checks`.

  Attributes:
    name: ``'monotonic'``, ``'gradient_free'``, ``'budget'`` or
      ``'zero_gradients'``.
    passed: whether the check passed (``True`` when skipped).
    skipped: the check could not run (the reason is in ``message``).
    message: what was compared, in words.
    values: the numbers behind it.
  """
  name: str
  passed: bool
  skipped: bool
  message: str
  values: dict


@dataclasses.dataclass(frozen=True)
class SanityReport(_Result):
  """The gradient-masking checks of one model at one radius.

  Attributes:
    epsilon: the radius.
    p: the norm.
    num_examples: number of evaluated examples.
    passed: every check that ran passed.
    checks: the `SanityCheck` results, in the order of the module docstring.
    run_time_s: wall-clock seconds.
  """
  epsilon: float
  p: float
  num_examples: int
  passed: bool
  checks: list
  run_time_s: float = None

  def check(self, name):
    """The `SanityCheck` called ``name``.

    Args:
      name: a check name.

    Returns:
      The `SanityCheck`.

    Raises:
      ValueError: for an unknown name.
    """
    for c in self.checks:
      if c.name == name:
        return c
    raise ValueError(f"`name` must be one of {[c.name for c in self.checks]}. "
                     f"Received: name={name!r}")

  @classmethod
  def from_dict(cls, config):
    """Rebuilds a report from `to_dict` output."""
    report = super().from_dict(config)
    checks = [c if isinstance(c, SanityCheck) else SanityCheck.from_dict(c)
              for c in report.checks]
    return dataclasses.replace(report, checks=checks)


def _large_epsilon(p, epsilon, clip, example_shape, factor):
  """A radius that reaches every input: the box's lp diameter, or 100 x the largest eps."""
  if clip is None:
    return _UNBOUNDED_FACTOR * factor * epsilon
  lo, hi = (np.broadcast_to(np.asarray(b, np.float64), example_shape) for b in clip)
  width = (hi - lo).reshape(-1)
  if math.isinf(p):
    return float(width.max())
  return float(np.power(np.power(width, p).sum(), 1.0 / p))


def _zero_gradient_share(model, x, y, batch_size, training, structured=None, fixed=None):
  """Share of points whose input gradient of the cross-entropy is exactly 0.

  With ``structured`` (an `_Structured` x), ``x`` is the packed ``z`` and
  ``fixed`` its fixed inputs: the gradient is with respect to the perturbed
  inputs.
  """
  fn = jacobian.as_logits_fn(model, training=training)

  @tf.function
  def zero(xb, yb, fb=None):
    if fb is not None:
      fn_b = structured.logits_fn(fb)
    else:
      fn_b = fn
    with tf.GradientTape() as tape:
      tape.watch(xb)
      loss = tf.reduce_sum(losses.crossentropy_loss(fn_b(xb), y=yb))
    g = tape.gradient(loss, xb)
    if g is None:
      return tf.ones(tf.shape(xb)[:1], tf.bool)
    return tf.reduce_all(tf.equal(tf.reshape(g, [tf.shape(xb)[0], -1]), 0), axis=1)

  def fixed_at(i):
    if fixed is None:
      return ()
    return ({k: tf.constant(v[i:i + batch_size]) for k, v in fixed.items()},)

  flags = [zero(tf.constant(x[i:i + batch_size]), tf.constant(y[i:i + batch_size]),
                *fixed_at(i)).numpy()
           for i in range(0, x.shape[0], batch_size)]
  return float(np.concatenate(flags).mean())


@logits_view.accepts_views(batches_itself=True)
def gradient_masking_checks(model, x, y=None, *, epsilon, p=_INF, clip=None,
                            epsilon_factors=(0.5, 1.0, 2.0, 4.0), large_epsilon=None,
                            num_steps=20, num_targets=3, strong_steps_factor=5,
                            strong_restarts=2, num_queries=1000, tolerance=0.02,
                            batch_size=256, seed=0, training=False, warn=True):
  """The gradient-masking checks of Athalye et al. (2018) and Carlini et al. (2019).

  With ``acc_G(e)`` the robust accuracy at radius ``e`` under the gradient
  cascade ``G`` = APGD-CE (``num_steps``) then APGD-T (``num_targets``
  targets, ``num_steps``; left out for fewer than 4 classes), run by
  `keras_opnorm.evaluation.autoattack.auto_attack`, and ``tol`` the
  tolerance:

  * ``'monotonic'``: over ``e_1 < e_2 < ...`` = ``eps * epsilon_factors``
    and ``large_epsilon``: ``acc_G(e_{i+1}) <= acc_G(e_i) + tol`` and
    ``acc_G(large_epsilon) <= tol``. ``large_epsilon`` defaults to the lp
    diameter of the box ``clip`` (``max(hi - lo)`` for l-inf: every input
    of the box is then reachable) or, without ``clip``, to 100 times the
    largest radius of the sweep.
  * ``'gradient_free'``: ``acc_Square(eps) >= acc_G(eps) - tol``, Square
    with ``num_queries`` queries (skipped for ``p`` not in ``{2, inf}`` or
    without `keras_opnorm.attacks.square`).
  * ``'budget'``: ``acc_A(eps) - acc_A'(eps) <= tol`` with ``A`` APGD-CE of
    ``num_steps`` steps and 1 restart, ``A'`` APGD-CE of
    ``strong_steps_factor * num_steps`` steps and ``strong_restarts``
    restarts.
  * ``'zero_gradients'``: the share of points where the gradient of the
    cross-entropy with respect to ``x`` is exactly 0 is ``<= tol``.

  The defaults are cheap (about ``6 x 20 + 100 x 2 + 1000`` forward and
  backward passes per point, once per radius for the first check): meant
  for a few hundred examples; increase them for a published number.

  Args:
    model: a Keras model or a callable ``x -> logits``.
    x: inputs ``[n, ...]`` or a batched ``tf.data.Dataset`` of ``(x, y)``.
      A dict/list of inputs (or a dataset of them) for a model with several
      inputs: the joint ball of the perturbed inputs (`keras_opnorm.logits_view`).
    y: integer or one-hot labels (None with a dataset). Defaults to `None`.
    epsilon: the radius of interest, positive.
    p: ``inf``, ``2`` or ``1``. Defaults to `inf`.
    clip: None or ``(lo, hi)``, the valid input range. Defaults to `None`.
    epsilon_factors: the radii of the first check, relative to ``epsilon``.
      Defaults to `(0.5, 1.0, 2.0, 4.0)`.
    large_epsilon: the radius at which the accuracy must be about 0; None
      for the default above. Defaults to `None`.
    num_steps: APGD steps of the gradient attacks. Defaults to `20`.
    num_targets: APGD-T targets (capped at ``d - 1``). Defaults to `3`.
    strong_steps_factor: the step multiplier of the third check. Defaults
      to `5`.
    strong_restarts: the restarts of the third check. Defaults to `2`.
    num_queries: Square's queries. Defaults to `1000`.
    tolerance: the slack of every comparison (a share of examples).
      Defaults to `0.02`.
    batch_size: points per attack call. Defaults to `256`.
    seed: a non-negative integer seed. Defaults to `0`.
    training: the ``training`` flag of Keras models. Defaults to `False`.
    warn: ``warnings.warn`` for every failed check. Defaults to `True`.

  Returns:
    A `SanityReport`.

  Raises:
    ValueError: for a bad ``epsilon``, ``p``, ``tolerance`` or budget, or
      the errors of `auto_attack`.

  Example:

  >>> w = tf.constant([[1.0, -1.0, 0.5, -0.5]])
  >>> f = lambda x: tf.matmul(x, w)
  >>> x = tf.constant([[0.1], [0.3], [0.7], [0.9]]); y = tf.zeros([4], tf.int32)
  >>> r = gradient_masking_checks(f, x, y, epsilon=0.2, p=2, num_queries=50)
  >>> r.check("budget").passed, r.check("monotonic").passed
  (True, True)
  """
  start = time.time()
  epsilon = _single_epsilon(epsilon)
  p = _checks.exponent(p, "p")
  tolerance = _checks.nonnegative_float(tolerance, "tolerance")
  if tolerance >= 1:
    raise ValueError(f"`tolerance` must be in [0, 1). Received: tolerance={tolerance}")
  num_steps = _checks.positive_int(num_steps, "num_steps")
  num_targets = _checks.positive_int(num_targets, "num_targets")
  strong_steps_factor = _checks.positive_int(strong_steps_factor, "strong_steps_factor")
  strong_restarts = _checks.positive_int(strong_restarts, "strong_restarts")
  num_queries = _checks.positive_int(num_queries, "num_queries")
  batch_size = _check_batch_size(batch_size)
  factors = sorted({_checks.positive_float(f, "epsilon_factors") for f in epsilon_factors} | {1.0})
  structured, fixed = None, None
  if _is_structured_data(x):
    # Several inputs: the radii are those of the packed perturbed inputs z,
    # and auto_attack gets the data as arrays in the user's structure.
    structured = _Structured(model, x, y, training=training)
    z, y, fixed = structured.materialize(batch_size)
    x_data = structured.unpack(z, fixed)
    first_fn = structured.logits_fn(_slice_fixed(fixed, slice(0, 1)))
  else:
    z, y = _materialize(x, y, batch_size)
    x_data = z
    first_fn = jacobian.as_logits_fn(model, training=training)
  if large_epsilon is None:
    large_epsilon = _large_epsilon(p, epsilon, clip, z.shape[1:], factors[-1])
  large_epsilon = _checks.positive_float(large_epsilon, "large_epsilon")
  num_classes = first_fn(tf.constant(z[:1])).shape[-1]
  common = dict(p=p, version="custom", clip=clip, batch_size=batch_size, seed=seed, verbose=0,
                training=training)

  def run(eps, attacks):
    with warnings.catch_warnings():  # Check (a) covers the box on purpose.
      warnings.simplefilter("ignore", _checks.VacuousThreatModelWarning)
      return auto_attack(model, x_data, y, epsilon=eps, attacks=attacks, **common)

  gradient = [("apgd-ce", {"num_steps": num_steps})]
  if num_classes >= 4:
    gradient.append(("apgd-t", {"num_steps": num_steps,
                                "num_targets": min(num_targets, num_classes - 1)}))
  checks = []

  # (a) Accuracy falls with eps and is about 0 where any input is reachable.
  radii = [epsilon * f for f in factors]
  if large_epsilon > radii[-1]:
    radii.append(large_epsilon)
  results = [run(e, gradient) for e in radii]
  accs = [r.robust_accuracy for r in results]
  clean = results[0].clean_accuracy
  acc_at_eps = accs[factors.index(1.0)]
  rises = [(radii[i], radii[i + 1]) for i in range(len(accs) - 1)
           if accs[i + 1] > accs[i] + tolerance]
  at_large = accs[-1]
  ok = not rises and at_large <= tolerance
  message = (f"robust accuracy at eps = {[round(e, 6) for e in radii]}: "
             f"{[round(a, 4) for a in accs]} (clean {clean:.4f}).")
  if rises:
    message += f" It rises by more than {tolerance} from eps {rises[0][0]:g} to {rises[0][1]:g}."
  if at_large > tolerance:
    message += (f" At eps = {large_epsilon:g}, where the attack can reach any input, it is "
                f"{at_large:.4f} > {tolerance}: the attacks fail where they cannot fail.")
  checks.append(SanityCheck("monotonic", ok, False, message,
                            {"epsilons": radii, "accuracies": accs, "clean_accuracy": clean}))

  # (b) The gradient-free attack is not stronger than the gradient attacks.
  if p not in (2.0, _INF):
    checks.append(SanityCheck("gradient_free", True, True,
                              f"skipped: Square has no l{p:g} version (p in {{2, inf}}).",
                              {"gradient_accuracy": acc_at_eps}))
  elif importlib.util.find_spec("keras_opnorm.attacks.square") is None:
    checks.append(SanityCheck("gradient_free", True, True,
                              "skipped: keras_opnorm.attacks.square is not available.",
                              {"gradient_accuracy": acc_at_eps}))
  else:
    square = run(epsilon, [("square", {"num_queries": num_queries})]).robust_accuracy
    ok = square >= acc_at_eps - tolerance
    message = (f"robust accuracy at eps = {epsilon:g}: Square ({num_queries} queries) "
               f"{square:.4f}, gradient attacks {acc_at_eps:.4f}.")
    if not ok:
      message += (" The gradient-free attack is stronger by "
                  f"{acc_at_eps - square:.4f} > {tolerance}: the gradients mislead the attacks.")
    checks.append(SanityCheck("gradient_free", ok, False, message,
                              {"square_accuracy": square, "gradient_accuracy": acc_at_eps}))

  # (c) More steps and restarts change little.
  base = run(epsilon, [("apgd-ce", {"num_steps": num_steps})]).robust_accuracy
  strong = run(epsilon, [("apgd-ce", {"num_steps": strong_steps_factor * num_steps,
                                      "num_restarts": strong_restarts})]).robust_accuracy
  ok = base - strong <= tolerance
  message = (f"APGD-CE robust accuracy at eps = {epsilon:g}: {base:.4f} with {num_steps} steps, "
             f"{strong:.4f} with {strong_steps_factor * num_steps} steps x {strong_restarts} "
             f"restarts.")
  if not ok:
    message += f" The larger budget lowers it by {base - strong:.4f} > {tolerance}: not converged."
  checks.append(SanityCheck("budget", ok, False, message,
                            {"accuracy": base, "strong_accuracy": strong,
                             "num_steps": num_steps,
                             "strong_steps": strong_steps_factor * num_steps,
                             "strong_restarts": strong_restarts}))

  # (d) Zero gradients.
  share = _zero_gradient_share(model, z, y, batch_size, training, structured, fixed)
  ok = share <= tolerance
  message = (f"share of points with an exactly zero input gradient of the cross-entropy: "
             f"{share:.4f}.")
  if not ok:
    message += f" More than {tolerance}: gradient attacks cannot move there."
  checks.append(SanityCheck("zero_gradients", ok, False, message, {"share": share}))

  if warn:
    for c in checks:
      if not c.passed:
        warnings.warn(f"Gradient-masking check {c.name!r} failed: {c.message}", UserWarning,
                      stacklevel=2)
  return SanityReport(epsilon=epsilon, p=p, num_examples=int(z.shape[0]),
                      passed=all(c.passed for c in checks), checks=checks,
                      run_time_s=float(time.time() - start))
