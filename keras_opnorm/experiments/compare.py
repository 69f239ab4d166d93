r"""Trains the paper's four methods with matched settings and compares them.

Roth, Kilcher & Hofmann, "Adversarial Training is a Form of Data-dependent
Operator Norm Regularization", NeurIPS 2020 (https://arxiv.org/abs/1906.01527).

Methods (``--methods``), all trained from the same initial weights, on the
same data order, with the same optimiser and number of epochs:

* ``standard``: cross-entropy only.
* ``adversarial``: PGD adversarial training,
  ``CE(y, f(x)) + w * CE(y, f(x_adv))`` with ``x_adv`` from ``--attack_steps``
  steps of lp PGD (``--p``) at radius ``--epsilon``
  (`keras_opnorm.callbacks.AdversarialTraining`).
* ``opnorm``: data-dependent (p,q) operator-norm regularisation (d.d. spectral
  norm regularisation for p = q = 2), ``CE + lambda/2 ||f(x + eps v) - f(x)||_q^2``
  with ``v`` from ``--opnorm_iters`` (p,q) power iterations
  (`keras_opnorm.callbacks.OperatorNormRegularization`).
* ``spectral``: global spectral-norm regularisation (Yoshida & Miyato 2017),
  ``CE + lambda/2 sum_l sigma_max(W_l)^2``
  (`keras_opnorm.callbacks.SpectralNormRegularization`).

Each trained model is evaluated on held-out data with `keras_opnorm.evaluation`:
clean accuracy, robust accuracy under the AutoAttack-grade ensemble
(`keras_opnorm.evaluation.auto_attack`, ``--evaluation``; the headline number
and the one the claims use), per-example robust radii from FMN (the
accuracy-vs-eps plot), lp PGD accuracy over a sweep of radii, the mean
``||J||_{p,q}`` (and of the centered logits ``P J``), the alignment of PGD
perturbations (cross-entropy and lq-logit losses) with the right singular
vectors of ``J`` and ``P J`` next to a random direction, and the Jacobian's
top singular values. The command prints a table and writes ``results.json``
(atomically), ``table.md`` and the PNG plots to ``--output_dir``.

The defaults reproduce the l2 comparison on scikit-learn's 8x8 digits
(no network needed; 361 s on a shared 2-core CPU machine on 2026-12-01, see
the README for the machine and the ratios):

  python -m keras_opnorm.experiments.compare

and the linf comparison (q = 2) with:

  python -m keras_opnorm.experiments.compare --p=inf

That is ``--protocol=single``: one hand-picked constant per method. The
paper's protocol, every method over a grid of its constant and the claims at
matched clean accuracy (`keras_opnorm.experiments.matched_clean`), is

  python -m keras_opnorm.experiments.compare --protocol=matched_clean

Without ``--epsilon`` the radius is the dataset's default for ``--p``
(`default_epsilon`, the table `DEFAULT_EPSILONS`: 1.0 for l2 and 0.1 for
linf on the digits); an explicit ``--epsilon`` that makes the threat model
vacuous (`vacuous_radius`) is run, after a warning.

The command prints one line per training run (seed, method, epochs, time,
and the elapsed time and ETA of the whole job) and one per evaluation stage,
without progress bars or terminal escape codes; ``--keras_verbose=1`` (or 2)
adds Keras' own progress bars (or epoch lines) to the training runs.
"""

import dataclasses
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import keras_opnorm
from keras_opnorm import datasets
from keras_opnorm import evaluation
from keras_opnorm import models
from keras_opnorm import norms
from keras_opnorm.experiments import matched_clean

# Names of the methods, in the order they are trained and shown.
METHODS = ("standard", "adversarial", "opnorm", "spectral")
_LABELS = {
    "standard": "standard",
    "adversarial": "PGD AT",
    "opnorm": "d.d. opnorm",
    "spectral": "global SNR",
}

# --protocol: one constant per method, or the paper's matched-clean-accuracy grid.
PROTOCOLS = ("single", "matched_clean")

# Headline robust-accuracy evaluations (--evaluation).
EVALUATIONS = ("standard", "fast", "pgd")
# Norms the ensemble and the minimum-norm attack support; other p fall back to PGD.
_ENSEMBLE_NORMS = (1.0, 2.0, float("inf"))

_DATASETS = datasets.DATASETS
_MODELS = models.MODELS

_INF = float("inf")

# Default radius (--epsilon) per dataset and norm p, in the dataset's pixel units
# (`keras_opnorm.datasets`: digits, mnist, fashion_mnist in [0, 1], cifar10 in
# [-1, 1], where a [0, 1] radius doubles). Sources and reasoning: `default_epsilon`.
DEFAULT_EPSILONS = {
    "digits": {1.0: 5.0, 2.0: 1.0, _INF: 0.1},
    "mnist": {1.0: 10.0, 2.0: 2.0, _INF: 0.3},
    "mnist5k": {1.0: 10.0, 2.0: 2.0, _INF: 0.3},
    "fashion_mnist": {_INF: 0.1},
    "cifar10": {1.0: 24.0, 2.0: 1.75, _INF: 16 / 255},
}


def default_epsilon(dataset, p):
  """The default training and evaluation radius of ``dataset`` under the lp norm.

  The values of `DEFAULT_EPSILONS`, in the dataset's pixel units:

  ==============  ==========  =======  ==========  ===============================
  dataset         l1          l2       l-inf       source
  ==============  ==========  =======  ==========  ===============================
  digits [0, 1]   5           1        0.1         l2, l-inf: this project's
                                                   comparison (README); l1: see
                                                   below
  mnist [0, 1]    10          2        0.3         l-inf: Madry et al. 2018; l2,
                                                   l1: Tramer & Boneh 2019, Maini
                                                   et al. 2020
  mnist5k [0, 1]  10          2        0.3         as mnist (5,000 of its images)
  fashion_mnist   -           -        0.1         Wong & Kolter 2018
  cifar10 [-1,1]  24 (= 12)   1.75     16/255      l-inf 8/255 (Madry et al.
                                       (= 8/255)   2018, RobustBench) and l1 12
                                                   (Maini et al. 2020, Croce &
                                                   Hein 2021) in [0, 1] units,
                                                   doubled; l2 1.75: Roth et al.
                                                   2020, the paper reproduced
  ==============  ==========  =======  ==========  ===============================

  Digits l1: the literature has no 8x8-digits radius. The l1/l2 ratio of the
  MNIST radii (10 / 2 = 5, Tramer & Boneh 2019; Maini et al. 2020: handwritten
  digits in [0, 1] too) applied to the digits' l2 radius 1 gives 5: five
  pixels changed fully out of 64, ``5 / 32 = 16%`` of the l1 radius that is
  vacuous (`vacuous_radius`), next to 25% for l2 (1 / 4) and 20% for l-inf
  (0.1 / 0.5). The l2 ball of radius 1 reaches a single pixel changed fully
  at most; the l1 ball of radius 5 lies inside the l2 ball of radius 5.

  References:
    Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018 (https://arxiv.org/abs/1706.06083).
    Wong & Kolter, "Provable defenses against adversarial examples via the
    convex outer adversarial polytope", ICML 2018
    (https://arxiv.org/abs/1711.00851).
    Tramer & Boneh, "Adversarial Training and Robustness for Multiple
    Perturbations", NeurIPS 2019 (https://arxiv.org/abs/1904.13000).
    Maini, Wong & Kolter, "Adversarial Robustness Against the Union of
    Multiple Perturbation Models", ICML 2020 (https://arxiv.org/abs/1909.04068).
    Croce & Hein, "Mind the box: l1-APGD for sparse adversarial attacks on
    image classifiers", ICML 2021 (https://arxiv.org/abs/2103.01208).
    Roth, Kilcher & Hofmann, NeurIPS 2020 (https://arxiv.org/abs/1906.01527).

  Args:
    dataset: one of `keras_opnorm.datasets.DATASETS`.
    p: the norm, ``1``, ``2`` or ``float("inf")``.

  Returns:
    The radius, or ``None`` where the table has none (other p, l1 and l2 on
    fashion_mnist): pass ``--epsilon`` then.
  """
  return DEFAULT_EPSILONS.get(dataset, {}).get(float(p))


