"""Evaluation the way the paper does it: robustness, alignment, spectra.

Roth, Kilcher & Hofmann, "Adversarial Training is a Form of Data-dependent
Operator Norm Regularization", NeurIPS 2020 (https://arxiv.org/abs/1906.01527),
Section 5 ("Experiments"). For a network ``f`` (up to the logits) and held-out
examples ``x`` with Jacobians ``J = J_f(x)``:

* `robust_accuracy`: accuracy under lp PGD over a sweep of epsilons
  (the accuracy-vs-eps curve; ``eps = 0`` is the clean accuracy).
* `alignment`: ``|cos|`` between the PGD perturbation ``x_adv - x`` and the
  right singular vectors ``v_r`` of ``J`` by rank ``r = 1..k``, next to the
  same for a random direction (the paper's flat baseline);
  `alignment_vs_epsilon`: the rank-1 alignment as a function of eps.
* `spectrum`: the top-k singular values of ``J`` per example.
* `mean_operator_norm`: the mean per-example ``||J||_{p,q}``.
* `margin_alignment`: why cross-entropy PGD perturbations can miss ``v_1``
  while lq-logit ones find it: their alignment with the margin direction
  ``s_p(J^T (e_j - e_y))`` and how much ``J``'s top output direction is a
  margin direction.

Every function takes a model (or any callable ``x -> logits``) and either
arrays ``x`` (and ``y``) or a finite, *batched* ``tf.data.Dataset`` of
``(x, y)`` (or ``x``) batches; it walks the data in batches through
`tf.function`-compiled kernels and returns a small result dataclass whose
``to_dict()`` is plain JSON (Python floats and lists; ``float('inf')`` is
written as the string ``"inf"``).

Centered logits. Cross-entropy is invariant to adding the same constant to
every logit, ``CE(y, f(x) + c 1) = CE(y, f(x))``, so a cross-entropy attack
cannot see the component of ``J`` that shifts all logits together, while the
singular vectors of ``J`` can be dominated by it. The Jacobian that the
cross-entropy actually "sees" is the one of the centered logits

    f_c(x) = f(x) - mean_i f_i(x) = P f(x),   P = I - 1 1^T / d,
    J_c = P J,

(`center_logits`); every function here takes ``centered=True`` to use it and
`alignment` then reports the raw and the centered numbers side by side.
"""

import dataclasses
import math
import numbers

import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import jacobian
from keras_opnorm import norms
from keras_opnorm.attacks import pgd_attack
from keras_opnorm.operator_norm import operator_norm
from keras_opnorm.singular_values import singular_values

__all__ = [
    "RobustAccuracyCurve",
    "AlignmentResult",
    "AlignmentCurve",
    "SpectrumResult",
    "MarginAlignmentResult",
    "robust_accuracy",
    "alignment",
    "alignment_vs_epsilon",
    "spectrum",
    "mean_operator_norm",
    "margin_alignment",
    "center_logits",
    "expected_random_alignment",
]

_INF = float("inf")


# ---------------------------------------------------------------------------
# Pure math.
# ---------------------------------------------------------------------------


def center_logits(fn, training=False):
  """Wraps a logits function as the centered logits ``x -> P f(x)``.

  ``f_c(x) = f(x) - (1/d) sum_i f_i(x) = P f(x)`` with ``P = I - 1 1^T / d``,
  so that ``J_{f_c}(x) = P J_f(x)``: the Jacobian with the "shift every logit
  by the same amount" direction ``1`` projected out of its range. Softmax and
  cross-entropy are invariant to that shift, hence ``P J`` is the Jacobian a
  cross-entropy attack effectively sees.

  Args:
    fn: a Keras model or a callable ``x -> logits [batch, d]``.
    training: the ``training`` flag used when ``fn`` is a Keras model.
      Defaults to `False`.

  Returns:
    A callable ``x -> centered logits [batch, d]`` (each row sums to 0).

  Raises:
    TypeError: if ``fn`` is not callable.

  Example:

  >>> f = center_logits(lambda x: x)
  >>> f(tf.constant([[1.0, 2.0, 6.0]])).numpy().tolist()
  [[-2.0, -1.0, 3.0]]
  """
  logits_fn = jacobian.as_logits_fn(fn, training=training)

  def centered(x):
    logits = logits_fn(x)
    return logits - tf.reduce_mean(logits, axis=-1, keepdims=True)

  centered.__name__ = "centered_" + getattr(fn, "__name__", type(fn).__name__)
  return centered


def expected_random_alignment(n):
  """Mean ``|cos|`` between a uniformly random direction and a fixed one in R^n.

  For ``u`` uniform on the unit sphere ``S^{n-1}`` and a fixed unit ``e``,

      E |<u, e>| = Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2))  ~  sqrt(2 / (pi n)),

  the flat "random direction" baseline of the paper's alignment figure.

  Args:
    n: the dimension (a positive integer).

  Returns:
    The expectation as a Python float.

  Raises:
    TypeError, ValueError: if ``n`` is not a positive integer.

  Example:

  >>> round(expected_random_alignment(3), 6)  # Archimedes: u_1 ~ uniform[-1, 1]
  0.5
  >>> round(expected_random_alignment(2), 6)  # 2 / pi
  0.63662
  """
  n = _checks.positive_int(n, "n")
  return float(math.exp(math.lgamma(n / 2.0) - math.lgamma((n + 1) / 2.0)) / math.sqrt(math.pi))


def _abs_cosines(delta, vectors):
  """``|cos|`` between ``delta [b, ...]`` and each of ``vectors [b, k, ...]`` -> ``[b, k]``.

  A zero ``delta`` (no perturbation found, or clipped away) or a zero vector
  has no direction: its cosine is reported as 0, never NaN.
  """
  b = tf.shape(delta)[0]
  d = tf.reshape(tf.cast(delta, tf.float32), [b, -1])
  v = tf.reshape(tf.cast(vectors, tf.float32), [b, tf.shape(vectors)[1], -1])
  dots = tf.abs(tf.einsum("bn,bkn->bk", d, v))
  scale = norms.lp_norm(d, 2)[:, None] * tf.sqrt(tf.reduce_sum(tf.square(v), axis=-1))
  safe = tf.where(scale > 0, scale, tf.ones_like(scale))
  return tf.where(scale > 0, tf.minimum(dots / safe, 1.0), tf.zeros_like(dots))


