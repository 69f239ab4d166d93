"""AutoAttack-grade robust accuracy: a cascade of complementary attacks.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks", ICML 2020 (https://arxiv.org/abs/2003.01690),
and the reference implementation fra31/auto-attack (``autoattack/autoattack.py``,
``AutoAttack.set_version`` and ``run_standard_evaluation``). An example counts
as robust at radius ``eps`` only if it is classified correctly on ``x`` and no
attack of the cascade finds a verified adversarial point::

  robust(x, y) = [argmax f(x) = y]  and  for every attack A of the cascade:
                 not ( argmax f(x_A) != y  and  ||x_A - x||_p <= eps  and  x_A in clip )

Each attack runs only on the points every earlier attack left robust (the
clean-misclassified points are never attacked), so a robust model pays the
cost of the later, more expensive attacks only on its hard points.

The cascades (``version``), with the budgets of ``AutoAttack.set_version``:

* ``'standard'``, ``p`` in ``{inf, 2}``: APGD-CE (100 steps, 1 restart),
  APGD-T (9 targets, 100 steps, 1 restart each), FAB-T (9 targets, 100
  steps, 1 restart each), Square (5000 queries, ``p_init = 0.8``, 1 restart).
* ``'standard'``, ``p = 1``: APGD-CE (100 steps, 5 restarts), APGD-T (5
  targets, 100 steps), FAB-T (9 targets, 100 steps). The reference also
  lists Square and runs l1-APGD with its larger-radius schedule
  (``use_largereps``); `keras_opnorm.attacks.square` has no l1 version and
  `keras_opnorm.attacks.apgd` no radius schedule, so both are left out here:
  the l1 cascade is the reference's minus those two refinements.
* ``'fast'``: APGD-CE (20 steps, 1 restart), then APGD-T (3 targets, 20
  steps each), for monitoring during training and CI. About ``21 + 3 * 21``
  gradients per robust point instead of ``101 + 9 * 101 + 9 * 100`` plus
  5000 forward passes: an upper bound on the robust accuracy that is
  usually close to the standard one on models without gradient masking
  (20 APGD steps match the 20 PGD steps of `robust_accuracy`; the 3 targets
  are the runner-up classes, where APGD-T finds most of its successes),
  but never a substitute for the standard cascade in a reported number.
* ``'custom'``: the attacks given in ``attacks``.

Where a model has fewer than 10 classes, the targets of the preset versions
become ``min(targets, d - 1)`` (all other classes, which is what 9 targets
mean for 10 classes); ``num_targets`` given explicitly must be ``< d``. On
models with 2 or 3 classes the preset versions leave APGD-T out (its
targeted DLR needs 4 logits; `AutoAttackResult.attacks` lists what ran): a
binary classifier gets APGD-CE, FAB-T (one target: FAB) and Square.
"""

import dataclasses
import importlib
import math
import numbers
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import jacobian
from keras_opnorm import logits_view
from keras_opnorm.attacks import _common
from keras_opnorm.attacks import losses
from keras_opnorm.evaluation._data import _batches
from keras_opnorm.evaluation._data import _Structured
from keras_opnorm.evaluation._data import _check_batch_size
from keras_opnorm.evaluation._data import _is_structured_data
from keras_opnorm.evaluation._data import _slice_fixed
from keras_opnorm.evaluation._data import _single_epsilon
from keras_opnorm.evaluation._results import _Result

__all__ = ["AutoAttackResult", "auto_attack", "VERSIONS", "ATTACKS"]

_INF = float("inf")

VERSIONS = ("standard", "fast", "custom")

# Relative slack of the verification ||x_adv - x||_p <= eps (1 + 1e-5).
_RTOL = 1e-5


# ----------------------------------------------------------------------------
# The attack registry: name -> (module, function, fixed arguments, budget).
# ----------------------------------------------------------------------------