def vacuous_radius(p, input_range, dim):
  """The smallest lp radius at which no classifier is robust on two classes.

  The centre ``c = (lo + hi) / 2`` of the box ``[lo, hi]^dim`` is within
  ``r = (hi - lo) / 2 * dim^(1/p)`` (``(hi - lo) / 2`` for p = inf) of every
  point of the box, and no point is within less of all of them (the box's
  corners ``c +- r``). At ``eps >= r`` every input can be moved to ``c``,
  whose single label makes every other class non-robust: robust accuracy is
  at most the largest class's share, for any model. At ``eps >= 2 r`` the
  ball around any input covers the whole box. The same threshold makes the
  attacks emit `keras_opnorm.VacuousThreatModelWarning`; the command checks
  it once, before any training, and says so on stdout.

  Args:
    p: the norm, in ``[1, inf]``.
    input_range: ``(lo, hi)``.
    dim: the number of input coordinates.

  Returns:
    ``r`` (a float).
  """
  lo, hi = input_range
  half = (hi - lo) / 2
  return half if math.isinf(p) else half * dim ** (1.0 / p)

FLAGS = flags.FLAGS

# What to train.
flags.DEFINE_string("dataset", "digits", f"Dataset: one of {', '.join(_DATASETS)}.")
flags.DEFINE_string("model", "mlp", f"Model: one of {', '.join(_MODELS)}.")
flags.DEFINE_list("methods", list(METHODS),
                  f"Comma-separated methods to train, from {', '.join(METHODS)}.")
flags.DEFINE_float("p", 2.0, "Input norm p in [1, inf] of the attacks and the operator norm "
                   "(`inf` for linf).")
flags.DEFINE_float("q", 2.0, "Output (logit) norm q in [1, inf] of the operator norm and of "
                   "the lq-logit attack.")
flags.DEFINE_float("epsilon", None, "Training and evaluation radius, in the dataset's pixel "
                   "units (digits, mnist, fashion_mnist in [0, 1], cifar10 in [-1, 1]). "
                   "Default: the dataset's default for --p (DEFAULT_EPSILONS; digits: l1 5, "
                   "l2 1, linf 0.1).")
flags.DEFINE_integer("epochs", 30, "Training epochs per method.")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("seed", 0, "Seed of the data split, the shuffling, the initial weights "
                     "(the same for every method) and the attacks.")
flags.DEFINE_integer("num_seeds", 3, "Repetitions with seeds --seed, --seed+1, ...: each trains "
                     "and evaluates every method again (new digits split, initial weights and "
                     "data order); the table reports the mean (and std of the accuracies).")
# Method hyper-parameters.
flags.DEFINE_integer("attack_steps", 10, "PGD steps of adversarial training.")
flags.DEFINE_float("at_weight", 1.0, "Weight of the adversarial cross-entropy added to the "
                   "clean one (1.0: the 50/50 mix of clean and adversarial loss, up to a "
                   "factor 2).")
flags.DEFINE_float("opnorm_weight", 0.1, "lambda of the d.d. operator-norm regulariser.")
flags.DEFINE_integer("opnorm_iters", 10, "(p,q) power iterations of the d.d. regulariser.")
flags.DEFINE_float("spectral_weight", 0.01, "lambda of global spectral-norm regularisation.")
flags.DEFINE_integer("spectral_iters", 1, "Power iterations per step of global SNR.")
# Evaluation.
flags.DEFINE_integer("eval_examples", None, "Held-out examples for the accuracy curves "
                     "(default: the whole test split).")
flags.DEFINE_integer("align_examples", 200, "Held-out examples for the alignment, the "
                     "operator norm and the spectra (the first ones of the evaluation set).")
flags.DEFINE_integer("num_steps", 20, "PGD steps of the evaluation attacks.")
flags.DEFINE_integer("num_restarts", 1, "PGD restarts of the robust-accuracy evaluation.")
flags.DEFINE_enum("evaluation", "standard", ["standard", "fast", "pgd"],
                  "Attack of the headline robust accuracy (and of the claims): the "
                  "AutoAttack-grade ensemble `keras_opnorm.evaluation.auto_attack` with its "
                  "standard or fast cascade, or `pgd` (PGD-<num_steps> alone, the 0.1 "
                  "measure). PGD stays a column either way.")
flags.DEFINE_integer("min_norm_steps", 100, "Steps of the minimum-norm attack (FMN) whose "
                     "per-example robust radii give the accuracy-vs-eps plot; 0 skips it.")
flags.DEFINE_list("sweep", ["0", "0.25", "0.5", "0.75", "1", "1.5", "2"],
                  "Radii of the accuracy-vs-eps and alignment-vs-eps curves, as multiples "
                  "of --epsilon (1 is always included).")
flags.DEFINE_integer("spectrum_k", 10, "Number of singular values / ranks (at most "
                     "min(classes, input dim)).")
# Where.
flags.DEFINE_string("output_dir", None, "Where results.json, table.md and the plots go "
                    "(default: outputs/compare/<dataset>_<model>_p<p>_q<q>_eps<eps>).")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets directory (tfds sets only; "
                    "default ~/tensorflow_datasets).")
flags.DEFINE_boolean("download", False, "Let tensorflow-datasets download a missing set.")
flags.DEFINE_boolean("plots", True, "Draw the PNG plots (needs matplotlib).")
flags.DEFINE_integer("keras_verbose", 0, "Keras' own fit output on top of the command's "
                     "progress lines (one per training run and evaluation stage): 0 none, 1 "
                     "Keras' progress bar (with terminal escape codes), 2 one line per epoch.")
flags.DEFINE_alias("verbose", "keras_verbose")  # its former name still works
flags.DEFINE_boolean("jit_compile", False, "Compile the evaluation kernels with XLA.")
# The protocol (keras_opnorm.experiments.matched_clean).
flags.DEFINE_enum("protocol", "single", list(PROTOCOLS),
                  "single: one constant per method (--at_weight, --opnorm_weight, "
                  "--spectral_weight) with the full evaluation; matched_clean: the paper's "
                  "protocol, every method over a grid of its constant (--grid_adversarial, "
                  "--grid_opnorm, --grid_spectral), clean and headline robust accuracy per "
                  "point, the claims at matched clean accuracy (--match_tolerance).")
flags.DEFINE_list("grid_adversarial",
                  [f"{c:g}" for c in matched_clean.DEFAULT_GRIDS["adversarial"]],
                  "--protocol=matched_clean: the weights w of PGD AT's CE + w CE_adv "
                  "(training radius --epsilon).")
flags.DEFINE_list("grid_opnorm", [f"{c:g}" for c in matched_clean.DEFAULT_GRIDS["opnorm"]],
                  "--protocol=matched_clean: the lambdas of the d.d. operator-norm "
                  "regulariser.")
flags.DEFINE_list("grid_spectral",
                  [f"{c:g}" for c in matched_clean.DEFAULT_GRIDS["spectral"]],
                  "--protocol=matched_clean: the lambdas of global spectral-norm "
                  "regularisation.")
