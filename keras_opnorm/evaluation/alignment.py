"""Alignment of adversarial perturbations with the Jacobian's singular vectors."""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import jacobian
from keras_opnorm import logits_view
from keras_opnorm import norms
from keras_opnorm.attacks import pgd_attack
from keras_opnorm.operator_norm import operator_norm
from keras_opnorm.evaluation._data import _Structured
from keras_opnorm.evaluation._data import _any_batches
from keras_opnorm.evaluation._data import _check_batch_size
from keras_opnorm.evaluation._data import _is_structured_data
from keras_opnorm.evaluation._data import _epsilons
from keras_opnorm.evaluation._data import _single_epsilon
from keras_opnorm.evaluation._data import _kwargs_if_set
from keras_opnorm.evaluation._data import _loss_name
from keras_opnorm.evaluation._data import _floats
from keras_opnorm.evaluation._results import _Result
from keras_opnorm.evaluation.spectrum import _singular_fn


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


class _AlignmentKernel:
  """Compiled PGD perturbations and singular vectors, built once per model.

  ``run`` returns, for every eps and example, ``|cos|`` between
  ``x_adv - x`` and the top-k right singular vectors of ``J`` (and of ``P J``
  when centered), plus the random-direction baseline and the spectra.
  """

  def __init__(self, model, *, p, q, loss, k, num_steps, step_size, random_start,
               clip, num_iters, centered, training, jit_compile, structured=None):
    self.structured = structured

    def perturbation(x, y, epsilon, fixed=None):
      x_adv = pgd_attack(
          model if fixed is None else structured.bind(fixed), x, y, epsilon=epsilon, p=p,
          num_steps=num_steps, step_size=step_size, random_start=random_start, loss=loss, q=q,
          clip=clip, training=training)
      return tf.cast(x_adv, tf.float32) - tf.cast(x, tf.float32)

    self.perturbation = tf.function(
        perturbation, jit_compile=jit_compile)
    common = dict(k=k, num_iters=num_iters, training=training, jit_compile=jit_compile,
                  structured=structured)
    self.svd = _singular_fn(model, centered=False, **common)
    self.svd_centered = _singular_fn(model, centered=True, **common) if centered else None

  def run(self, x, y, epsilons, batch_size, seed):
    """Returns a dict of numpy arrays: cos [n_eps, n, k], rand, sv, shift [n, k], ..."""
    rng = np.random.default_rng(seed)
    eps_tensors = [tf.constant(e, tf.float32) for e in epsilons]
    centered = self.svd_centered is not None
    out = {"cos": [], "cos_c": [], "rand": [], "sv": [], "sv_c": [], "shift": []}
    dim = None
    for xb, yb, count, extra in _any_batches(x, y, batch_size, need_y=False,
                                             structured=self.structured):
      dim = int(np.prod(xb.shape[1:]))
      values, vectors, left = self.svd(xb, *extra)
      vectors = vectors[:count]
      out["sv"].append(values.numpy()[:count])
      out["shift"].append(_logit_shift(left[:count]).numpy())
      r = tf.constant(rng.standard_normal((count,) + tuple(xb.shape[1:])), tf.float32)
      out["rand"].append(_abs_cosines(r, vectors).numpy())
      if centered:
        values_c, vectors_c, _ = self.svd_centered(xb, *extra)
        vectors_c = vectors_c[:count]
        out["sv_c"].append(values_c.numpy()[:count])
      cos_e, cos_c_e = [], []
      for et in eps_tensors:
        delta = self.perturbation(xb, yb, et, *extra)[:count]
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
               num_iters, training, jit_compile, structured=None):
    logits_fn = jacobian.as_logits_fn(model, training=training)
    opnorm_kwargs = _kwargs_if_set(num_iters=num_iters)
    self.structured = structured

    def measures(x, y, epsilon, fixed=None):
      fn, batch_model = logits_fn, model
      if fixed is not None:
        batch_model = structured.bind(fixed)
        fn = structured.logits_fn(fixed)
      result = operator_norm(fn, x, p, q, **opnorm_kwargs)
      e, wrong = _margin_output_direction(fn(x), y)
      _, g = jacobian.vjp(fn, x, e)
      margin_dir = norms.steepest_ascent(g, p)
      attack = dict(epsilon=epsilon, p=p, num_steps=num_steps, step_size=step_size,
                    random_start=random_start, clip=clip, training=training)
      x32 = tf.cast(x, tf.float32)
      delta_ce = tf.cast(pgd_attack(batch_model, x, y, loss="crossentropy", **attack),
                         tf.float32) - x32
      delta_lq = tf.cast(pgd_attack(batch_model, x, y, loss="logit", q=q, **attack),
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
    for xb, yb, count, extra in _any_batches(x, y, batch_size, need_y=True,
                                             structured=self.structured):
      out = self.measures(xb, yb, eps, *extra)
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
      centered=bool(centered), training=training, jit_compile=jit_compile,
      structured=_Structured(model, x, y, training) if _is_structured_data(x) else None)
  return kernel.run(x, y, epsilons, _check_batch_size(batch_size), seed)


@logits_view.accepts_views(batches_itself=True)
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


@logits_view.accepts_views(batches_itself=True)
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
      A dict/list of inputs (or a dataset of them) for a model with several
      inputs: the perturbed inputs, packed (`keras_opnorm.logits_view`).
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


@logits_view.accepts_views(batches_itself=True)
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
      jit_compile=jit_compile,
      structured=_Structured(model, x, y, training) if _is_structured_data(x) else None)
  values = kernel.run(x, y, epsilon, batch_size)
  names = MarginAlignmentResult._MEASURES  # pylint: disable=protected-access
  return MarginAlignmentResult(
      epsilon=float(epsilon), p=p, q=q, num_examples=int(values["u_margin"].shape[0]),
      num_steps=num_steps,
      **{name: float(np.mean(values[name])) for name in names},
      **{name + "_values": _floats(values[name]) for name in names},
      wrong_class=[int(j) for j in values["wrong_class"]])
