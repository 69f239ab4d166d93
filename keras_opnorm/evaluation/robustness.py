"""Robust accuracy under lp PGD over a sweep of radii (the accuracy-vs-eps curve)."""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import jacobian
from keras_opnorm import logits_view
from keras_opnorm.attacks import _common
from keras_opnorm.attacks import pgd_attack
from keras_opnorm.evaluation._data import _Structured
from keras_opnorm.evaluation._data import _check_batch_size
from keras_opnorm.evaluation._data import _is_structured_data
from keras_opnorm.evaluation._data import _slice_fixed
from keras_opnorm.evaluation._data import _batches
from keras_opnorm.evaluation._data import _check_batch
from keras_opnorm.evaluation._data import _epsilons
from keras_opnorm.evaluation._data import _loss_name
from keras_opnorm.evaluation._results import _Result

_INF = float("inf")


@dataclasses.dataclass(frozen=True)
class RobustAccuracyCurve(_Result):
  """Accuracy under an lp PGD attack as a function of the radius eps.

  Attributes:
    epsilons: the radii, ascending (``0`` is the clean accuracy).
    accuracies: robust accuracy at each radius, in [0, 1].
    clean_accuracy: accuracy on the unperturbed examples.
    p: the attack norm.
    num_examples: number of evaluated examples.
    num_steps: PGD steps.
    num_restarts: PGD restarts (an example counts as robust only if it
      survives every restart).
    loss: the attack loss.
    step_size: the PGD step size (``None``: ``2.5 * eps / num_steps``).
  """
  epsilons: list
  accuracies: list
  clean_accuracy: float
  p: float
  num_examples: int
  num_steps: int
  num_restarts: int = 1
  loss: str = "crossentropy"
  step_size: float = None

  def accuracy_at(self, epsilon):
    """The robust accuracy at a radius of the sweep.

    Args:
      epsilon: one of ``epsilons`` (compared up to float round-off).

    Returns:
      The accuracy at that radius.

    Raises:
      ValueError: if ``epsilon`` is not one of the evaluated radii.
    """
    for eps, acc in zip(self.epsilons, self.accuracies):
      if math.isclose(eps, float(epsilon), rel_tol=1e-6, abs_tol=1e-12):
        return acc
    raise ValueError(
        f"`epsilon` must be one of the evaluated radii {self.epsilons}. "
        f"Received: epsilon={epsilon}")


class _RobustKernel:
  """Compiled ``(x, y, eps) -> [batch] bool``: correct on x and every PGD restart.

  Built once per model (the monitor callbacks keep one across epochs); the
  radius is a tensor argument, so a sweep over eps does not retrace. With
  ``structured`` (an `_Structured` x) the kernels take the packed ``z`` and
  the batch's fixed inputs as a last argument.
  """

  def __init__(self, model, *, p, num_steps, step_size, num_restarts, loss, q,
               clip, random_start, training, jit_compile, structured=None):
    fn = jacobian.as_logits_fn(model, training=training)
    self.fn, self.clip, self.structured = fn, clip, structured

    def bound(fixed):
      if fixed is None:
        return model, fn
      return structured.bind(fixed), structured.logits_fn(fixed)

    def predict(x, fixed=None):
      return tf.argmax(bound(fixed)[1](x), axis=-1, output_type=tf.int32)

    def robust(x, y, epsilon, fixed=None):
      batch_model = bound(fixed)[0]
      correct = tf.equal(predict(x, fixed), y)
      for _ in range(num_restarts):
        x_adv = pgd_attack(
            batch_model, x, y, epsilon=epsilon, p=p, num_steps=num_steps,
            step_size=step_size, random_start=random_start, loss=loss, q=q,
            clip=clip, training=training)
        correct = tf.logical_and(correct, tf.equal(predict(x_adv, fixed), y))
      return correct

    self.predict = tf.function(predict, jit_compile=jit_compile)
    self.robust = tf.function(robust, jit_compile=jit_compile)

  def run(self, x, y, epsilons, batch_size):
    """Per-example correctness: (clean [n], robust [n_eps, n]) numpy bools."""
    eps_tensors = [tf.constant(e, tf.float32) for e in epsilons]
    clean, robust = [], []
    if self.structured is None:
      batches = ((xb, yb, count, ()) for xb, yb, count in _batches(x, y, batch_size, need_y=True))
    else:
      batches = ((zb, yb, count, (fb,)) for zb, yb, count, fb in
                 self.structured.batches(batch_size, need_y=True))
    for xb, yb, count, fixed in batches:
      fn = self.fn if not fixed else self.structured.logits_fn(_slice_fixed(fixed[0], slice(0, 1)))
      _check_batch(xb, yb, self.clip, fn)
      clean_b = (self.predict(xb, *fixed).numpy() == yb.numpy())[:count]
      per_eps = [clean_b if e == 0.0 else self.robust(xb, yb, et, *fixed).numpy()[:count]
                 for e, et in zip(epsilons, eps_tensors)]
      clean.append(clean_b)
      robust.append(np.stack(per_eps, axis=0))
    return np.concatenate(clean), np.concatenate(robust, axis=1)