flags.DEFINE_float("match_tolerance", matched_clean.DEFAULT_TOLERANCE,
                   "--protocol=matched_clean: the largest difference of mean clean accuracy "
                   "at which two points count as matched (0.01: one point).")


@dataclasses.dataclass(frozen=True)
class Config:
  """The validated settings of one comparison (see the flags for meanings)."""
  dataset: str = "digits"
  model: str = "mlp"
  methods: tuple = METHODS
  p: float = 2.0
  q: float = 2.0
  epsilon: float = None  # None: default_epsilon(dataset, p)
  epochs: int = 30
  batch_size: int = 64
  learning_rate: float = 1e-3
  seed: int = 0
  num_seeds: int = 3
  attack_steps: int = 10
  at_weight: float = 1.0
  opnorm_weight: float = 0.1
  opnorm_iters: int = 10
  spectral_weight: float = 0.01
  spectral_iters: int = 1
  eval_examples: int = None
  align_examples: int = 200
  num_steps: int = 20
  num_restarts: int = 1
  evaluation: str = "standard"
  min_norm_steps: int = 100
  sweep: tuple = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
  spectrum_k: int = 10
  output_dir: str = None
  data_dir: str = None
  download: bool = False
  plots: bool = True
  verbose: int = 0  # Keras' fit verbosity (--keras_verbose)
  jit_compile: bool = False
  protocol: str = "single"
  grid_adversarial: tuple = matched_clean.DEFAULT_GRIDS["adversarial"]
  grid_opnorm: tuple = matched_clean.DEFAULT_GRIDS["opnorm"]
  grid_spectral: tuple = matched_clean.DEFAULT_GRIDS["spectral"]
  match_tolerance: float = matched_clean.DEFAULT_TOLERANCE

  @property
  def seeds(self):
    """The seeds of the repetitions."""
    return [self.seed + i for i in range(self.num_seeds)]

  @property
  def epsilons(self):
    """The evaluation radii: ``sweep * epsilon``, ascending."""
    return [m * self.epsilon for m in self.sweep]

  def to_dict(self):
    """Returns the settings as plain JSON (``inf`` -> ``"inf"``)."""
    return _jsonable(dataclasses.asdict(self))


def _fail(message):
  raise app.UsageError(message)


def _number(value, name, *, positive=True, integer=False, allow_inf=False):
  """Checks a numeric setting; raises UsageError naming the flag."""
  kind = "positive" if positive else "non-negative"
  kind += " integer" if integer else " number"
  bad = isinstance(value, bool) or not isinstance(value, (int, float))
  if not bad:
    v = float(value)
    bad = (math.isnan(v) or (math.isinf(v) and not allow_inf) or v < 0
           or (positive and v == 0) or (integer and v != int(v)))
  if bad:
    _fail(f"--{name} must be a {kind}. Received: --{name}={value!r}")
  return int(value) if integer else float(value)


def _exponent(value, name):
  try:
    return norms.validate_exponent(value, name)
  except (TypeError, ValueError):
    _fail(f"--{name} must be a number in [1, inf] (`inf` for infinity). "
          f"Received: --{name}={value!r}")


def _default_output_dir(cfg):
  def fmt(v):
    return "inf" if math.isinf(v) else f"{v:g}"
  return os.path.join(
      "outputs", "compare",
      f"{cfg.dataset}_{cfg.model}_p{fmt(cfg.p)}_q{fmt(cfg.q)}_eps{fmt(cfg.epsilon)}")


def _check_writable(directory):
  """Checks that ``directory`` can be created (where missing) and written to.

  The check leaves no trace: the directories it had to create are removed
  again, so a run that fails later (a dataset that is not prepared, bad
  data) does not leave an empty folder behind. `run_comparison` creates the
  directory only when it writes the outputs.
  """
  created = []
  try:
    missing = []
    path = os.path.abspath(directory)
    while not os.path.lexists(path):
      missing.append(path)
      parent = os.path.dirname(path)
      if parent == path:
        break
      path = parent
    for path in reversed(missing):
      try:
        os.mkdir(path)
      except FileExistsError:
        continue  # created by someone else meanwhile: not ours to remove
      created.append(path)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_test_"):
      pass
  except OSError as e:
    _fail(f"--output_dir must be a writable directory. Received: --output_dir={directory!r} "
          f"({e.strerror or e})")
  finally:
    for path in reversed(created):
      try:
        os.rmdir(path)
      except OSError:
        pass  # no longer empty: someone else is using it


def validate(cfg):
  """Checks every setting; returns a new `Config` with normalised values.

  Args:
    cfg: a `Config` as read from the flags.

  Returns:
    A new `Config`: repeated methods dropped, numbers converted, ``epsilon``
    set (`default_epsilon` where it is ``None``), ``sweep`` sorted with 1
    added, and ``output_dir`` set (checked to be writable).

  Raises:
    absl.app.UsageError: naming the flag and the value received, before any
      data is loaded or model trained.
  """
  if cfg.dataset not in _DATASETS:
    _fail(f"--dataset must be one of {', '.join(_DATASETS)}. Received: --dataset={cfg.dataset!r}")
  if cfg.model not in _MODELS:
    _fail(f"--model must be one of {', '.join(_MODELS)}. Received: --model={cfg.model!r}")
  methods = [m.strip() for m in cfg.methods if m.strip()]
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    _fail(f"--methods must be a comma-separated list from {', '.join(METHODS)}. "
          f"Received: --methods={','.join(cfg.methods)!r}")
  methods = tuple(dict.fromkeys(methods))  # drop repeats, keep order
  p = _exponent(cfg.p, "p")
  q = _exponent(cfg.q, "q")
  if cfg.epsilon is None:
    epsilon = default_epsilon(cfg.dataset, p)
    if epsilon is None:
      known = ", ".join(f"l{_p_text(k)}" for k in DEFAULT_EPSILONS[cfg.dataset])
      _fail(f"--epsilon has no default for --dataset={cfg.dataset} with --p={_p_text(p)} "
            f"(the defaults of {cfg.dataset}: {known}); pass one in the dataset's pixel "
            "units. Received: --epsilon=None")
  else:
    epsilon = _number(cfg.epsilon, "epsilon")
  ints = {name: _number(getattr(cfg, name), name, integer=True)
          for name in ("epochs", "batch_size", "num_seeds", "attack_steps", "opnorm_iters",
                       "spectral_iters", "align_examples", "num_steps", "num_restarts",
                       "spectrum_k")}
  if cfg.evaluation not in EVALUATIONS:
    _fail(f"--evaluation must be one of {', '.join(EVALUATIONS)}. Received: "
          f"--evaluation={cfg.evaluation!r}")
  ints["min_norm_steps"] = _number(cfg.min_norm_steps, "min_norm_steps", positive=False,
                                   integer=True)
  if cfg.eval_examples is not None:
    ints["eval_examples"] = _number(cfg.eval_examples, "eval_examples", integer=True)
  floats = {name: _number(getattr(cfg, name), name, positive=False)
            for name in ("at_weight", "opnorm_weight", "spectral_weight")}
  floats["learning_rate"] = _number(cfg.learning_rate, "learning_rate")
  try:
    sweep = [float(m) for m in cfg.sweep]
  except (TypeError, ValueError):
    sweep = None
  if sweep is None or any(math.isnan(m) or math.isinf(m) or m < 0 for m in sweep):
    _fail("--sweep must be a comma-separated list of non-negative numbers (multiples of "
          f"--epsilon). Received: --sweep={','.join(map(str, cfg.sweep))!r}")
  sweep = tuple(sorted(set(sweep) | {1.0}))
  if cfg.verbose not in (0, 1, 2):
    _fail(f"--keras_verbose must be 0, 1 or 2. Received: --keras_verbose={cfg.verbose!r}")
  if cfg.protocol not in PROTOCOLS:
    _fail(f"--protocol must be one of {', '.join(PROTOCOLS)}. Received: "
          f"--protocol={cfg.protocol!r}")
  for flag, _, _ in matched_clean.GRID_FLAGS.values():
    try:
      floats[flag] = matched_clean.parse_grid(getattr(cfg, flag), flag)
    except ValueError as e:
      _fail(str(e))
  floats["match_tolerance"] = _number(cfg.match_tolerance, "match_tolerance", positive=False)
  cfg = dataclasses.replace(cfg, methods=methods, p=p, q=q, epsilon=epsilon, sweep=sweep,
                            **ints, **floats)
  output_dir = cfg.output_dir or _default_output_dir(cfg)
  _check_writable(output_dir)
  return dataclasses.replace(cfg, output_dir=output_dir)