def _pgd(f, x, y, *, epsilon, p, clip, seed, training, num_steps, step_size=None,
         loss="crossentropy"):
  """PGD from a seeded random start (`pgd_attack` draws its own start unseeded)."""
  from keras_opnorm import norms  # pylint: disable=g-import-not-at-top
  from keras_opnorm.attacks import pgd  # pylint: disable=g-import-not-at-top
  # A random start in the ball: a random direction (uniform in the cube for
  # l-inf, Gaussian otherwise) scaled to the radius eps * u, u ~ U(0, 1).
  if math.isinf(p):
    g = tf.random.stateless_uniform(tf.shape(x), _common.fold_seed(seed, 0), -1.0, 1.0,
                                    dtype=x.dtype)
  else:
    g = tf.random.stateless_normal(tf.shape(x), _common.fold_seed(seed, 0), dtype=x.dtype)
  u = tf.random.stateless_uniform(tf.shape(x)[:1], _common.fold_seed(seed, 1), dtype=x.dtype)
  radius = tf.reshape(epsilon * u, [-1] + [1] * (x.shape.rank - 1))
  delta0 = norms.normalize(g, p) * radius
  return pgd.pgd_attack(f, x, y, epsilon=epsilon, p=p, num_steps=num_steps,
                        step_size=step_size, random_start=False, loss=loss, clip=clip,
                        delta0=delta0, training=training)


def _fmn(f, x, y, *, epsilon, p, clip, seed, training, **budget):
  del epsilon  # Minimum-norm: the verification keeps the points within eps.
  from keras_opnorm.attacks import min_norm  # pylint: disable=g-import-not-at-top
  return min_norm.fmn_attack(f, x, y, p=p, clip=clip, seed=seed, training=training, **budget)


# name: (module, function name or local function, fixed keyword arguments,
#        budget (the defaults, overridable), other options allowed, norms, classes needed)
_REGISTRY = {
    "apgd-ce": ("apgd", "apgd_attack", {"loss": "crossentropy"},
                {"num_steps": 100, "num_restarts": 1}, ("rho", "momentum"), (1, 2, _INF), 2),
    "apgd-dlr": ("apgd", "apgd_attack", {"loss": "dlr"},
                 {"num_steps": 100, "num_restarts": 1}, ("rho", "momentum"), (1, 2, _INF), 3),
    "apgd-t": ("apgd", "apgd_targeted_attack", {},
               {"num_targets": 9, "num_steps": 100, "num_restarts": 1}, ("rho",), (1, 2, _INF),
               4),
    "fab-t": ("fab", "fab_attack", {"targeted": True},
              {"num_targets": 9, "num_steps": 100, "num_restarts": 1},
              ("alpha_max", "eta", "beta", "num_search_steps"), (1, 2, _INF), 2),
    "fab": ("fab", "fab_attack", {"targeted": False},
            {"num_steps": 100, "num_restarts": 1},
            ("alpha_max", "eta", "beta", "num_search_steps"), (1, 2, _INF), 2),
    "square": ("square", "square_attack", {},
               {"num_queries": 5000, "p_init": 0.8, "num_restarts": 1}, ("loss",), (2, _INF), 2),
    "pgd": (None, _pgd, {}, {"num_steps": 20}, ("step_size", "loss"), None, 2),
    "fmn": (None, _fmn, {}, {"num_steps": 100}, (), (1, 2, _INF), 2),
}

ATTACKS = tuple(_REGISTRY)


def _preset(version, p):
  """The (name, budget) stages of a preset version."""
  if version == "fast":
    return [("apgd-ce", {"num_steps": 20}), ("apgd-t", {"num_targets": 3, "num_steps": 20})]
  if p == 1.0:
    return [("apgd-ce", {"num_restarts": 5}), ("apgd-t", {"num_targets": 5}), ("fab-t", {})]
  return [("apgd-ce", {}), ("apgd-t", {}), ("fab-t", {}), ("square", {})]


@dataclasses.dataclass
class _Stage:
  """One attack of the cascade: ``run(f, x, y, *, epsilon, p, clip, seed) -> x_adv``."""
  name: str
  run: object
  budget: dict
  user_targets: bool = False  # num_targets given by the user (else capped to d - 1)
  min_classes: int = 2