# ---------------------------------------------------------------------------
# Result types.
# ---------------------------------------------------------------------------


def _jsonable(value):
  """Converts to plain JSON: Python scalars, lists and dicts only.

  numpy and TensorFlow values become Python ones, objects with a ``to_dict()``
  (the result types here) their dict, ``inf`` the string ``"inf"`` and NaN
  ``None``; anything else is returned as is (``json`` then rejects it). Also
  used by `keras_opnorm.experiments.compare` for ``results.json``.
  """
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if hasattr(value, "to_dict"):
    return _jsonable(value.to_dict())
  if tf.is_tensor(value):
    value = value.numpy()
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (numbers.Integral, np.integer)):
    return int(value)
  if isinstance(value, (numbers.Real, np.floating)):
    v = float(value)
    if math.isinf(v):
      return "inf" if v > 0 else "-inf"
    if math.isnan(v):
      return None
    return v
  return value


def _from_jsonable(value):
  if isinstance(value, list):
    return [_from_jsonable(v) for v in value]
  if value in ("inf", "-inf"):
    return float(value)
  return value


class _Result:
  """Mixin: ``to_dict()`` to plain JSON and ``from_dict()`` back."""

  _PER_EXAMPLE = ()

  def to_dict(self, per_example=True):
    """Returns the result as a dict of Python scalars and lists.

    Args:
      per_example: include the per-example arrays (e.g. every example's
        cosines); ``False`` keeps only the summaries. Defaults to `True`.

    Returns:
      A dict that ``json.dumps`` writes as standard JSON.
    """
    out = {}
    for field in dataclasses.fields(self):
      if not per_example and field.name in self._PER_EXAMPLE:
        continue
      out[field.name] = _jsonable(getattr(self, field.name))
    return out

  @classmethod
  def from_dict(cls, config):
    """Rebuilds a result from `to_dict` output (missing per-example fields -> None).

    Args:
      config: a dict as returned by `to_dict`; unknown keys are ignored.

    Returns:
      An instance of this result type.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _from_jsonable(v) for k, v in config.items() if k in names})


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


@dataclasses.dataclass(frozen=True)
class AlignmentResult(_Result):
  """Alignment of PGD perturbations with the right singular vectors of J, by rank.

  For each example, ``cos_r = |<x_adv - x, v_r>| / ||x_adv - x||_2`` where
  ``v_r`` is the r-th right singular vector of ``J_f(x)`` (unit l2 norm).

  Attributes:
    epsilon, p, q, loss: the attack (radius, norm, logit-loss norm, loss).
    k: number of ranks.
    num_examples: number of evaluated examples.
    mean, std: mean and standard deviation over examples of ``cos_r``,
      lists of length ``k`` (rank 1 first).
    random_mean, random_std: the same for a random Gaussian direction
      instead of the perturbation (the flat baseline).
    random_expected: the closed form ``E|cos|`` of a random direction in
      the input dimension (`expected_random_alignment`).
    singular_values: mean top-k singular values of ``J``.
    logit_shift: mean ``|<u_r, 1/sqrt(d)>|`` where ``u_r`` is the r-th left
      singular vector of ``J``: how much the r-th direction moves all logits
      together (1 = a pure shift, which cross-entropy ignores).
    centered: whether the centered-logits numbers below were computed.
    centered_mean, centered_std, centered_singular_values: the same as
      ``mean``, ``std``, ``singular_values`` for ``P J`` (`center_logits`);
      ``None`` unless ``centered``.
    cosines, centered_cosines: per-example ``cos_r``, ``[num_examples][k]``.
  """
  epsilon: float
  p: float
  q: float
  loss: str
  k: int
  num_examples: int
  mean: list
  std: list
  random_mean: list
  random_std: list
  random_expected: float
  singular_values: list
  logit_shift: list
  centered: bool = False
  centered_mean: list = None
  centered_std: list = None
  centered_singular_values: list = None
  cosines: list = None
  centered_cosines: list = None

  _PER_EXAMPLE = ("cosines", "centered_cosines")

  @property
  def rank1(self):
    """Mean rank-1 alignment (of ``J``)."""
    return self.mean[0]

  @property
  def centered_rank1(self):
    """Mean rank-1 alignment of ``P J`` (``None`` unless ``centered``)."""
    return None if self.centered_mean is None else self.centered_mean[0]


@dataclasses.dataclass(frozen=True)
class AlignmentCurve(_Result):
  """Rank-1 alignment of PGD perturbations as a function of the radius eps.

  Attributes:
    epsilons: the radii (as given).
    mean, std: mean / std over examples of ``|cos|`` between ``x_adv - x``
      and the top right singular vector of ``J``, one entry per radius.
    random_mean: the same for a random direction (independent of eps).
    random_expected: closed form of ``random_mean`` (`expected_random_alignment`).
    p, q, loss: the attack.
    num_examples: number of evaluated examples.
    centered: whether the centered numbers were computed.
    centered_mean, centered_std: the same for ``P J``; ``None`` unless ``centered``.
  """
  epsilons: list
  mean: list
  std: list
  random_mean: float
  random_expected: float
  p: float
  q: float
  loss: str
  num_examples: int
  centered: bool = False
  centered_mean: list = None
  centered_std: list = None


@dataclasses.dataclass(frozen=True)
class SpectrumResult(_Result):
  """Top-k singular values of the Jacobian ``J_f(x)`` over examples.

  Attributes:
    k: number of singular values.
    num_examples: number of evaluated examples.
    mean, std: mean / std over examples of ``sigma_r``, length ``k``, descending.
    centered: whether the spectrum is that of ``P J`` (`center_logits`).
    values: per-example singular values, ``[num_examples][k]``.
  """
  k: int
  num_examples: int
  mean: list
  std: list
  centered: bool = False
  values: list = None

  _PER_EXAMPLE = ("values",)


@dataclasses.dataclass(frozen=True)
class MarginAlignmentResult(_Result):
  """Alignment of PGD perturbations with ``v`` and with the margin direction.

  See `margin_alignment` for the definitions and how to read them. Every
  cosine is in ``[0, 1]``; a zero vector (no perturbation, ``J^T e = 0``) has
  cosine 0.

  Attributes:
    epsilon, p, q: the attack radius, the attack / input norm and the output
      norm (of the lq-logit attack and of ``||J||_{p,q}``).
    num_examples: number of evaluated examples.
    num_steps: PGD steps of both attacks.
    ce_v, logit_v: mean ``|cos(delta, v)|`` for the cross-entropy and the
      lq-logit PGD perturbation ``delta`` and the top (p,q) right vector
      ``v`` of ``J`` (`operator_norm`).
    ce_margin, logit_margin: mean ``|cos(delta, s_p(J^T e))|``, the
      alignment with the margin direction.
    u_margin: mean ``|<u, e>| / ||u||_2``, how much ``J``'s top output
      direction ``u`` is the margin direction ``e``.
    ce_v_values, logit_v_values, ce_margin_values, logit_margin_values,
      u_margin_values: the per-example values, ``[num_examples]``.
    wrong_class: the strongest wrong class ``j`` of every example.
  """
  epsilon: float
  p: float
  q: float
  num_examples: int
  num_steps: int
  ce_v: float
  logit_v: float
  ce_margin: float
  logit_margin: float
  u_margin: float
  ce_v_values: list = None
  logit_v_values: list = None
  ce_margin_values: list = None
  logit_margin_values: list = None
  u_margin_values: list = None
  wrong_class: list = None

  _PER_EXAMPLE = ("ce_v_values", "logit_v_values", "ce_margin_values",
                  "logit_margin_values", "u_margin_values", "wrong_class")
  _MEASURES = ("ce_v", "logit_v", "ce_margin", "logit_margin", "u_margin")


# ---------------------------------------------------------------------------
# Data handling.
# ---------------------------------------------------------------------------


def _check_batch_size(batch_size):
  return _checks.positive_int(batch_size, "batch_size")


def _labels(y, name="y"):
  """Integer labels ``[batch]`` from integer labels or one-hot ``[batch, d]``."""
  y = tf.convert_to_tensor(y)
  if y.shape.rank == 2 and y.shape[-1] == 1:
    y = tf.reshape(y, [-1])
  elif y.shape.rank == 2:
    y = tf.argmax(y, axis=-1)
  if y.shape.rank != 1:
    raise ValueError(
        f"`{name}` must be integer labels [batch] or one-hot labels [batch, d]. "
        f"Received: {name} with shape={y.shape}")
  if y.dtype.is_floating:
    y = tf.cast(tf.round(y), tf.int32)
  return tf.cast(y, tf.int32)


def _pad(t, size):
  """Pads a batch to ``size`` rows with copies of its last row."""
  if t is None or t.shape[0] >= size:
    return t
  return tf.concat([t, tf.repeat(t[-1:], size - t.shape[0], axis=0)], axis=0)


def _batches(x, y, batch_size, need_y):
  """Yields ``(x_batch, y_batch or None, count)`` from arrays or a batched Dataset.

  Every batch has the same number of rows (a short last batch is padded with
  copies of its last example; only its first ``count`` rows are real), so the
  compiled kernels see one static shape: one trace, one XLA compilation.
  """
  if isinstance(x, tf.data.Dataset):
    if y is not None:
      raise ValueError(
          "`y` must be None when `x` is a tf.data.Dataset: the dataset yields "
          f"(x, y) batches. Received: y of type {type(y).__name__}")
    size = None
    for element in x:
      if isinstance(element, (tuple, list)):
        xb = element[0]
        yb = element[1] if len(element) > 1 else None
      else:
        xb, yb = element, None
      xb = _checks.float_input(xb, "x")
      if need_y and yb is None:
        raise ValueError(
            "Labels are needed: the tf.data.Dataset passed as `x` must yield "
            "(x, y) batches. Received: a dataset yielding x only")
      yb = None if yb is None else _labels(yb)
      count = int(xb.shape[0])
      size = size or count
      if count:
        yield _pad(xb, size), _pad(yb, size), count
    if size is None:
      raise ValueError("`x` must contain at least one example. Received: an empty dataset")
    return
  x = _checks.float_input(x, "x")
  n = x.shape[0]
  if n == 0:
    raise ValueError(f"`x` must contain at least one example. Received: x with shape={x.shape}")
  if y is None:
    if need_y:
      raise ValueError(
          "`y` is required (integer or one-hot labels) when `x` is an array. Received: y=None")
  else:
    y = _labels(y)
    if y.shape[0] != n:
      raise ValueError(
          f"`x` and `y` must hold the same number of examples. Received: "
          f"x with shape={x.shape}, y with shape={y.shape}")
  size = min(batch_size, n)
  for start in range(0, n, size):
    xb = x[start:start + size]
    yb = None if y is None else y[start:start + size]
    yield _pad(xb, size), _pad(yb, size), int(xb.shape[0])


def _epsilons(epsilons, allow_zero=True, name="epsilons"):
  if isinstance(epsilons, numbers.Real) or (tf.is_tensor(epsilons) and epsilons.shape.rank == 0):
    epsilons = [epsilons]
  try:
    values = list(np.asarray(epsilons, dtype=object).reshape(-1))
  except Exception as e:  # pylint: disable=broad-except
    raise TypeError(
        f"`{name}` must be a number or a sequence of numbers. Received: {name}={epsilons!r}") from e
  if not values:
    raise ValueError(f"`{name}` must not be empty. Received: {name}={epsilons!r}")
  check = _checks.nonnegative_float if allow_zero else _checks.positive_float
  return [float(check(v, name)) for v in values]


def _single_epsilon(epsilon):
  """One positive radius, as a float."""
  values = _epsilons(epsilon, allow_zero=False, name="epsilon")
  if len(values) != 1:
    raise ValueError(f"`epsilon` must be a single positive number. Received: epsilon={values}")
  return values[0]


def _kwargs_if_set(**kwargs):
  return {k: v for k, v in kwargs.items() if v is not None}


def _loss_name(loss):
  if isinstance(loss, str):
    return loss
  return getattr(loss, "__name__", type(loss).__name__)


# ---------------------------------------------------------------------------
# Compiled kernels (shared with the monitor callbacks, which build them once).
# ---------------------------------------------------------------------------


class _RobustKernel:
  """Compiled ``(x, y, eps) -> [batch] bool``: correct on x and every PGD restart.

  Built once per model (the monitor callbacks keep one across epochs); the
  radius is a tensor argument, so a sweep over eps does not retrace.
  """

  def __init__(self, model, *, p, num_steps, step_size, num_restarts, loss, q,
               clip, random_start, training, jit_compile):
    fn = jacobian.as_logits_fn(model, training=training)

    def predict(x):
      return tf.argmax(fn(x), axis=-1, output_type=tf.int32)

    def robust(x, y, epsilon):
      correct = tf.equal(predict(x), y)
      for _ in range(num_restarts):
        x_adv = pgd_attack(
            model, x, y, epsilon=epsilon, p=p, num_steps=num_steps,
            step_size=step_size, random_start=random_start, loss=loss, q=q,
            clip=clip, training=training)
        correct = tf.logical_and(correct, tf.equal(predict(x_adv), y))
      return correct

    self.predict = tf.function(predict, jit_compile=jit_compile)
    self.robust = tf.function(robust, jit_compile=jit_compile)

  def run(self, x, y, epsilons, batch_size):
    """Per-example correctness: (clean [n], robust [n_eps, n]) numpy bools."""
    eps_tensors = [tf.constant(e, tf.float32) for e in epsilons]
    clean, robust = [], []
    for xb, yb, count in _batches(x, y, batch_size, need_y=True):
      clean_b = (self.predict(xb).numpy() == yb.numpy())[:count]
      per_eps = [clean_b if e == 0.0 else self.robust(xb, yb, et).numpy()[:count]
                 for e, et in zip(epsilons, eps_tensors)]
      clean.append(clean_b)
      robust.append(np.stack(per_eps, axis=0))
    return np.concatenate(clean), np.concatenate(robust, axis=1)


class _OperatorNormKernel:
  """Compiled ``x -> ||J||_{p,q} [batch]`` (of ``P J`` when centered), built once."""

  def __init__(self, model, *, p, q, num_iters, num_restarts, method, centered,
               training, jit_compile):
    fn = center_logits(model, training) if centered else jacobian.as_logits_fn(model, training)
    kwargs = _kwargs_if_set(num_iters=num_iters, num_restarts=num_restarts, method=method)

    def norm(x):
      return operator_norm(fn, x, p, q, **kwargs).norm

    self.norm = tf.function(norm, jit_compile=jit_compile)

  def run(self, x, batch_size):
    """Per-example norms ``[n]`` (numpy)."""
    return np.concatenate(
        [self.norm(xb).numpy()[:count]
         for xb, _, count in _batches(x, None, batch_size, need_y=False)])


def _singular_fn(model, *, k, num_iters, centered, training, jit_compile):
  """Compiled ``x -> (values [b, k], right vectors [b, k, ...], left [b, k, d])``."""
  fn = center_logits(model, training) if centered else jacobian.as_logits_fn(model, training)
  kwargs = _kwargs_if_set(num_iters=num_iters)

  def svd(x):
    result = singular_values(fn, x, k=k, **kwargs)
    return result.values, result.vectors, result.left

  return tf.function(svd, jit_compile=jit_compile)


class _AlignmentKernel:
  """Compiled PGD perturbations and singular vectors, built once per model.

  ``run`` returns, for every eps and example, ``|cos|`` between
  ``x_adv - x`` and the top-k right singular vectors of ``J`` (and of ``P J``
  when centered), plus the random-direction baseline and the spectra.
  """

  def __init__(self, model, *, p, q, loss, k, num_steps, step_size, random_start,
               clip, num_iters, centered, training, jit_compile):

    def perturbation(x, y, epsilon):
      x_adv = pgd_attack(
          model, x, y, epsilon=epsilon, p=p, num_steps=num_steps,
          step_size=step_size, random_start=random_start, loss=loss, q=q,
          clip=clip, training=training)
      return tf.cast(x_adv, tf.float32) - tf.cast(x, tf.float32)

    self.perturbation = tf.function(
        perturbation, jit_compile=jit_compile)
    common = dict(k=k, num_iters=num_iters, training=training, jit_compile=jit_compile)
    self.svd = _singular_fn(model, centered=False, **common)
    self.svd_centered = _singular_fn(model, centered=True, **common) if centered else None

  def run(self, x, y, epsilons, batch_size, seed):
    """Returns a dict of numpy arrays: cos [n_eps, n, k], rand, sv, shift [n, k], ..."""
    rng = np.random.default_rng(seed)
    eps_tensors = [tf.constant(e, tf.float32) for e in epsilons]
    centered = self.svd_centered is not None
    out = {"cos": [], "cos_c": [], "rand": [], "sv": [], "sv_c": [], "shift": []}
    dim = None
    for xb, yb, count in _batches(x, y, batch_size, need_y=False):
      dim = int(np.prod(xb.shape[1:]))
      values, vectors, left = self.svd(xb)
      vectors = vectors[:count]
      out["sv"].append(values.numpy()[:count])
      out["shift"].append(_logit_shift(left[:count]).numpy())
      r = tf.constant(rng.standard_normal((count,) + tuple(xb.shape[1:])), tf.float32)
      out["rand"].append(_abs_cosines(r, vectors).numpy())
      if centered:
        values_c, vectors_c, _ = self.svd_centered(xb)
        vectors_c = vectors_c[:count]
        out["sv_c"].append(values_c.numpy()[:count])
      cos_e, cos_c_e = [], []
      for et in eps_tensors:
        delta = self.perturbation(xb, yb, et)[:count]
        cos_e.append(_abs_cosines(delta, vectors).numpy())
        if centered:
          cos_c_e.append(_abs_cosines(delta, vectors_c).numpy())
      out["cos"].append(np.stack(cos_e))
      if centered:
        out["cos_c"].append(np.stack(cos_c_e))
    result = {
        "cos": np.concatenate(out["cos"], axis=1),  # [n_eps, n, k]
        "rand": np.concatenate(out["rand"]),  # [n, k]
        "sv": np.concatenate(out["sv"]),  # [n, k]
        "shift": np.concatenate(out["shift"]),  # [n, k]
        "dim": dim,
    }
    if centered:
      result["cos_c"] = np.concatenate(out["cos_c"], axis=1)
      result["sv_c"] = np.concatenate(out["sv_c"])
    return result


class _MarginKernel:
  """Compiled ``(x, y, eps) -> per-example margin-alignment measures``, built once.

  One call per batch: the (p,q) maximiser ``v`` and output direction ``u`` of
  ``J``, the strongest wrong class ``j``, the margin direction
  ``s_p(J^T e)``, and the cross-entropy and lq-logit PGD perturbations. The
  radius is a tensor argument, so several radii share one trace.
  """

  def __init__(self, model, *, p, q, num_steps, step_size, random_start, clip,
               num_iters, training, jit_compile):
    fn = jacobian.as_logits_fn(model, training=training)
    opnorm_kwargs = _kwargs_if_set(num_iters=num_iters)

    def measures(x, y, epsilon):
      result = operator_norm(fn, x, p, q, **opnorm_kwargs)
      e, wrong = _margin_output_direction(fn(x), y)
      _, g = jacobian.vjp(fn, x, e)
      margin_dir = norms.steepest_ascent(g, p)
      attack = dict(epsilon=epsilon, p=p, num_steps=num_steps, step_size=step_size,
                    random_start=random_start, clip=clip, training=training)
      x32 = tf.cast(x, tf.float32)
      delta_ce = tf.cast(pgd_attack(model, x, y, loss="crossentropy", **attack),
                         tf.float32) - x32
      delta_lq = tf.cast(pgd_attack(model, x, y, loss="logit", q=q, **attack),
                         tf.float32) - x32
      return {
          "ce_v": _abs_cos(delta_ce, result.v),
          "logit_v": _abs_cos(delta_lq, result.v),
          "ce_margin": _abs_cos(delta_ce, margin_dir),
          "logit_margin": _abs_cos(delta_lq, margin_dir),
          "u_margin": _abs_cos(result.u, e),
          "wrong_class": wrong,
      }

    self.measures = tf.function(measures, jit_compile=jit_compile)

  def run(self, x, y, epsilon, batch_size):
    """Per-example measures: a dict of numpy arrays ``[n]``."""
    eps = tf.constant(epsilon, tf.float32)
    parts = []
    for xb, yb, count in _batches(x, y, batch_size, need_y=True):
      out = self.measures(xb, yb, eps)
      parts.append({k: v.numpy()[:count] for k, v in out.items()})
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def _margin_output_direction(logits, y):
  """``e = (e_j - e_y) / sqrt(2)`` for the strongest wrong class ``j``, and ``j``.

  ``j = argmax_{i != y} f_i(x)``: the class whose margin ``f_j - f_y`` is the
  largest (the closest decision boundary in logit space).
  """
  logits = tf.cast(logits, tf.float32)
  d = tf.shape(logits)[-1]
  e_y = tf.one_hot(y, d, dtype=tf.float32)
  others = tf.where(e_y > 0, tf.fill(tf.shape(logits), float("-inf")), logits)
  wrong = tf.argmax(others, axis=-1, output_type=tf.int32)
  e = (tf.one_hot(wrong, d, dtype=tf.float32) - e_y) / math.sqrt(2.0)
  return e, wrong


def _abs_cos(a, b):
  """Per-example ``|<a, b>| / (||a||_2 ||b||_2)`` -> ``[batch]``; 0 for a zero vector."""
  return _abs_cosines(a, tf.expand_dims(b, 1))[:, 0]


def _logit_shift(left):
  """``|<u_r, 1/sqrt(d)>| / ||u_r||`` for left singular vectors ``[b, k, d]`` -> ``[b, k]``.

  1 when the r-th output direction moves every logit by the same amount
  (invisible to softmax / cross-entropy), 0 when it sums to zero.
  """
  left = tf.cast(left, tf.float32)
  d = tf.cast(tf.shape(left)[-1], tf.float32)
  norm = tf.sqrt(tf.reduce_sum(tf.square(left), axis=-1))
  safe = tf.where(norm > 0, norm, tf.ones_like(norm))
  shift = tf.abs(tf.reduce_sum(left, axis=-1)) / (tf.sqrt(d) * safe)
  return tf.where(norm > 0, tf.minimum(shift, 1.0), tf.zeros_like(shift))


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


# ---------------------------------------------------------------------------
# Public evaluation functions.
# ---------------------------------------------------------------------------


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
    ValueError, TypeError: for invalid arguments or data.
  """
  epsilons = sorted(set(_epsilons(epsilons)))
  p = _checks.exponent(p, "p")
  num_steps = _checks.positive_int(num_steps, "num_steps")
  num_restarts = _checks.positive_int(num_restarts, "num_restarts")
  batch_size = _check_batch_size(batch_size)
  if step_size is not None:
    step_size = _checks.positive_float(step_size, "step_size")
  kernel = _RobustKernel(
      model, p=p, num_steps=num_steps, step_size=step_size,
      num_restarts=num_restarts, loss=loss, q=q, clip=clip,
      random_start=random_start, training=training, jit_compile=jit_compile)
  clean, robust = kernel.run(x, y, epsilons, batch_size)
  accuracies = _curve_from_correct(clean, robust, epsilons)
  return RobustAccuracyCurve(
      epsilons=[float(e) for e in epsilons],
      accuracies=[float(a) for a in accuracies],
      clean_accuracy=float(clean.mean()),
      p=p, num_examples=int(clean.shape[0]), num_steps=num_steps,
      num_restarts=num_restarts, loss=_loss_name(loss),
      step_size=None if step_size is None else float(step_size))