def config_from_flags(flag_values=None):
  """Reads the `Config` from parsed absl flags (not yet validated).

  Args:
    flag_values: parsed ``absl.flags.FlagValues``; ``None``: the global
      ``FLAGS``. Defaults to `None`.

  Returns:
    A `Config` (pass it to `validate`).
  """
  fv = flag_values or FLAGS
  names = [f.name for f in dataclasses.fields(Config)]
  values = {name: fv[name].value for name in names}
  values["methods"] = tuple(values["methods"] or ())
  values["sweep"] = tuple(values["sweep"] or ())
  for flag, _, _ in matched_clean.GRID_FLAGS.values():
    values[flag] = tuple(values[flag] or ())
  return Config(**values)


def threat_model(cfg):
  """The threat model of a validated `Config`, as plain JSON.

  Args:
    cfg: a `Config` returned by `validate`.

  Returns:
    A dict: ``p``, ``epsilon``, ``epsilon_source`` (``"default"`` where
    ``epsilon`` is `default_epsilon` of the dataset and p, else
    ``"--epsilon"``), ``input_range``, ``input_dim``, ``vacuous_radius``
    (`vacuous_radius`) and ``vacuous`` (``epsilon >= vacuous_radius``).
  """
  spec = datasets._SPECS[cfg.dataset]  # pylint: disable=protected-access
  dim = int(np.prod(spec.shape))
  radius = vacuous_radius(cfg.p, spec.input_range, dim)
  default = default_epsilon(cfg.dataset, cfg.p)
  return _jsonable({
      "p": cfg.p,
      "epsilon": cfg.epsilon,
      "epsilon_source": "default" if default is not None and math.isclose(
          cfg.epsilon, default) else "--epsilon",
      "input_range": list(spec.input_range),
      "input_dim": dim,
      "vacuous_radius": radius,
      "vacuous": cfg.epsilon >= radius,
  })


def _threat_model_text(cfg, threat):
  p = _p_text(cfg.p)
  where = (f"the {cfg.dataset} default for l{p}" if threat["epsilon_source"] == "default"
           else "set by --epsilon")
  return f"threat model: l{p} ball of radius eps={cfg.epsilon:g} ({where})"


def _vacuous_warning(cfg, threat):
  """The warning printed before a run whose ``--epsilon`` is vacuous."""
  lo, hi = threat["input_range"]
  p = _p_text(cfg.p)
  r = threat["vacuous_radius"]
  bound, what = ((2 * r, "whose ball around every input covers the whole box")
                 if cfg.epsilon >= 2 * r else
                 (r, f"that reaches the box's centre (all pixels {(lo + hi) / 2:g}) from "
                  "every input"))
  default = default_epsilon(cfg.dataset, cfg.p)
  hint = (f"; the {cfg.dataset} default for l{p} is {default:g} (leave --epsilon out)"
          if default is not None else "")
  return (f"WARNING: vacuous threat model: --epsilon={cfg.epsilon:g} with --p={p} on "
          f"{cfg.dataset} (pixels in [{lo:g}, {hi:g}], {threat['input_dim']} of them) is at "
          f"least {bound:.4g}, the l{p} radius {what}. No "
          "classifier can then be robust on two classes: every method scores at most the "
          "largest class's share and the claims do not say anything. Running it as asked"
          f"{hint}.")


# ---------------------------------------------------------------------------
# Plain JSON and the atomic write.
# ---------------------------------------------------------------------------


# Python scalars, lists and dicts only; ``inf`` -> ``"inf"``, NaN -> None.
_jsonable = evaluation._jsonable  # pylint: disable=protected-access


def _write_text_atomic(path, text):
  """Writes ``text`` to ``path`` atomically.

  The text goes to a temporary file in the same directory, is flushed to
  disk, and replaces ``path`` in one ``os.replace``: a reader (or an
  interrupted run) sees the old file or the complete new one, never half a
  file, and no temporary file is left behind.

  Args:
    path: the file to write.
    text: the string to write.

  Returns:
    ``path``.

  Raises:
    OSError: if the directory cannot be written to.
  """
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    # mkstemp creates the file 0600; give it the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_json_atomic(path, obj):
  """Writes ``obj`` as plain JSON to ``path`` atomically (see `_write_text_atomic`).

  Args:
    path: the file to write.
    obj: dicts, lists, numbers, strings and numpy values; ``inf`` is written
      as ``"inf"`` and NaN as ``null``.

  Returns:
    ``path``.

  Raises:
    TypeError: if ``obj`` holds a value JSON cannot write (``path`` is then
      left as it was).
    OSError: if the directory cannot be written to.
  """
  text = json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n"
  return _write_text_atomic(path, text)


# ---------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------


def _p_text(p):
  return "inf" if math.isinf(p) else f"{p:g}"


def describe(method, cfg):
  """A one-line description of how ``method`` is trained under ``cfg``.

  Args:
    method: one of `METHODS`.
    cfg: the `Config`.

  Returns:
    The description (``"cross-entropy only"`` for ``standard``).
  """
  p, q = _p_text(cfg.p), _p_text(cfg.q)
  if method == "adversarial":
    return (f"PGD-{cfg.attack_steps} l{p} adversarial training, eps={cfg.epsilon:g}, "
            f"CE + {cfg.at_weight:g} * CE_adv")
  if method == "opnorm":
    return (f"d.d. ({p},{q}) operator-norm regularisation, eps={cfg.epsilon:g}, "
            f"lambda={cfg.opnorm_weight:g}, {cfg.opnorm_iters} power iterations")
  if method == "spectral":
    return (f"global spectral-norm regularisation, lambda={cfg.spectral_weight:g}, "
            f"{cfg.spectral_iters} power iteration(s) per step")
  return "cross-entropy only"


def method_callbacks(method, cfg, info):
  """The `keras_opnorm.callbacks` training callback(s) of ``method``.

  Args:
    method: one of `METHODS`.
    cfg: the `Config`.
    info: the dataset's `keras_opnorm.datasets.DatasetInfo` (its input range
      clips the adversarial examples).

  Returns:
    A list of callbacks (empty for ``standard``).

  Raises:
    ValueError: if ``method`` is not one of `METHODS`.
  """
  from keras_opnorm import callbacks  # pylint: disable=g-import-not-at-top
  if method == "standard":
    return []
  if method == "adversarial":
    return [callbacks.AdversarialTraining(
        epsilon=cfg.epsilon, p=cfg.p, num_steps=cfg.attack_steps, loss="crossentropy",
        weight=cfg.at_weight, clip=tuple(info.input_range))]
  if method == "opnorm":
    return [callbacks.OperatorNormRegularization(
        epsilon=cfg.epsilon, p=cfg.p, q=cfg.q, weight=cfg.opnorm_weight,
        num_iters=cfg.opnorm_iters)]
  if method == "spectral":
    return [callbacks.SpectralNormRegularization(
        weight=cfg.spectral_weight, num_iters=cfg.spectral_iters, seed=cfg.seed)]
  raise ValueError(f"`method` must be one of {', '.join(METHODS)}. Received: method={method!r}")