def _curve_from_correct(clean, robust, epsilons):
  """Combines per-eps attacks: robust at eps needs robust at every smaller eps.

  An adversarial example found at radius ``e1`` lies in every ball of radius
  ``e2 >= e1``, so counting it at ``e2`` too is a (stronger) valid attack and
  makes the curve non-increasing, like the true robust accuracy.
  """
  order = np.argsort(np.asarray(epsilons), kind="stable")
  survived = np.ones_like(clean, dtype=bool) & clean
  accuracies = np.zeros(len(epsilons))
  for i in order:
    survived = survived & robust[i].astype(bool)
    accuracies[i] = survived.mean()
  return accuracies


@logits_view.accepts_views(batches_itself=True)
def _example_shape(x, structured):
  """The shape of one example of ``x`` (arrays, structures or a dataset).

  For a ``tf.data.Dataset`` of ``(x, y)`` batches: the element spec's shape
  without the batch axis, or ``None`` where it is not fully known (then no
  vacuous-radius warning is possible before the first batch).
  """
  if structured is not None:
    return (structured.num_inputs,)
  if isinstance(x, tf.data.Dataset):
    spec = x.element_spec
    spec = spec[0] if isinstance(spec, (tuple, list)) else spec
    shape = getattr(spec, "shape", None)
    if shape is None or shape.rank is None or not shape[1:].is_fully_defined():
      return None
    return tuple(shape[1:].as_list())
  return np.shape(x)[1:]


def robust_accuracy(model, x, y=None, *, epsilons, p=_INF, num_steps=20, step_size=None,
                    num_restarts=1, loss="crossentropy", q=2, clip=None,
                    random_start=True, batch_size=256, training=False,
                    jit_compile=False):
  """Accuracy under lp PGD as a function of the radius eps.

  An example counts as robust at ``eps`` if it is classified correctly on the
  clean input and on the PGD adversarial input of every restart, at ``eps``
  and at every smaller radius of the sweep (an adversarial example inside a
  smaller ball lies inside every larger one, so the curve is non-increasing
  as the true robust accuracy is). ``eps = 0`` gives the clean accuracy.

  Args:
    model: a Keras model or a callable ``x -> logits``.
    x: inputs ``[n, ...]``, or a finite batched ``tf.data.Dataset`` of
      ``(x, y)`` batches (then ``y`` must be None).
      A dict/list of inputs (or a dataset of them) for a model with several
      inputs: the joint ball of the perturbed inputs (`keras_opnorm.logits_view`).
    y: integer labels ``[n]`` or one-hot labels ``[n, d]``. Defaults to `None`.
    epsilons: a number or a sequence of radii ``>= 0``.
    p: the attack norm in ``[1, inf]``. Defaults to `inf`.
    num_steps: PGD steps. Defaults to `20`.
    step_size: PGD step size; ``None`` uses ``pgd_attack``'s default
      ``2.5 * eps / num_steps`` (relative to each eps). Defaults to `None`.
    num_restarts: independent PGD runs per example. Defaults to `1`.
    loss: the attack loss (see `pgd_attack`). Defaults to `'crossentropy'`.
    q: the logit-distance norm for ``loss='logit'``. Defaults to `2`.
    clip: ``(lo, hi)`` valid input range, or ``None``. Defaults to `None`.
    random_start: start PGD from a random point of the ball. Defaults to `True`.
    batch_size: examples per batch for array inputs. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    jit_compile: compile the kernels with XLA. Defaults to `False`.

  Returns:
    A `RobustAccuracyCurve` (epsilons sorted ascending).

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``x`` outside ``clip`` (beyond 1e-6 * (hi - lo)); labels
      that are not integers or not in ``[0, num_classes)``. Warns with
      `keras_opnorm.VacuousThreatModelWarning` when ``epsilon`` covers the
      ``clip`` box (``epsilon >= ||(hi - lo) / 2||_p``).
    ValueError, TypeError: for invalid arguments or data.
  """
  epsilons = sorted(set(_epsilons(epsilons)))
  p = _checks.exponent(p, "p")
  num_steps = _checks.positive_int(num_steps, "num_steps")
  num_restarts = _checks.positive_int(num_restarts, "num_restarts")
  batch_size = _check_batch_size(batch_size)
  if step_size is not None:
    step_size = _checks.positive_float(step_size, "step_size")
  structured = _Structured(model, x, y, training) if _is_structured_data(x) else None
  example_shape = _example_shape(x, structured) if clip is not None else None
  if example_shape is not None:
    _common.warn_if_vacuous(max(epsilons), p, _common._clip_range(clip),  # pylint: disable=protected-access
                            example_shape, "robust_accuracy")
  kernel = _RobustKernel(
      model, p=p, num_steps=num_steps, step_size=step_size,
      num_restarts=num_restarts, loss=loss, q=q, clip=clip,
      random_start=random_start, training=training, jit_compile=jit_compile,
      structured=structured)
  clean, robust = kernel.run(x, y, epsilons, batch_size)
  accuracies = _curve_from_correct(clean, robust, epsilons)
  return RobustAccuracyCurve(
      epsilons=[float(e) for e in epsilons],
      accuracies=[float(a) for a in accuracies],
      clean_accuracy=float(clean.mean()),
      p=p, num_examples=int(clean.shape[0]), num_steps=num_steps,
      num_restarts=num_restarts, loss=_loss_name(loss),
      step_size=None if step_size is None else float(step_size))