def mean_operator_norm(model, x, p=2, q=2, *, num_iters=20, num_restarts=1, method="auto",
                       centered=False, batch_size=256, training=False, jit_compile=False):
  """Mean per-example operator norm ``(1/n) sum_i ||J_f(x_i)||_{p,q}``.

  ``||J||_{p,q} = max_{||v||_p <= 1} ||J v||_q`` from `operator_norm` (exact
  for (2,2) up to convergence, (1,q) and (p,inf); a lower bound from the
  power method otherwise).

  Args:
    model: a Keras model or a callable ``x -> logits``.
    x: inputs ``[n, ...]`` or a finite batched ``tf.data.Dataset``.
    p: input norm. Defaults to `2`.
    q: output norm. Defaults to `2`.
    num_iters: power iterations. Defaults to `20`.
    num_restarts: random restarts of the power method. Defaults to `1`.
    method: ``'auto'``, ``'power'`` or ``'exact'``. Defaults to `'auto'`.
    centered: use the centered logits ``P f`` (`center_logits`). Defaults to `False`.
    batch_size: examples per batch for array inputs. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    jit_compile: compile with XLA. Defaults to `False`.

  Returns:
    The mean as a Python float.

  Raises:
    ValueError, TypeError: an invalid ``p``, ``q`` or ``batch_size``, or
      empty or non-floating-point ``x``.
  """
  p = _checks.exponent(p, "p")
  q = _checks.exponent(q, "q")
  batch_size = _check_batch_size(batch_size)
  kernel = _OperatorNormKernel(
      model, p=p, q=q, num_iters=num_iters, num_restarts=num_restarts,
      method=method, centered=centered, training=training, jit_compile=jit_compile)
  return float(np.mean(kernel.run(x, batch_size)))