class _EpochTimer(keras.callbacks.Callback):
  """Records the wall time of every epoch."""

  def on_train_begin(self, logs=None):
    self.seconds = []

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.seconds.append(time.perf_counter() - self._start)


def train(method, cfg, info, flatten, callbacks=()):
  """Builds, compiles and trains the model of one method.

  Every method starts from the same initial weights (Keras' global seed is
  reset to ``cfg.seed`` before the model is built) and sees the same data
  order (the training pipeline is rebuilt with the same shuffle seed).

  Args:
    method: one of `METHODS`.
    cfg: the `Config` (its ``seed`` is this repetition's).
    info: the dataset's `keras_opnorm.datasets.DatasetInfo`.
    flatten: feed flat vectors (the ``mlp`` model).
    callbacks: more Keras callbacks for ``fit`` (progress reports). Defaults
      to `()`.

  Returns:
    ``(model, record)`` with record holding the timing and the history.
  """
  keras.utils.set_random_seed(cfg.seed)
  train_ds, _, _ = datasets.load(
      cfg.dataset, data_dir=cfg.data_dir, batch_size=cfg.batch_size, seed=cfg.seed,
      flatten=flatten, download=cfg.download)
  model = models.build(cfg.model, info.input_shape, info.num_classes)
  model.compile(
      optimizer=keras.optimizers.Adam(cfg.learning_rate),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=["accuracy"])
  timer = _EpochTimer()
  start = time.perf_counter()
  history = model.fit(train_ds, epochs=cfg.epochs, shuffle=False, verbose=cfg.verbose,
                      callbacks=method_callbacks(method, cfg, info) + [timer] + list(callbacks))
  total = time.perf_counter() - start
  epoch_seconds = list(timer.seconds)
  # The first epoch also traces and compiles the train step: leave it out of
  # the per-epoch time when there are others.
  steady = epoch_seconds[1:] or epoch_seconds
  record = {
      "description": describe(method, cfg),
      "train_seconds": total,
      "seconds_per_epoch": sum(steady) / len(steady),
      "first_epoch_seconds": epoch_seconds[0] if epoch_seconds else None,
      "epoch_seconds": epoch_seconds,
      "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
  }
  return model, record


# ---------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------


def _subspace_energy(result, r):
  """Mean ``sqrt(sum_{i <= r} cos_i^2)``: the share of the perturbation in span(v_1..v_r)."""
  cos = np.asarray(result.cosines)[:, :r]
  return float(np.mean(np.sqrt(np.sum(cos ** 2, axis=1))))


def evaluate(model, x, y, cfg, info, on_stage=None):
  """Evaluates one trained model the way the paper does.

  Accuracy curves on all of ``x``; operator norms, spectra and alignment on
  the first ``cfg.align_examples`` examples.

  Args:
    model: the trained model (outputs logits).
    x: held-out inputs ``[n, ...]``.
    y: their integer labels ``[n]``.
    cfg: the `Config` (its ``seed`` seeds the attacks).
    info: the dataset's `keras_opnorm.datasets.DatasetInfo`.
    on_stage: ``on_stage(name, seconds)`` is called after each stage (the PGD
      sweep, operator norms and spectra, alignment, the ensemble, FMN).
      Defaults to `None`.

  Returns:
    ``(summary, details)``: a dict of the headline numbers and a dict of the
    full evaluation results (their ``to_dict()``, without per-example data).
  """
  keras.utils.set_random_seed(cfg.seed)  # the attacks' random starts: reproducible
  clip = tuple(info.input_range)
  x_align, y_align = x[:cfg.align_examples], y[:cfg.align_examples]
  k = min(cfg.spectrum_k, info.num_classes, int(x[0].size))
  common = dict(jit_compile=cfg.jit_compile)
  clock = [time.perf_counter()]

  def stage_done(name):
    now = time.perf_counter()
    if on_stage is not None:
      on_stage(name, now - clock[0])
    clock[0] = now

  curve = evaluation.robust_accuracy(
      model, x, y, epsilons=cfg.epsilons, p=cfg.p, num_steps=cfg.num_steps,
      num_restarts=cfg.num_restarts, clip=clip, **common)
  stage_done(f"PGD-{cfg.num_steps} at {len(cfg.epsilons)} radii")
  opnorm = evaluation.mean_operator_norm(model, x_align, cfg.p, cfg.q, **common)
  opnorm_c = evaluation.mean_operator_norm(model, x_align, cfg.p, cfg.q, centered=True,
                                           **common)
  spec = evaluation.spectrum(model, x_align, k=k, **common)
  spec_c = evaluation.spectrum(model, x_align, k=k, centered=True, **common)
  stage_done("operator norms and spectra")
  attack = dict(epsilon=cfg.epsilon, p=cfg.p, q=cfg.q, k=k, num_steps=cfg.num_steps,
                clip=clip, centered=True, seed=cfg.seed, **common)
  align_ce = evaluation.alignment(model, x_align, y_align, loss="crossentropy", **attack)
  align_logit = evaluation.alignment(model, x_align, y_align, loss="logit", **attack)
  radii = [e for e in cfg.epsilons if e > 0]
  sweep = dict(epsilons=radii, p=cfg.p, q=cfg.q, num_steps=cfg.num_steps, clip=clip,
               centered=True, seed=cfg.seed, **common)
  align_eps_ce = evaluation.alignment_vs_epsilon(model, x_align, y_align,
                                                 loss="crossentropy", **sweep)
  align_eps_logit = evaluation.alignment_vs_epsilon(model, x_align, y_align, loss="logit",
                                                    **sweep)
  margin = evaluation.margin_alignment(model, x_align, y_align, epsilon=cfg.epsilon, p=cfg.p,
                                       q=cfg.q, num_steps=cfg.num_steps, clip=clip, **common)
  stage_done("alignment")
  robust_pgd = curve.accuracy_at(cfg.epsilon)
  ensemble = None
  if _uses_ensemble(cfg):
    ensemble = evaluation.auto_attack(model, x, y, epsilon=cfg.epsilon, p=cfg.p,
                                      version=cfg.evaluation, clip=clip, seed=cfg.seed,
                                      verbose=0)
    stage_done(f"{cfg.evaluation} ensemble")
  radii = None
  if cfg.min_norm_steps and cfg.p in _ENSEMBLE_NORMS:
    radii = evaluation.robust_radii(model, x, y, p=cfg.p, num_steps=cfg.min_norm_steps,
                                    clip=clip, seed=cfg.seed, **common)
    stage_done(f"FMN-{cfg.min_norm_steps} radii")
  summary = {
      "clean_accuracy": curve.clean_accuracy,
      "robust_accuracy": ensemble.robust_accuracy if ensemble else robust_pgd,
      "robust_accuracy_pgd": robust_pgd,
      "robust_accuracy_min_norm": radii.accuracy_at(cfg.epsilon) if radii else None,
      "median_robust_radius": radii.median() if radii else None,
      "mean_operator_norm": opnorm,
      "mean_operator_norm_centered": opnorm_c,
      "top_singular_value": spec.mean[0],
      "alignment_rank1_ce": align_ce.rank1,
      "alignment_rank1_ce_centered": align_ce.centered_rank1,
      "alignment_rank1_logit": align_logit.rank1,
      "alignment_rank1_logit_centered": align_logit.centered_rank1,
      "alignment_random": align_ce.random_mean[0],
      "alignment_random_expected": align_ce.random_expected,
      "logit_shift_rank1": align_ce.logit_shift[0],
      "alignment_ce_top3": _subspace_energy(align_ce, 3),
      "alignment_logit_top3": _subspace_energy(align_logit, 3),
      "alignment_ce_opnorm_v": margin.ce_v,
      "alignment_logit_opnorm_v": margin.logit_v,
      "alignment_ce_margin": margin.ce_margin,
      "alignment_logit_margin": margin.logit_margin,
      "top_output_direction_margin": margin.u_margin,
  }
  details = {
      "robust_accuracy_curve": curve.to_dict(),
      "spectrum": spec.to_dict(per_example=False),
      "spectrum_centered": spec_c.to_dict(per_example=False),
      "alignment_ce": align_ce.to_dict(per_example=False),
      "alignment_logit": align_logit.to_dict(per_example=False),
      "alignment_vs_epsilon_ce": align_eps_ce.to_dict(),
      "alignment_vs_epsilon_logit": align_eps_logit.to_dict(),
  }
  if ensemble is not None:
    details["auto_attack"] = ensemble.to_dict(per_example=False)
    for name, acc in zip(ensemble.attacks, ensemble.robust_accuracy_by_attack):
      summary[f"robust_accuracy_after_{name}"] = acc
  if radii is not None:
    grid = np.linspace(0.0, max(cfg.epsilons), 41).tolist()
    details["min_norm_curve"] = radii.curve(sorted(set(grid) | set(cfg.epsilons))).to_dict()
  return summary, details