# ---------------------------------------------------------------------------
# Robust radii from a minimum-norm attack: the whole accuracy-vs-eps curve.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RobustRadii(_Result):
  """Per-example robust radii from a minimum-norm attack (FMN).

  The radius of an example is the lp norm of the smallest adversarial
  perturbation the attack found: 0 where the clean point is misclassified,
  ``inf`` where no adversarial point was found. Every radius is an *upper
  bound* on the exact one, so the curve ``eps -> mean(radii > eps)`` is an
  upper bound on the exact robust accuracy at every eps, from one run.

  Attributes:
    radii: per-example radii (``inf``: none found).
    clean_accuracy: accuracy on the unperturbed examples.
    p: the attack norm.
    num_examples: number of evaluated examples.
    num_steps: the attack's steps.
    attack: the attack's name.
  """
  radii: list
  clean_accuracy: float
  p: float
  num_examples: int
  num_steps: int
  attack: str = "fmn"

  _PER_EXAMPLE = ("radii",)

  def accuracy_at(self, epsilon):
    """The robust accuracy at ``epsilon``: the share of radii ``> epsilon``."""
    epsilon = _checks.nonnegative_float(epsilon, "epsilon")
    return float(np.mean(np.asarray(self.radii, np.float64) > epsilon))

  def median(self):
    """The median radius (``inf`` when at most half the examples were broken)."""
    return float(np.median(np.asarray(self.radii, np.float64)))

  def curve(self, epsilons):
    """The accuracy-vs-eps curve at ``epsilons`` as a `RobustAccuracyCurve`."""
    epsilons = sorted(_epsilons(epsilons))
    return RobustAccuracyCurve(
        epsilons=[float(e) for e in epsilons],
        accuracies=[self.accuracy_at(e) if e > 0 else self.clean_accuracy for e in epsilons],
        clean_accuracy=self.clean_accuracy, p=self.p, num_examples=self.num_examples,
        num_steps=self.num_steps, num_restarts=1, loss=self.attack)