def _registry_stage(name, options, p, version, preset=False):
  module, fn, fixed, budget, others, supported_p, min_classes = _REGISTRY[name]
  options = dict(options or {})
  unknown = sorted(set(options) - set(budget) - set(others))
  if unknown:
    raise ValueError(
        f"`attacks` entry {name!r} takes the options {sorted(set(budget) | set(others))}. "
        f"Received: unknown options {unknown}")
  if supported_p is not None and p not in supported_p:
    raise ValueError(
        f"Attack {name!r} supports p in {[str(q) for q in supported_p]}. Received: p={p}"
        + (f" (version={version!r})" if version != "custom" else ""))
  user_targets = "num_targets" in options and not preset
  budget = {**budget, **options}
  return _Stage(name=name, run=(module, fn, fixed), budget=budget, user_targets=user_targets,
                min_classes=min_classes)


def _parse_attacks(version, attacks, p):
  """Validates ``version`` / ``attacks`` into stages (before any computation)."""
  if not isinstance(version, str) or version not in VERSIONS:
    raise ValueError(f"`version` must be one of {VERSIONS}. Received: version={version!r}")
  if version != "custom":
    if attacks is not None:
      raise ValueError(
          f"`attacks` is only used with version='custom' (version={version!r} has its own "
          f"cascade). Received: attacks={attacks!r}")
    if p not in (1.0, 2.0, _INF):
      raise ValueError(f"version={version!r} supports p in [1, 2, inf]; use version='custom' "
                       f"with attacks=['pgd'] for other norms. Received: p={p}")
    return [_registry_stage(name, opts, p, version, preset=True)
            for name, opts in _preset(version, p)]
  if not isinstance(attacks, (list, tuple)) or not attacks:
    raise ValueError(
        "`attacks` must be a non-empty list of attack names "
        f"{list(ATTACKS)}, (name, options dict) or (name, callable) pairs when "
        f"version='custom'. Received: attacks={attacks!r}")
  stages, names = [], set()
  for entry in attacks:
    if isinstance(entry, str):
      name, spec = entry, None
    elif isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str):
      name, spec = entry
    else:
      raise ValueError(
          f"Each entry of `attacks` must be an attack name, a (name, options dict) or a "
          f"(name, callable) pair. Received: {entry!r}")
    if name in names:
      raise ValueError(f"Attack names in `attacks` must be unique. Received: {name!r} twice")
    names.add(name)
    if callable(spec):
      stages.append(_Stage(name=name, run=spec, budget={}))
    elif name not in _REGISTRY:
      raise ValueError(f"Unknown attack name in `attacks`: {name!r}. Known names: "
                       f"{list(ATTACKS)} (or pass (name, callable)). Received: attacks={attacks!r}")
    elif spec is None or isinstance(spec, dict):
      stages.append(_registry_stage(name, spec, p, version))
    else:
      raise ValueError(f"The second element of an `attacks` pair must be an options dict or "
                       f"a callable. Received: ({name!r}, {spec!r})")
  return stages


def _resolve(stage, num_classes, version):
  """Checks a stage against the number of classes; caps preset targets at d - 1."""
  if num_classes is None:
    return
  if num_classes < stage.min_classes:
    raise ValueError(
        f"Attack {stage.name!r} needs at least {stage.min_classes} classes; the model has "
        f"{num_classes}" + ("" if version == "custom" else
                            f" (version={version!r}; use version='custom' with other attacks)")
        + f". Received: logits with {num_classes} classes")
  k = stage.budget.get("num_targets")
  if k is None:
    return
  if stage.user_targets:
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1 or k >= num_classes:
      raise ValueError(
          f"`num_targets` of attack {stage.name!r} must be an integer in [1, number of classes "
          f"- 1 = {num_classes - 1}]. Received: num_targets={k!r}")
  else:
    stage.budget["num_targets"] = min(k, num_classes - 1)


@tf.autograph.experimental.do_not_convert  # Also called while a kernel traces.
def _attack_fn(stage, model, logits_fn, training):
  """``(x, y, eps, p, clip, seed) -> x_adv`` for a stage."""
  if callable(stage.run):
    user = stage.run
    return lambda x, y, **kw: user(logits_fn, x, y, **kw)
  module, fn, fixed = stage.run
  if module is not None:
    try:
      mod = importlib.import_module(f"keras_opnorm.attacks.{module}")
    except ImportError as e:
      raise ValueError(
          f"Attack {stage.name!r} needs the module keras_opnorm.attacks.{module}, which is "
          f"not available ({e}).") from e
    fn = getattr(mod, fn)
  budget = dict(stage.budget)

  def run(x, y, *, epsilon, p, clip, seed):
    return fn(model, x, y, epsilon=epsilon, p=p, clip=clip, seed=seed, training=training,
              **fixed, **budget)

  return run