def _uses_ensemble(cfg):
  """Whether the headline robust accuracy comes from the ensemble under ``cfg``."""
  return cfg.evaluation != "pgd" and cfg.p in _ENSEMBLE_NORMS


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------


def _columns(cfg):
  """``(header, key, format)`` of the table's columns for this setting."""
  columns = [
      ("clean acc", "clean_accuracy", "{:.3f}"),
      ("robust acc", "robust_accuracy", "{:.3f}"),
      (f"PGD-{cfg.num_steps} acc", "robust_accuracy_pgd", "{:.3f}"),
      # U+2016 (double vertical line): a plain "|" would split a Markdown cell.
      ("mean \u2016J\u2016", "mean_operator_norm", "{:.3g}"),
      ("mean \u2016PJ\u2016", "mean_operator_norm_centered", "{:.3g}"),
      ("align CE", "alignment_rank1_ce", "{:.2f}"),
      ("align CE (PJ)", "alignment_rank1_ce_centered", "{:.2f}"),
      ("align logit", "alignment_rank1_logit", "{:.2f}"),
      ("random", "alignment_random", "{:.2f}"),
  ]
  if cfg.p != 2.0 or cfg.q != 2.0:
    columns += [("align CE (v_pq)", "alignment_ce_opnorm_v", "{:.2f}"),
                ("align logit (v_pq)", "alignment_logit_opnorm_v", "{:.2f}")]
  columns += [
      ("CE to margin", "alignment_ce_margin", "{:.2f}"),
      ("u1 to margin", "top_output_direction_margin", "{:.2f}"),
      ("s/epoch", "seconds_per_epoch", "{:.2f}"),
  ]
  if cfg.min_norm_steps and cfg.p in _ENSEMBLE_NORMS:
    columns.insert(3, ("median radius", "median_robust_radius", "{:.3g}"))
  return columns


def format_table(results, cfg):
  """The results as a Markdown table (one row per method) with a legend.

  Args:
    results: ``method -> aggregated summary`` (means over seeds, and
      ``<key>_std`` standard deviations), as in ``results.json["methods"]``.
    cfg: the `Config`.

  Returns:
    The table, a blank line and the legend, as one string.
  """
  p, q = _p_text(cfg.p), _p_text(cfg.q)
  columns = _columns(cfg)
  header = ["method"] + [h for h, _, _ in columns]
  rows = []
  for method, r in results.items():
    cells = [_LABELS.get(method, method)]
    for _, key, fmt in columns:
      value = r.get(key)
      cell = "n/a" if value is None else fmt.format(value)
      if key in _WITH_STD and cfg.num_seeds > 1 and r.get(key + "_std") is not None:
        cell += " ± " + fmt.format(r[key + "_std"])
      cells.append(cell)
    rows.append(cells)
  widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

  def line(cells):
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

  out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
  out += [line(r) for r in rows]
  seeds = (f"mean over {cfg.num_seeds} seeds {cfg.seeds[0]}..{cfg.seeds[-1]} (each its own "
           "split, initial weights and data order; ± one standard deviation)"
           if cfg.num_seeds > 1 else f"seed {cfg.seed}")
  source = ("the dataset's default for this p"
            if threat_model(cfg)["epsilon_source"] == "default" else "set by --epsilon")
  legend = [
      f"{cfg.dataset} / {cfg.model}, p={p}, q={q}, eps={cfg.epsilon:g} ({source}), "
      f"{cfg.epochs} epochs, {seeds}.",
      _robust_legend(cfg),
      f"PGD-{cfg.num_steps} acc: accuracy under PGD-{cfg.num_steps} (l{p}, cross-entropy, "
      f"{cfg.num_restarts} restart(s)) at eps, the weaker measure of version 0.1.",
      f"\u2016J\u2016: mean ||J_f(x)||_({p},{q}); PJ: the same for the centered logits "
      "f - mean_i f_i (what cross-entropy sees).",
      f"align: mean |cos| between the l{p} PGD perturbation at eps and the top right "
      "singular vector of J (or PJ), for the cross-entropy (CE) attack and the "
      f"l{q}-logit attack of the theorem; random: a random direction.",
  ]
  if cfg.p != 2.0 or cfg.q != 2.0:
    legend.append(f"align (v_pq): the same with the ({p},{q}) power method's maximiser "
                  "v instead of the singular vector.")
  legend += [
      f"CE to margin: |cos| between the CE perturbation and s_{p}(J^T e), e = "
      "(e_j - e_y)/sqrt(2) for the strongest wrong class j (the direction that "
      "changes the margin f_j - f_y most); u1 to margin: |<u1, e>| for J's top "
      "output direction u1.",
      "s/epoch: training seconds per epoch (the first epoch, which compiles, excluded).",
  ]
  if cfg.min_norm_steps and cfg.p in _ENSEMBLE_NORMS:
    legend.append(f"median radius: median l{p} norm of the smallest adversarial perturbation "
                  f"found by FMN-{cfg.min_norm_steps} (an upper bound per example; 0 for "
                  "misclassified, inf where none was found).")
  return "\n".join(out) + "\n\n" + "\n".join(legend) + "\n"


def _robust_legend(cfg):
  p = _p_text(cfg.p)
  if _uses_ensemble(cfg):
    return (f"robust acc: accuracy under the {cfg.evaluation} AutoAttack-grade ensemble "
            f"(keras_opnorm.evaluation.auto_attack, l{p}) at eps; the claims use it.")
  why = "" if cfg.evaluation == "pgd" else f" (the ensemble has no l{p} attacks)"
  return (f"robust acc: accuracy under PGD-{cfg.num_steps} (l{p}, cross-entropy, "
          f"{cfg.num_restarts} restart(s)) at eps{why}; the claims use it.")


# Columns shown with their standard deviation over seeds.
_WITH_STD = ("clean_accuracy", "robust_accuracy", "robust_accuracy_pgd")