def spectrum(model, x, *, k=10, num_iters=None, centered=False, batch_size=256,
             training=False, jit_compile=False):
  """Top-k singular values of the Jacobian ``J_f(x)`` of every example.

  The paper's spectrum figure: adversarial training and data-dependent
  operator norm regularisation damp ``sigma_1 >= sigma_2 >= ...`` alike.

  Args:
    model: a Keras model or a callable ``x -> logits``.
    x: inputs ``[n, ...]`` or a finite batched ``tf.data.Dataset``.
    k: number of singular values (at most ``min(d, n_in)``). Defaults to `10`.
    num_iters: iterations of `singular_values`; ``None`` uses its default.
      Defaults to `None`.
    centered: the spectrum of ``P J`` (`center_logits`). Defaults to `False`.
    batch_size: examples per batch for array inputs. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    jit_compile: compile with XLA. Defaults to `False`.

  Returns:
    A `SpectrumResult`.

  Raises:
    ValueError, TypeError: an invalid ``k`` or ``batch_size``, or empty or
      non-floating-point ``x``.
  """
  k = _checks.positive_int(k, "k")
  batch_size = _check_batch_size(batch_size)
  svd = _singular_fn(
      model, k=k, num_iters=num_iters, centered=centered, training=training,
      jit_compile=jit_compile)
  values = np.concatenate(
      [svd(xb)[0].numpy()[:count]
       for xb, _, count in _batches(x, None, batch_size, need_y=False)])
  return SpectrumResult(
      k=k, num_examples=int(values.shape[0]),
      mean=[float(v) for v in values.mean(axis=0)],
      std=[float(v) for v in values.std(axis=0)],
      centered=bool(centered), values=values.tolist())