@logits_view.accepts_views(batches_itself=True)
def robust_radii(model, x, y=None, *, p=_INF, num_steps=100, num_targets=9, clip=None,
                 batch_size=256, seed=0, training=False, jit_compile=False):
  """Per-example robust radii by the fast minimum-norm attack (FMN).

  Runs `keras_opnorm.attacks.min_norm.fmn_attack` (Pintor et al., NeurIPS
  2021, https://arxiv.org/abs/2102.12827) once over the data in fixed-shape
  batches through one compiled kernel, and measures ``||x_adv - x||_p``
  where ``x_adv`` is adversarial. FMN runs against each of the
  ``num_targets`` most likely wrong classes and keeps the smallest
  perturbation: the untargeted FMN of the paper follows the currently
  strongest wrong class and was measured 10-57% above the exact radius on
  some points of linear models with 3-10 classes, the targeted one to
  3.5e-5 relative (tests/test_min_norm.py). ``result.curve(epsilons)`` is then the
  accuracy-vs-eps curve at any radii without another attack.

  Args:
    model: a Keras model or a callable ``x -> logits``.
    x: inputs ``[n, ...]``, or a batched ``tf.data.Dataset`` of ``(x, y)``.
      A dict/list of inputs (or a dataset of them) for a model with several
      inputs: the joint ball of the perturbed inputs (`keras_opnorm.logits_view`).
    y: integer or one-hot labels ``[n]`` (None with a dataset). Defaults to `None`.
    p: the norm, ``inf``, ``2`` or ``1``. Defaults to `inf`.
    num_steps: FMN steps (per target). Defaults to `100`.
    num_targets: target classes per example, capped at ``d - 1``; 1 runs
      the paper's untargeted FMN. Defaults to `9`.
    clip: None or ``(lo, hi)``, the valid input range. Defaults to `None`.
    batch_size: examples per compiled call (arrays only). Defaults to `256`.
    seed: a non-negative integer seed (each batch derives its own). Defaults to `0`.
    training: the ``training`` flag of Keras models. Defaults to `False`.
    jit_compile: compile the kernel with XLA. Defaults to `False`.

  Returns:
    A `RobustRadii`.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``x`` outside ``clip`` (beyond 1e-6 * (hi - lo)); labels
      that are not integers or not in ``[0, num_classes)``.
    ValueError: for an unsupported ``p``, ``num_steps <= 0``, missing labels
      or an empty data set.
  """
  from keras_opnorm.attacks import min_norm  # pylint: disable=g-import-not-at-top
  from keras_opnorm.attacks import _common  # pylint: disable=g-import-not-at-top
  p = _checks.exponent(p, "p")
  num_steps = _checks.positive_int(num_steps, "num_steps")
  num_targets = _checks.positive_int(num_targets, "num_targets")
  batch_size = _check_batch_size(batch_size)
  base_seed = _common.seed_tensor(seed)
  fn = jacobian.as_logits_fn(model, training=training)
  structured = _Structured(model, x, y, training) if _is_structured_data(x) else None

  def kernel(xb, yb, batch_seed, fixed=None):
    batch_model, fn_b = model, fn
    if fixed is not None:  # A structured x: xb is z, the batch's fixed inputs bound.
      batch_model, fn_b = structured.bind(fixed), structured.logits_fn(fixed)
    d = (fn(xb[:1]) if fixed is None else fn_b(xb)).shape[-1]
    targets = num_targets if d is None else min(num_targets, d - 1)
    x_adv = min_norm.fmn_attack(batch_model, xb, yb, p=p, num_steps=num_steps, clip=clip,
                                seed=batch_seed, training=training, targeted=targets > 1,
                                num_targets=max(targets, 1))
    correct = tf.equal(tf.argmax(fn_b(xb), axis=-1, output_type=tf.int32), yb)
    radius = min_norm.minimal_perturbation_norms(batch_model, xb, yb, x_adv, p=p)
    return correct, radius

  compiled = tf.function(kernel, jit_compile=jit_compile)
  correct, radii = [], []
  if structured is None:
    batches = ((xb, yb, count, ()) for xb, yb, count in _batches(x, y, batch_size, need_y=True))
  else:
    batches = ((zb, yb, count, (fb,)) for zb, yb, count, fb in
               structured.batches(batch_size, need_y=True))
  for i, (xb, yb, count, fixed) in enumerate(batches):
    _check_batch(xb, yb, clip, fn if not fixed else
                 structured.logits_fn(_slice_fixed(fixed[0], slice(0, 1))))
    c, r = compiled(xb, yb, _common.fold_seed(base_seed, i), *fixed)
    correct.append(c.numpy()[:count])
    radii.append(r.numpy()[:count])
  correct = np.concatenate(correct)
  radii = np.where(correct, np.concatenate(radii).astype(np.float64), 0.0)
  return RobustRadii(radii=[float(r) for r in radii], clean_accuracy=float(correct.mean()),
                     p=p, num_examples=int(correct.shape[0]), num_steps=num_steps)