# ----------------------------------------------------------------------------
# The result.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AutoAttackResult(_Result):
  """Robust accuracy under an AutoAttack-style cascade, with per-example records.

  Attributes:
    epsilon: the radius.
    p: the norm.
    version: ``'standard'``, ``'fast'`` or ``'custom'``.
    attacks: the attack names, in cascade order.
    num_examples: number of evaluated examples.
    clean_accuracy: accuracy on the unperturbed examples.
    robust_accuracy: share of examples correct on ``x`` and not broken by any
      attack.
    robust_accuracy_by_attack: the robust accuracy after each attack, in
      cascade order (non-increasing; the last is ``robust_accuracy``).
    broken_by: per example, the attack that broke it (``''``: robust,
      ``'clean'``: misclassified clean).
    margins: per example, ``z_y - max_{j != y} z_j`` at the kept point
      (`keras_opnorm.attacks.losses.margin`): the adversarial point for broken
      examples (``<= 0``), ``x`` for clean-misclassified ones, and for robust
      examples the valid attack point of lowest margin (``x`` if none is lower).
    budgets: per attack, its hyper-parameters as run (``{}`` for callables).
    run_time_s: wall-clock seconds of the whole evaluation.
    seed: the seed of the run.
    x_adv: per example the kept point (see ``margins``) as a numpy array
      shaped like ``x`` (for several inputs: arrays in the structure of
      ``x``, the fixed inputs unchanged). Left out of ``to_dict()`` (and so of JSON files)
      unless ``to_dict(include_x_adv=True)``.
  """
  epsilon: float
  p: float
  version: str
  attacks: list
  num_examples: int
  clean_accuracy: float
  robust_accuracy: float
  robust_accuracy_by_attack: list
  broken_by: list
  margins: list
  budgets: list = None
  run_time_s: float = None
  seed: int = None
  x_adv: np.ndarray = None

  _PER_EXAMPLE = ("broken_by", "margins", "x_adv")

  def to_dict(self, per_example=True, include_x_adv=False):
    """Returns the result as a dict of Python scalars and lists.

    Args:
      per_example: include ``broken_by`` and ``margins``. Defaults to `True`.
      include_x_adv: include ``x_adv`` too (as nested lists; large).
        Defaults to `False`.

    Returns:
      A dict that ``json.dumps`` writes as standard JSON.
    """
    out = super().to_dict(per_example=per_example)
    if not (include_x_adv and per_example):
      out.pop("x_adv", None)
    return out

  @classmethod
  def from_dict(cls, config):
    """Rebuilds a result from `to_dict` output (``x_adv`` back as a numpy array)."""
    result = super().from_dict(config)
    if isinstance(result.x_adv, dict):  # A structured x: one array per input.
      result = dataclasses.replace(result, x_adv={k: np.asarray(v) for k, v in
                                                  result.x_adv.items()})
    elif result.x_adv is not None:
      result = dataclasses.replace(result, x_adv=np.asarray(result.x_adv, np.float32))
    return result

  def accuracy_after(self, attack):
    """The robust accuracy after the stage ``attack`` of the cascade.

    Args:
      attack: one of ``attacks``.

    Returns:
      The robust accuracy after that attack.

    Raises:
      ValueError: if ``attack`` is not in the cascade.
    """
    if attack not in self.attacks:
      raise ValueError(f"`attack` must be one of {self.attacks}. Received: attack={attack!r}")
    return self.robust_accuracy_by_attack[list(self.attacks).index(attack)]


# ----------------------------------------------------------------------------
# Running a stage: fixed-shape chunks through one compiled function.
# ----------------------------------------------------------------------------


def _pad(a, size):
  if a.shape[0] >= size:
    return a
  return np.concatenate([a, np.repeat(a[-1:], size - a.shape[0], axis=0)], axis=0)