def _alignment_core(model, x, y, *, epsilons, p, q, loss, k, num_steps, step_size,
                    random_start, clip, num_iters, centered, batch_size, training,
                    seed, jit_compile):
  """Validates the arguments, builds an `_AlignmentKernel` and runs it once."""
  kernel = _AlignmentKernel(
      model, p=_checks.exponent(p, "p"), q=_checks.exponent(q, "q"), loss=loss,
      k=_checks.positive_int(k, "k"),
      num_steps=_checks.positive_int(num_steps, "num_steps"),
      step_size=None if step_size is None else _checks.positive_float(step_size, "step_size"),
      random_start=bool(random_start), clip=clip, num_iters=num_iters,
      centered=bool(centered), training=training, jit_compile=jit_compile)
  return kernel.run(x, y, epsilons, _check_batch_size(batch_size), seed)


def _floats(a):
  return [float(v) for v in np.asarray(a).reshape(-1)]


def alignment(model, x, y=None, *, epsilon, p=2, q=2, loss="crossentropy", k=10,
              num_steps=20, step_size=None, random_start=True, clip=None,
              num_iters=None, centered=False, batch_size=256, training=False,
              seed=0, jit_compile=False):
  """Alignment of PGD perturbations with the right singular vectors of J, by rank.

  For each example ``x`` with PGD perturbation ``delta = x_adv - x`` and the
  right singular vectors ``v_1, ..., v_k`` of ``J = J_f(x)`` (descending
  singular values), ``cos_r = |<delta, v_r>| / ||delta||_2`` (the sign of a
  singular vector is arbitrary). The paper's theorem predicts ``cos_1 ~ 1``
  for the lq-logit attack in a linear region (``loss='logit'``, where PGD
  is the power method) and high, rank-decaying alignment for cross-entropy
  PGD. A random Gaussian direction gives the flat baseline
  ``E|cos| = Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)) ~ sqrt(2 / (pi n))``.

  With ``centered=True`` the same perturbations are also compared with the
  singular vectors of ``P J`` (the centered logits, `center_logits`): the
  Jacobian that cross-entropy sees, since it ignores a common shift of all
  logits. ``logit_shift`` reports how much each left singular vector of ``J``
  is such a shift.

  Args:
    model: a Keras model or a callable ``x -> logits``.
    x: inputs ``[n, ...]``, or a finite batched ``tf.data.Dataset`` of
      ``x`` or ``(x, y)`` batches (then ``y`` must be None).
    y: labels for the cross-entropy attack; ``None`` attacks the model's own
      predictions. Defaults to `None`.
    epsilon: the attack radius (> 0).
    p: the attack norm. Defaults to `2`.
    q: the logit-distance norm for ``loss='logit'``. Defaults to `2`.
    loss: the attack loss, ``'crossentropy'``, ``'logit'``, ``'kl'`` or a
      callable (see `pgd_attack`). Defaults to `'crossentropy'`.
    k: number of ranks. Defaults to `10`.
    num_steps: PGD steps. Defaults to `20`.
    step_size: PGD step size; ``None``: ``2.5 * eps / num_steps``. Defaults to `None`.
    random_start: start PGD at a random point of the ball (needed for
      ``loss='logit'``, whose gradient vanishes at ``delta = 0``). Defaults to `True`.
    clip: ``(lo, hi)`` valid input range, or ``None``. Defaults to `None`.
    num_iters: iterations of `singular_values`; ``None``: its default.
      Defaults to `None`.
    centered: also compute the centered-logits alignment. Defaults to `False`.
    batch_size: examples per batch for array inputs. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    seed: seed of the random-direction baseline. Defaults to `0`.
    jit_compile: compile with XLA. Defaults to `False`.

  Returns:
    An `AlignmentResult`.

  Raises:
    ValueError, TypeError: a non-positive or non-scalar ``epsilon``, an
      invalid ``p``, ``q``, ``k``, ``num_steps``, ``step_size`` or
      ``batch_size``, ``x`` and ``y`` of different lengths, or empty or
      non-floating-point ``x``.
  """
  epsilon = _single_epsilon(epsilon)
  core = _alignment_core(
      model, x, y, epsilons=[epsilon], p=p, q=q, loss=loss, k=k, num_steps=num_steps,
      step_size=step_size, random_start=random_start, clip=clip, num_iters=num_iters,
      centered=centered, batch_size=batch_size, training=training, seed=seed,
      jit_compile=jit_compile)
  cos = core["cos"][0]
  kwargs = {}
  if centered:
    cos_c = core["cos_c"][0]
    kwargs = dict(
        centered_mean=_floats(cos_c.mean(0)), centered_std=_floats(cos_c.std(0)),
        centered_singular_values=_floats(core["sv_c"].mean(0)),
        centered_cosines=cos_c.tolist())
  return AlignmentResult(
      epsilon=epsilon, p=_checks.exponent(p, "p"), q=_checks.exponent(q, "q"),
      loss=_loss_name(loss), k=int(cos.shape[1]), num_examples=int(cos.shape[0]),
      mean=_floats(cos.mean(0)), std=_floats(cos.std(0)),
      random_mean=_floats(core["rand"].mean(0)), random_std=_floats(core["rand"].std(0)),
      random_expected=expected_random_alignment(core["dim"]),
      singular_values=_floats(core["sv"].mean(0)),
      logit_shift=_floats(core["shift"].mean(0)),
      centered=bool(centered), cosines=cos.tolist(), **kwargs)