def check_claims(results):
  """The paper's robustness claims on this run, as ``name -> {holds, ...}``.

  On the headline robust accuracies at the training eps (the ensemble's,
  unless ``--evaluation=pgd``; means over seeds, and per seed):

  * opnorm within 3 points of adversarial training;
  * both at least 20 points above the standard model;
  * global spectral-norm regularisation below both.

  Args:
    results: ``method -> aggregated summary`` with ``robust_accuracy`` and
      ``per_seed`` (as in ``results.json["methods"]``).

  The verdict (`keras_opnorm.experiments.matched_clean.verdict`): ``holds``
  if the claim holds in every seed, ``fails`` if it fails in every seed,
  ``inconclusive`` otherwise; ``holds`` (on the mean) is kept as it was.

  Returns:
    ``claim name -> {"holds", the margin, the margin's std over seeds
    (``<name>_std``), "holds_in_seeds", "num_seeds", "verdict"}``; empty
    unless all four methods were run.
  """
  needed = ("standard", "adversarial", "opnorm", "spectral")
  if any(m not in results for m in needed):
    return {}
  num_seeds = len(results["standard"]["per_seed"])

  def tests(rob):
    return {
        "opnorm_within_3_points_of_adversarial": (
            abs(rob["opnorm"] - rob["adversarial"]) <= 0.03,
            {"difference": rob["opnorm"] - rob["adversarial"]}),
        "adversarial_and_opnorm_20_points_above_standard": (
            min(rob["adversarial"], rob["opnorm"]) - rob["standard"] >= 0.20,
            {"margin": min(rob["adversarial"], rob["opnorm"]) - rob["standard"]}),
        "spectral_below_both": (
            rob["spectral"] < min(rob["adversarial"], rob["opnorm"]),
            {"margin": min(rob["adversarial"], rob["opnorm"]) - rob["spectral"]}),
    }

  on_mean = tests({m: results[m]["robust_accuracy"] for m in needed})
  per_seed = [tests({m: results[m]["per_seed"][i]["robust_accuracy"] for m in needed})
              for i in range(num_seeds)]
  out = {}
  for name, (holds, numbers) in on_mean.items():
    spread = {f"{k}_std": float(np.std([t[name][1][k] for t in per_seed])) for k in numbers}
    seeds = [bool(t[name][0]) for t in per_seed]
    out[name] = {"holds": bool(holds), **numbers, **spread, "holds_in_seeds": sum(seeds),
                 "num_seeds": num_seeds, "verdict": matched_clean.verdict(seeds)}
  return out


def _average(values):
  """Field-wise mean of equal-shaped JSON results (numbers and lists of numbers).

  Non-numeric fields, numbers equal in every value (counts such as
  ``num_steps``) and fields whose shape differs between the values are taken
  from the first value.
  """
  first = values[0]
  if isinstance(first, dict):
    return {k: _average([v[k] for v in values]) if all(
        isinstance(v, dict) and k in v for v in values) else first[k] for k in first}
  if isinstance(first, bool) or first is None or isinstance(first, str):
    return first
  if isinstance(first, (int, float)):
    if all(v == first for v in values):
      return first  # e.g. num_steps, k: keep the integer
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
      return float(np.mean(values))
    return first
  if isinstance(first, list):
    if all(isinstance(v, list) and len(v) == len(first) for v in values):
      return [_average([v[i] for v in values]) for i in range(len(first))]
    return first
  return first


def _plots(evaluations, cfg):
  """Draws the figures from ``method -> averaged evaluation dicts``."""
  from keras_opnorm import plots  # pylint: disable=g-import-not-at-top
  d = cfg.output_dir

  def pick(key):
    return {m: e[key] for m, e in evaluations.items()}

  files = []
  if all("min_norm_curve" in e for e in evaluations.values()):
    p = _p_text(cfg.p)
    files.append(plots.plot_robust_accuracy(
        pick("min_norm_curve"), os.path.join(d, "accuracy_vs_epsilon_min_norm.png"),
        title=f"Robust accuracy from FMN-{cfg.min_norm_steps} radii ($\\ell_{{{p}}}$)"))
  files += [
      plots.plot_robust_accuracy(pick("robust_accuracy_curve"),
                                 os.path.join(d, "accuracy_vs_epsilon.png")),
      plots.plot_alignment_by_rank(pick("alignment_ce"),
                                   os.path.join(d, "alignment_by_rank.png")),
      plots.plot_alignment_by_rank(pick("alignment_ce"),
                                   os.path.join(d, "alignment_by_rank_centered.png"),
                                   centered=True),
      plots.plot_alignment_by_rank(pick("alignment_logit"),
                                   os.path.join(d, "alignment_by_rank_logit.png")),
      plots.plot_alignment_vs_epsilon(pick("alignment_vs_epsilon_ce"),
                                      os.path.join(d, "alignment_vs_epsilon.png")),
      plots.plot_alignment_vs_epsilon(pick("alignment_vs_epsilon_logit"),
                                      os.path.join(d, "alignment_vs_epsilon_logit.png")),
      plots.plot_spectra(pick("spectrum"), os.path.join(d, "spectra.png")),
  ]
  return [os.path.basename(f) for f in files]


def _environment():
  return {
      "python": platform.python_version(),
      "tensorflow": tf.__version__,
      "keras": keras.__version__,
      "keras_opnorm": keras_opnorm.__version__,
      "cpu_count": os.cpu_count(),
      "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
  }


def _aggregate(per_seed):
  """Means (and stds) over seeds of the numeric entries of per-seed summaries."""
  out = {}
  for key, first in per_seed[0].items():
    if key == "seed":
      continue
    values = [r[key] for r in per_seed]
    if isinstance(first, (int, float)) and not isinstance(first, bool) and all(
        isinstance(v, (int, float)) for v in values):
      out[key] = float(np.mean(values))
      out[key + "_std"] = float(np.std(values))
  return out


def _duration(seconds):
  """``"42 s"``, ``"3 min 05 s"`` or ``"2 h 07 min"``; ``"?"`` for ``None``."""
  if seconds is None:
    return "?"
  seconds = max(0, int(round(seconds)))
  if seconds < 120:
    return f"{seconds} s"
  if seconds < 7200:
    return f"{seconds // 60} min {seconds % 60:02d} s"
  return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# While a training run lasts, a line at most this often (a digits run prints none).
_HEARTBEAT_SECONDS = 60.0