class _StageRunner:
  """Runs ``kernel(x, y, seed)`` over chunks of ``batch_size``, one replica per chunk.

  Chunk ``c`` of a stage always holds the same points and gets the seed
  ``fold(stage_seed, c)``, whether the chunks run one after the other or
  ``R`` at a time on the ``R`` replicas of a strategy, so that both give the
  same result. The last chunk is padded with copies of its last row.
  """

  def __init__(self, strategy, batch_size, verbose):
    self.strategy = strategy
    self.replicas = strategy.num_replicas_in_sync
    self.batch_size = batch_size
    self.verbose = verbose

  def compile(self, kernel):
    if self.replicas == 1:
      compiled = tf.function(kernel)
    else:
      strategy = self.strategy
      compiled = tf.function(lambda *args: strategy.run(kernel, args=args))
    # Each stage of each call is a new function traced once (all its batches
    # share the shape); TensorFlow would count those traces of the same code
    # as "frequent retracing" and warn after a few stages. pylint: disable=protected-access
    if hasattr(compiled, "_omit_frequent_tracing_warning"):
      compiled._omit_frequent_tracing_warning = True
    return compiled

  def run(self, compiled, x, y, seed, title, fixed=None):
    """Returns the kernel's outputs for the ``len(x)`` points, as numpy.

    ``fixed`` (a structured ``x``: the fixed inputs, ``{key: [len(x), ...]}``)
    is sliced and padded like ``x`` and passed as the kernel's fourth argument.
    """
    n, bs = x.shape[0], self.batch_size
    num_chunks = -(-n // bs)
    bar = None
    if self.verbose:
      print(f"{title}: {n} point{'s' if n != 1 else ''}, {num_chunks} batch"
            f"{'es' if num_chunks != 1 else ''}")
      bar = keras.utils.Progbar(num_chunks, verbose=self.verbose, unit_name="batch")
    chunks = []
    for c in range(num_chunks):
      sl = slice(c * bs, min((c + 1) * bs, n))
      args = (tf.constant(_pad(x[sl], bs)), tf.constant(_pad(y[sl], bs)),
              _common.fold_seed(seed, c))
      if fixed is not None:
        args += ({k: tf.constant(_pad(v[sl], bs)) for k, v in fixed.items()},)
      chunks.append(args + (sl.stop - sl.start,))
    outs = []
    for g in range(0, num_chunks, self.replicas):
      group = chunks[g:g + self.replicas]
      if self.replicas == 1:
        results = [compiled(*group[0][:-1])]
      else:
        group = group + [group[-1]] * (self.replicas - len(group))  # idle replicas: a copy
        values = [self.strategy.experimental_distribute_values_from_function(
            lambda ctx, i=i: group[ctx.replica_id_in_sync_group][i])
                  for i in range(len(group[0]) - 1)]
        results = list(zip(*[self.strategy.experimental_local_results(t)
                             for t in compiled(*values)]))
      for chunk, res in zip(group[:num_chunks - g], results):
        count = chunk[-1]
        outs.append([t.numpy()[:count] for t in res])
      if bar is not None:
        bar.update(min(g + self.replicas, num_chunks))
    return [np.concatenate(parts) for parts in zip(*outs)]


def _lp(a, p):
  a = np.abs(a.reshape(a.shape[0], -1))
  if math.isinf(p):
    return a.max(axis=1)
  if p == 1.0:
    return a.sum(axis=1)
  m = a.max(axis=1, keepdims=True)
  m = np.where(m > 0, m, 1.0)
  return m[:, 0] * np.power(np.power(a / m, p).sum(axis=1), 1.0 / p)


def _verified(x, x_adv, epsilon, p, clip):
  """Per point: finite, ``||x_adv - x||_p <= eps (1 + 1e-5) + rounding``, inside clip.

  The norm is taken in float64 of the float32 (or float64) points; the
  rounding allowance is one unit in the last place of the input dtype per
  coordinate (the error of storing ``x + delta``), negligible next to eps
  for inputs of order 1.
  """
  diff = x_adv.astype(np.float64) - x.astype(np.float64)
  ulp = np.spacing(np.maximum(np.abs(x), np.abs(x_adv)).astype(x.dtype)).astype(np.float64)
  ok = np.isfinite(x_adv.reshape(x.shape[0], -1)).all(axis=1)
  ok &= _lp(diff, p) <= epsilon * (1.0 + _RTOL) + _lp(ulp, p)
  if clip is not None:
    lo, hi = clip
    flat = x_adv.reshape(x.shape[0], -1)
    ok &= (flat >= np.broadcast_to(lo, x.shape[1:]).reshape(1, -1)).all(axis=1)
    ok &= (flat <= np.broadcast_to(hi, x.shape[1:]).reshape(1, -1)).all(axis=1)
  return ok


def _clip_arrays(clip, example_shape):
  clip = _common._clip_range(clip)  # pylint: disable=protected-access
  if clip is None:
    return None
  out = []
  for bound in clip:
    b = np.asarray(bound.numpy() if tf.is_tensor(bound) else bound, np.float64)
    try:
      np.broadcast_to(b, example_shape)
    except ValueError as e:
      raise ValueError(
          f"`clip` bounds must be numbers or arrays broadcastable to one example of shape "
          f"{example_shape}. Received: a bound with shape={b.shape}") from e
    out.append(b)
  return tuple(out)


def _materialize(x, y, batch_size):
  """The whole data set as numpy arrays ``(x [n, ...], y [n] int32)``."""
  xs, ys = [], []
  for xb, yb, count in _batches(x, y, batch_size, need_y=True):
    xs.append(xb.numpy()[:count])
    ys.append(yb.numpy()[:count])
  return np.concatenate(xs), np.concatenate(ys).astype(np.int32)


# ----------------------------------------------------------------------------
# The evaluation.
# ----------------------------------------------------------------------------


@logits_view.accepts_views(batches_itself=True)
def auto_attack(model, x, y=None, *, epsilon, p=_INF, version="standard", attacks=None,
                clip=None, batch_size=256, seed=0, verbose=1, training=False, strategy=None):
  """Robust accuracy at ``epsilon`` under an AutoAttack-style cascade of attacks.

  Stage by stage over the whole set (Croce & Hein, ICML 2020,
  https://arxiv.org/abs/2003.01690; the cascades are listed in the module
  docstring): the points still robust are gathered and attacked in
  fixed-shape batches of ``batch_size`` (the last one padded) through one
  compiled function per stage; a point is broken only if the attack's point
  is verified: ``argmax f(x_adv) != y``, ``||x_adv - x||_p <= eps (1 + 1e-5)``
  (plus one float rounding per coordinate) and inside ``clip``. Points
  misclassified clean are never attacked.

  Reproducibility: attack ``k = 1, 2, ...`` of the cascade gets the
  stateless seed ``fold(fold(seed, k), c)`` on its batch ``c``
  (`keras_opnorm.attacks._common.fold_seed`);
  batches hold the points in data order, so a seed gives the same result
  for arrays and for a dataset of the same examples, for any dataset
  batching, and with or without ``strategy``.

  Args:
    model: a Keras model or a callable ``x -> logits [batch, d]``.
    x: inputs ``[n, ...]``, or a finite batched ``tf.data.Dataset`` of
      ``(x, y)`` batches (then ``y`` must be None). The data are gathered
      into memory (the per-example results hold a copy of ``x`` anyway).
      For a model with several inputs, a dict or list of arrays (or a
      dataset of ``(dict_x, y)``): the attacks run on the packed perturbed
      inputs ``z`` (one joint ball; ``clip`` applies to every perturbed
      input; a callable of ``attacks`` gets ``z`` and ``f`` bound to the
      batch's fixed inputs), see `keras_opnorm.logits_view`.
    y: integer labels ``[n]`` or one-hot labels ``[n, d]``. Defaults to `None`.
    epsilon: the radius, a positive finite number.
    p: the norm, ``inf``, ``2`` or ``1`` for the preset versions (any p in
      ``[1, inf]`` that the custom attacks support). Defaults to `inf`.
    version: ``'standard'``, ``'fast'`` or ``'custom'``. Defaults to
      `'standard'`.
    attacks: with ``version='custom'`` only: a list whose entries are names
      of the registry (``'apgd-ce'``, ``'apgd-dlr'``, ``'apgd-t'``,
      ``'fab-t'``, ``'fab'``, ``'square'``, ``'pgd'``, ``'fmn'``), ``(name,
      options)`` pairs overriding a registry attack's budget (e.g.
      ``('apgd-t', {'num_targets': 3, 'num_steps': 20})``), or ``(name,
      callable)`` pairs, with ``callable(f, x, y, *, epsilon, p, clip, seed)
      -> x_adv`` where ``f`` is the model as a logits function (``training``
      applied), ``x`` / ``y`` a fixed-shape batch, ``clip`` None or
      ``(lo, hi)`` and ``seed`` an int32 ``[2]`` tensor for
      ``tf.random.stateless_*``; it runs inside ``tf.function``. Registry
      defaults are the standard budgets (APGD-CE / APGD-DLR: 100 steps, 1
      restart; APGD-T and FAB-T: 9 targets, 100 steps; FAB: 100 steps, 1
      restart (the reference's 'plus' version uses 5); Square: 5000 queries;
      PGD: 20 steps from a seeded random start; FMN: 100 steps).
      Defaults to `None`.
    clip: None or ``(lo, hi)``, the valid input range: numbers or arrays
      broadcastable to one example. Defaults to `None`.
    batch_size: points per attack call (per replica under a strategy with
      several replicas). Defaults to `256`.
    seed: a non-negative integer (or None for a fresh one). Defaults to `0`.
    verbose: 0 silent, 1 a progress bar per stage, 2 one line per stage.
      Defaults to `1`.
    training: the ``training`` flag of Keras models. Defaults to `False`.
    strategy: a ``tf.distribute`` strategy (e.g. ``MirroredStrategy``) whose
      replicas each attack one batch at a time, or None for the current
      (default) strategy. Defaults to `None`.

  Returns:
    An `AutoAttackResult`.

  Raises:
    ValueError: a NaN or inf in ``x`` (naming how many examples and which;
      in a graph an InvalidArgumentError, under XLA NaN results for them).
    ValueError: ``x`` outside ``clip`` (beyond 1e-6 * (hi - lo)); labels
      that are not integers or not in ``[0, num_classes)``. Warns with
      `keras_opnorm.VacuousThreatModelWarning` when ``epsilon`` covers the
      ``clip`` box (``epsilon >= ||(hi - lo) / 2||_p``).
    ValueError: for an unknown ``version`` or attack name, ``attacks`` given
      with a version other than ``'custom'``, ``epsilon <= 0``, a dataset
      without labels, ``num_targets`` >= the number of classes, an attack
      that needs more classes than the model has or does not support ``p``.
    TypeError: for non-float inputs or a non-callable model.

  Example:

  >>> w = tf.constant([[1.0, -1.0]])  # logits (x, -x): class 0 iff x > 0
  >>> f = lambda x: tf.matmul(x, w)
  >>> x = tf.constant([[0.2], [0.6]]); y = tf.constant([0, 0])
  >>> r = auto_attack(f, x, y, epsilon=0.4, version="custom", attacks=["apgd-ce"],
  ...                 verbose=0)
  >>> r.robust_accuracy, r.broken_by  # distances to the boundary: 0.2 and 0.6
  (0.5, ['apgd-ce', ''])
  """
  start = time.time()
  epsilon = _single_epsilon(epsilon)
  p = _checks.exponent(p, "p")
  batch_size = _check_batch_size(batch_size)
  if not isinstance(verbose, (numbers.Integral, np.integer)) or isinstance(verbose, bool) or (
      verbose not in (0, 1, 2)):
    raise ValueError(f"`verbose` must be 0, 1 or 2. Received: verbose={verbose!r}")
  stages = _parse_attacks(version, attacks, p)
  base_seed = _common.seed_tensor(seed)
  if strategy is None:
    strategy = tf.distribute.get_strategy()
  logits_fn = jacobian.as_logits_fn(model, training=training)
  structured, fixed = None, None
  if _is_structured_data(x):  # Attacked as z (packed), the fixed inputs bound per batch.
    structured = _Structured(model, x, y, training=training)
    x, y, fixed = structured.materialize(batch_size)
    first_fn = structured.logits_fn(_slice_fixed(fixed, slice(0, 1)))
  else:
    x, y = _materialize(x, y, batch_size)
    first_fn = logits_fn

  def bound(fb):
    """``(model, logits_fn)`` for a batch (the fixed inputs ``fb`` of a structured x)."""
    if fb is None:
      return model, logits_fn
    return structured.bind(fb), structured.logits_fn(fb)

  clip = _clip_arrays(clip, x.shape[1:])
  clip_tf = None if clip is None else tuple(tf.constant(b, x.dtype) for b in clip)
  _common._check_in_box(tf.constant(x), clip_tf)  # pylint: disable=protected-access
  _common.warn_if_vacuous(epsilon, p, clip, x.shape[1:], "auto_attack")
  width = first_fn(tf.constant(x[:1])).shape[-1]
  if width is not None:
    _checks.class_labels(tf.constant(y), width)  # Before the kernels (XLA drops asserts).
  runner = _StageRunner(strategy, batch_size, verbose)

  def clean_kernel(xb, yb, sb, fb=None):
    del sb
    logits = bound(fb)[1](xb)
    return tf.argmax(logits, axis=-1, output_type=tf.int32), losses.margin(logits, yb)

  pred, clean_margin = runner.run(runner.compile(clean_kernel), x, y, base_seed, "clean",
                                  fixed=fixed)
  num_classes = first_fn(tf.constant(x[:1])).shape[-1]
  if version != "custom" and num_classes is not None:
    # Preset cascades leave out what the model's classes cannot support
    # (APGD-T's targeted DLR needs 4 logits); `result.attacks` lists what ran.
    stages = [stage for stage in stages if num_classes >= stage.min_classes]
  for stage in stages:
    _resolve(stage, num_classes, version)

  correct = pred == y
  robust = correct.copy()
  broken_by = np.where(correct, "", "clean").astype(object)
  margins = clean_margin.astype(np.float64)
  x_adv = x.copy()
  by_attack = []
  for k, stage in enumerate(stages):
    idx = np.flatnonzero(robust)
    if idx.size:
      attack = _attack_fn(stage, model, logits_fn, training)

      def kernel(xb, yb, sb, fb=None, attack=attack, name=stage.name, stage_index=k):
        fn = logits_fn
        if fb is not None:
          batch_model, fn = bound(fb)
          attack = _attack_fn(stages[stage_index], batch_model, fn, training)
        with warnings.catch_warnings():  # auto_attack warned once, above.
          warnings.simplefilter("ignore", _checks.VacuousThreatModelWarning)
          xa = attack(xb, yb, epsilon=epsilon, p=p, clip=clip_tf, seed=sb)
        xa = tf.convert_to_tensor(xa)
        if xa.shape != xb.shape:
          raise ValueError(f"Attack {name!r} must return x_adv shaped like x {xb.shape}. "
                           f"Received: x_adv with shape={xa.shape}")
        xa = tf.cast(xa, xb.dtype)
        logits = fn(xa)
        return xa, tf.argmax(logits, axis=-1, output_type=tf.int32), losses.margin(logits, yb)

      xa, pa, ma = runner.run(runner.compile(kernel), x[idx], y[idx],
                              _common.fold_seed(base_seed, k + 1), stage.name,
                              fixed=None if fixed is None else _slice_fixed(fixed, idx))
      valid = _verified(x[idx], xa, epsilon, p, clip)
      newly = valid & (pa != y[idx])
      keep = newly | (valid & (ma < margins[idx]))
      x_adv[idx[keep]] = xa[keep]
      margins[idx[keep]] = ma[keep]
      broken_by[idx[newly]] = stage.name
      robust[idx[newly]] = False
    by_attack.append(float(robust.mean()))
    if verbose:
      print(f"robust accuracy after {stage.name}: {by_attack[-1]:.2%} "
            f"({time.time() - start:.1f} s)")
  return AutoAttackResult(
      epsilon=epsilon, p=p, version=version, attacks=[s.name for s in stages],
      num_examples=int(x.shape[0]), clean_accuracy=float(correct.mean()),
      robust_accuracy=float(robust.mean()), robust_accuracy_by_attack=by_attack,
      broken_by=[str(b) for b in broken_by], margins=[float(m) for m in margins],
      budgets=[dict(s.budget) for s in stages], run_time_s=float(time.time() - start),
      seed=seed, x_adv=x_adv if structured is None else structured.unpack(x_adv, fixed))