def alignment_vs_epsilon(model, x, y=None, *, epsilons, p=2, q=2, loss="crossentropy",
                         num_steps=20, step_size=None, random_start=True, clip=None,
                         num_iters=None, centered=False, batch_size=256,
                         training=False, seed=0, jit_compile=False):
  """Rank-1 alignment of PGD perturbations with ``v_1(J)`` as a function of eps.

  The paper's alignment-vs-eps figure: as eps grows the eps-ball leaves the
  linear region around ``x`` and the alignment ``|cos(x_adv - x, v_1)|`` falls.
  The top singular vector is computed once per example; one attack per eps.
  See `alignment` for the arguments.

  Args:
    model: a Keras model or a callable ``x -> logits``.
    x: inputs ``[n, ...]`` or a finite batched ``tf.data.Dataset``.
    y: labels for the attack, or ``None`` (the model's predictions).
      Defaults to `None`.
    epsilons: a sequence of radii (> 0).
    p: the attack norm. Defaults to `2`.
    q: the logit-distance norm for ``loss='logit'``. Defaults to `2`.
    loss: the attack loss. Defaults to `'crossentropy'`.
    num_steps: PGD steps. Defaults to `20`.
    step_size: PGD step size; ``None``: ``2.5 * eps / num_steps``. Defaults to `None`.
    random_start: random start of PGD. Defaults to `True`.
    clip: ``(lo, hi)`` valid input range, or ``None``. Defaults to `None`.
    num_iters: iterations of `singular_values`. Defaults to `None`.
    centered: also compute the centered-logits alignment. Defaults to `False`.
    batch_size: examples per batch for array inputs. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    seed: seed of the random-direction baseline. Defaults to `0`.
    jit_compile: compile with XLA. Defaults to `False`.

  Returns:
    An `AlignmentCurve`.

  Raises:
    ValueError, TypeError: an empty ``epsilons`` or a non-positive radius, an
      invalid ``p``, ``q``, ``num_steps``, ``step_size`` or ``batch_size``,
      ``x`` and ``y`` of different lengths, or empty or non-floating-point
      ``x``.
  """
  epsilons = _epsilons(epsilons, allow_zero=False)
  core = _alignment_core(
      model, x, y, epsilons=epsilons, p=p, q=q, loss=loss, k=1, num_steps=num_steps,
      step_size=step_size, random_start=random_start, clip=clip, num_iters=num_iters,
      centered=centered, batch_size=batch_size, training=training, seed=seed,
      jit_compile=jit_compile)
  cos = core["cos"][:, :, 0]  # [n_eps, n]
  kwargs = {}
  if centered:
    cos_c = core["cos_c"][:, :, 0]
    kwargs = dict(centered_mean=_floats(cos_c.mean(1)), centered_std=_floats(cos_c.std(1)))
  return AlignmentCurve(
      epsilons=[float(e) for e in epsilons], mean=_floats(cos.mean(1)), std=_floats(cos.std(1)),
      random_mean=float(core["rand"][:, 0].mean()),
      random_expected=expected_random_alignment(core["dim"]),
      p=_checks.exponent(p, "p"), q=_checks.exponent(q, "q"), loss=_loss_name(loss),
      num_examples=int(cos.shape[1]), centered=bool(centered), **kwargs)