class _Progress:
  """Plain progress lines: one per training run and one per evaluation stage.

  Each line goes to stdout at once (flushed), with no progress bar or
  terminal escape code, so a log reads the same in a terminal and a file.
  Training and evaluation lines end with the elapsed time and the ETA of the
  whole job: the sum, over the work still to come, of the mean train and
  evaluation time of the same method in the seeds already done (of all the
  runs done, for a method not yet run; ``?`` before the first estimate).
  """

  def __init__(self, cfg, stream=None, runs=None):
    # runs: the (seed, name) of every training run, in order; default: every
    # method of every seed. Times are averaged per name.
    self._runs = list(runs) if runs is not None else [
        (seed, m) for seed in cfg.seeds for m in cfg.methods]
    self._epochs = cfg.epochs
    self._stream = stream
    self._start = time.perf_counter()
    self._index = 0
    self._times = {"train": {}, "eval": {}}

  def _mean(self, kind, method):
    t = self._times[kind]
    values = t.get(method) or [v for vs in t.values() for v in vs]
    return float(np.mean(values)) if values else None

  def _eta(self, rest_of_this_run):
    total = rest_of_this_run
    for _, method in self._runs[self._index + 1:]:
      parts = (total, self._mean("train", method), self._mean("eval", method))
      if any(v is None for v in parts):
        return None
      total = sum(parts)
    return total

  def _status(self, rest_of_this_run):
    return (f"elapsed {_duration(time.perf_counter() - self._start)}, "
            f"ETA {_duration(self._eta(rest_of_this_run))}")

  def line(self, text):
    seed, method = self._runs[self._index]
    print(f"[run {self._index + 1}/{len(self._runs)}, seed {seed}] {method}: {text}",
          file=self._stream, flush=True)

  def heartbeat(self):
    """A Keras callback that reports a long training run once a minute."""
    progress = self

    class _Heartbeat(keras.callbacks.Callback):

      def on_train_begin(self, logs=None):
        self._start = self._last = time.perf_counter()

      def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if now - self._last < _HEARTBEAT_SECONDS or epoch + 1 >= progress._epochs:
          return
        self._last = now
        per_epoch = (now - self._start) / (epoch + 1)
        evaluation_time = progress._mean("eval", progress._runs[progress._index][1])
        rest = (None if evaluation_time is None
                else (progress._epochs - epoch - 1) * per_epoch + evaluation_time)
        progress.line(f"epoch {epoch + 1}/{progress._epochs}, "
                      f"{_duration(now - self._start)}; {progress._status(rest)}")

    return _Heartbeat()

  def trained(self, record):
    method = self._runs[self._index][1]
    self._times["train"].setdefault(method, []).append(record["train_seconds"])
    self.line(f"trained {len(record['epoch_seconds'])} epochs in "
              f"{record['train_seconds']:.1f} s ({record['seconds_per_epoch']:.2f} s/epoch); "
              f"{self._status(self._mean('eval', method))}")

  def stage(self, name, seconds):
    self.line(f"evaluation stage {name}: {seconds:.1f} s")

  def evaluated(self, seconds, summary):
    method = self._runs[self._index][1]
    self._times["eval"].setdefault(method, []).append(seconds)
    self.line(f"evaluated in {seconds:.1f} s: clean {summary['clean_accuracy']:.3f}, "
              f"robust {summary['robust_accuracy']:.3f}; {self._status(0.0)}")
    self._index += 1


def announce_threat_model(cfg):
  """Prints the threat model of ``cfg`` (and the vacuous-radius warning); returns it."""
  threat = threat_model(cfg)
  print(_threat_model_text(cfg, threat), flush=True)
  if threat["vacuous"]:
    print(_vacuous_warning(cfg, threat), flush=True)
  return threat


def load_eval_arrays(cfg, seed, flatten):
  """The held-out ``(x, y, info)`` of ``cfg``'s dataset for ``seed``.

  Raises:
    absl.app.UsageError: if the dataset cannot be loaded (not prepared, or
      a missing package).
  """
  try:
    return datasets.load_arrays(
        cfg.dataset, split="test", max_examples=cfg.eval_examples, data_dir=cfg.data_dir,
        seed=seed, flatten=flatten, download=cfg.download)
  except (FileNotFoundError, ImportError) as e:
    _fail(str(e))


def run_comparison(cfg):
  """Trains and evaluates every method of a validated `Config`; writes the outputs.

  Every seed of ``cfg.seeds`` repeats the whole comparison (a new digits
  split, new initial weights shared by the methods, a new data order).

  Args:
    cfg: a `Config` returned by `validate`.

  Returns:
    The results dict that was written to ``results.json``.

  Raises:
    absl.app.UsageError: if the dataset cannot be loaded (not prepared, or
      a missing package).
  """
  wall_start = time.perf_counter()
  threat = announce_threat_model(cfg)
  progress = _Progress(cfg)
  flatten = cfg.model == "mlp"
  per_seed = {m: [] for m in cfg.methods}
  details = {m: [] for m in cfg.methods}
  for seed_index, seed in enumerate(cfg.seeds):
    cfg_s = dataclasses.replace(cfg, seed=seed)
    x_eval, y_eval, info = load_eval_arrays(cfg, seed, flatten)
    if seed_index == 0:
      print(f"{cfg.dataset}: {info.num_train} training / {info.num_test} test examples of "
            f"shape {info.input_shape} in {list(info.input_range)}; evaluating on "
            f"{len(y_eval)} (alignment, spectra: {min(cfg.align_examples, len(y_eval))}); "
            f"seeds {cfg.seeds}.", flush=True)
      for method in cfg.methods:
        print(f"{method}: {describe(method, cfg)}", flush=True)
    for method in cfg.methods:
      model, record = train(method, cfg_s, info, flatten, callbacks=[progress.heartbeat()])
      progress.trained(record)
      start = time.perf_counter()
      summary, detail = evaluate(model, x_eval, y_eval, cfg_s, info, on_stage=progress.stage)
      record["eval_seconds"] = time.perf_counter() - start
      progress.evaluated(record["eval_seconds"], summary)
      per_seed[method].append({"seed": seed, **summary, **record})
      details[method].append(detail)
      keras.backend.clear_session()
  results = {
      m: {"label": _LABELS[m], "description": describe(m, cfg), **_aggregate(per_seed[m]),
          "per_seed": per_seed[m]}
      for m in cfg.methods}
  evaluations = {m: _average(details[m]) for m in cfg.methods}
  table = format_table(results, cfg)
  claims = check_claims(results)
  # Created only now (validate() checked it can be), so that a run failing
  # earlier (data not prepared, an interrupt) leaves no empty folder behind.
  os.makedirs(cfg.output_dir, exist_ok=True)
  files = _plots(evaluations, cfg) if cfg.plots else []
  _write_text_atomic(os.path.join(cfg.output_dir, "table.md"), table)
  out = {
      "config": cfg.to_dict(),
      "threat_model": threat,
      "dataset": info.to_dict(),
      "eval_examples": int(len(y_eval)),
      "align_examples": int(min(cfg.align_examples, len(y_eval))),
      "methods": {m: {**results[m], "evaluation": evaluations[m]} for m in results},
      "claims": claims,
      "plots": files,
      "environment": _environment(),
      "wall_seconds": time.perf_counter() - wall_start,
  }
  write_json_atomic(os.path.join(cfg.output_dir, "results.json"), out)
  print("\n" + table)
  for name, claim in claims.items():
    numbers = ", ".join(f"{k} {v:+.3f} ± {claim[k + '_std']:.3f} over seeds"
                        for k, v in claim.items() if k in ("difference", "margin"))
    print(f"claim {name}: {claim['verdict']} ({numbers}; holds in "
          f"{claim['holds_in_seeds']}/{claim['num_seeds']} seeds; on the mean: "
          f"{'holds' if claim['holds'] else 'DOES NOT HOLD'})")
  print(f"\nwrote {os.path.join(cfg.output_dir, 'results.json')}, table.md"
        + (f" and {', '.join(files)}" if files else "")
        + f" in {out['wall_seconds']:.0f} s", flush=True)
  return out


class _NoRetracingWarnings(logging.Filter):
  """Drops TensorFlow's "triggered tf.function retracing" warnings.

  The evaluation builds a few compiled kernels per trained model on purpose
  (each model is a new function); TensorFlow warns about that as if it were
  accidental retracing.
  """

  def filter(self, record):
    return "triggered tf.function retracing" not in record.getMessage()


def main(argv):
  if len(argv) > 1:
    extra = argv[1:]
    hint = "".join(f" Did you mean --{a}?" for a in extra[:1]
                   if "=" in a and not a.startswith("-"))
    _fail("compare takes flags only (--name=value), no positional arguments. Received: "
          f"positional argument(s) {' '.join(map(repr, extra))}.{hint}")
  cfg = validate(config_from_flags())
  logger = tf.get_logger()
  if not any(isinstance(f, _NoRetracingWarnings) for f in logger.filters):
    logger.addFilter(_NoRetracingWarnings())
  if cfg.protocol == "matched_clean":
    matched_clean.run(cfg, compare=sys.modules[__name__])
  else:
    run_comparison(cfg)


def run():
  """Console-script entry point (``keras-opnorm-compare``)."""
  app.run(main)


if __name__ == "__main__":
  run()