def margin_alignment(model, x, y=None, *, epsilon, p=2, q=2, num_steps=20, step_size=None,
                     random_start=True, clip=None, num_iters=None, batch_size=256,
                     training=False, jit_compile=False):
  """Why cross-entropy PGD can miss ``J``'s top singular vector: the margin measures.

  Roth et al. (2020)'s theorem is about PGD on the lq logit distance
  ``||f(x*) - f(x)||_q``: in a linear region it is the (p,q) power method, so
  its perturbation ``delta`` aligns with the top (p,q) right vector ``v`` of
  ``J = J_f(x)``. Cross-entropy PGD is another ascent, and its perturbations
  can align with ``v`` much less (on the 8x8 digits, the adversarially
  trained MLP's much less than the d.d. regularised one's). This function
  measures the explanation.

  The margin direction. With ``pi = softmax f(x)`` the input gradient of
  the cross-entropy is

      grad_x CE(y, f(x)) = J^T (pi - e_y) = sum_{i != y} pi_i J^T (e_i - e_y),

  the gradients of the margins ``f_i - f_y`` weighted by the probabilities of
  the wrong classes. Where the strongest wrong class ``j = argmax_{i != y}
  f_i(x)`` dominates (exactly, for two classes) it is a positive multiple of
  ``J^T e`` with the unit output direction

      e = (e_j - e_y) / sqrt(2),

  and in a linear region lp PGD on CE climbs to ``eps * s_p(J^T e)``: the
  lp-ball maximiser of the linearised margin, the top "singular vector" of the
  1 x n margin Jacobian ``e^T J``. CE therefore follows the *margin
  direction*, whichever output direction ``J`` amplifies most. (Since
  ``1^T e = 0``, ``J^T e = (P J)^T e``: centering the logits,
  `center_logits`, does not change it.)

  Why it misses ``v``. For p = q = 2, with the SVD ``J = sum_r sigma_r u_r
  v_r^T`` and ``c_r = <u_r, e>``,

      |cos(J^T e, v_1)| = sigma_1 |c_1| / sqrt(sum_r sigma_r^2 c_r^2),

  so the CE perturbation aligns with ``v_1`` only as much as ``J``'s top
  output direction ``u_1`` is a margin direction: with ``c_1 = 0`` it is
  orthogonal to ``v_1`` however large ``sigma_1`` is, while the lq-logit
  attack still finds ``v_1``. A common shift of all logits (``u_1 ~ 1``,
  which cross-entropy ignores; see `alignment`'s ``logit_shift``) is one way
  for ``u_1`` to miss every margin (``1^T e = 0``), not the only one. For
  other (p,q), ``u = s_{q*}(J v)`` from `operator_norm` plays the role of
  ``u_1``.

  Per example, with ``v, u`` from `operator_norm` (``||v||_p = 1``; for
  p = q = 2 the top singular pair) and ``delta_ce``, ``delta_lq`` the
  cross-entropy and lq-logit PGD perturbations at ``epsilon``:

      ce_v         = |cos(delta_ce, v)|        logit_v      = |cos(delta_lq, v)|
      ce_margin    = |cos(delta_ce, s_p(J^T e))|
      logit_margin = |cos(delta_lq, s_p(J^T e))|
      u_margin     = |<u, e>| / ||u||_2

  (``|cos(a, b)| = |<a, b>| / (||a||_2 ||b||_2)``; 0 for a zero vector). For
  p = q = 2, ``ce_v`` and ``logit_v`` are `alignment`'s rank-1 numbers. How
  to read them: a high ``ce_margin`` (CE follows the margin), a high
  ``logit_v`` (the logit attack follows ``v``) and a low ``u_margin`` (``J``'s
  top output direction is not a margin direction) explain a low ``ce_v``.

  Measured (`keras_opnorm.experiments.compare` defaults: 8x8 digits, MLP,
  p = q = 2, eps = 1, 30 epochs, mean of 3 seeds): ``ce_margin`` is 0.67-0.74
  for all four models, but ``u_margin`` is 0.17 for PGD adversarial training
  against 0.68 for d.d. operator-norm regularisation, and ``ce_v`` follows
  (0.32 against 0.65); the centered ``P J`` gives the same alignments as ``J``,
  so a logit shift is not the cause there. An interpretation: adversarial
  training flattens ``f`` along the margin directions it attacks, so the
  direction ``J`` amplifies most is left elsewhere; the d.d. regulariser
  flattens the top direction whatever it is, leaving the margin (which the
  clean loss needs) on top.

  Reference: Roth, Kilcher & Hofmann, "Adversarial Training is a Form of
  Data-dependent Operator Norm Regularization", NeurIPS 2020,
  https://arxiv.org/abs/1906.01527.

  Args:
    model: a Keras model or a callable ``x -> logits [batch, d]`` (``d >= 2``).
    x: inputs ``[n, ...]``, or a finite batched ``tf.data.Dataset`` of
      ``(x, y)`` batches (then ``y`` must be None).
    y: the true labels, integer ``[n]`` or one-hot ``[n, d]``: the margin is
      ``f_j - f_y``, so they are required with array inputs. Defaults to `None`.
    epsilon: the attack radius (> 0).
    p: the attack norm and the input norm of ``||J||_{p,q}``, in ``[1, inf]``.
      Defaults to `2`.
    q: the output norm of ``||J||_{p,q}`` and of the lq-logit attack.
      Defaults to `2`.
    num_steps: PGD steps of both attacks. Defaults to `20`.
    step_size: PGD step size; ``None``: ``2.5 * eps / num_steps``. Defaults to `None`.
    random_start: start both attacks at a random point of the ball (the
      lq-logit attack always starts off ``x``, see `pgd_attack`). Defaults to `True`.
    clip: ``(lo, hi)`` valid input range, or ``None``. Defaults to `None`.
    num_iters: power iterations of `operator_norm`; ``None``: its default.
      Defaults to `None`.
    batch_size: examples per batch for array inputs. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    jit_compile: compile with XLA. Defaults to `False`.

  Returns:
    A `MarginAlignmentResult` (means and per-example values).

  Raises:
    ValueError: a non-positive ``epsilon``, missing labels, ``x`` and ``y``
      of different lengths, or an invalid ``p``, ``q``, ``num_steps``,
      ``step_size`` or ``batch_size``.
    TypeError: non-numeric arguments or non-floating-point ``x``.
  """
  epsilon = _single_epsilon(epsilon)
  p = _checks.exponent(p, "p")
  q = _checks.exponent(q, "q")
  num_steps = _checks.positive_int(num_steps, "num_steps")
  if step_size is not None:
    step_size = _checks.positive_float(step_size, "step_size")
  if num_iters is not None:
    num_iters = _checks.positive_int(num_iters, "num_iters")
  batch_size = _check_batch_size(batch_size)
  kernel = _MarginKernel(
      model, p=p, q=q, num_steps=num_steps, step_size=step_size,
      random_start=bool(random_start), clip=clip, num_iters=num_iters, training=training,
      jit_compile=jit_compile)
  values = kernel.run(x, y, epsilon, batch_size)
  names = MarginAlignmentResult._MEASURES  # pylint: disable=protected-access
  return MarginAlignmentResult(
      epsilon=float(epsilon), p=p, q=q, num_examples=int(values["u_margin"].shape[0]),
      num_steps=num_steps,
      **{name: float(np.mean(values[name])) for name in names},
      **{name + "_values": _floats(values[name]) for name in names},
      wrong_class=[int(j) for j in values["wrong_class"]])
