r"""The library's AutoAttack-grade evaluation against IBM ART's and Foolbox's attacks.

On the four models of the main job (``python -m keras_opnorm.experiments.compare``:
standard, PGD adversarial training, d.d. operator-norm regularisation and global
spectral-norm regularisation, trained by `keras_opnorm.experiments.compare.train`
with its default hyper-parameters on the embedded 8x8 digits MLP, one seed), for
each norm of ``--norms`` (``2``: eps = 1.0, ``inf``: eps = 0.1, the main job's
radii; the models are trained at that norm and radius, as the main job trains
them), this measures on the same test images, in one process:

* ``library``: `keras_opnorm.evaluation.auto_attack` (``version='standard'``:
  APGD-CE, APGD-T, FAB-T, Square; Croce & Hein, ICML 2020,
  https://arxiv.org/abs/2003.01690);
* ``PGD-20``: `keras_opnorm.evaluation.robust_accuracy` (20 steps, 1 restart,
  cross-entropy), the main job's number, as the old reference;
* ``ART AA``: IBM ART's ``art.attacks.evasion.AutoAttack`` with its default
  attack list (APGD-CE and APGD-DLR, 100 steps and 5 random starts each,
  DeepFool, Square with 5000 queries and 5 restarts), untargeted, on an
  ``art.estimators.classification.TensorFlowV2Classifier`` around the Keras
  model (``clip_values=(0, 1)``, Keras cross-entropy from logits). ART's
  ``eps_step`` (APGD's initial step) is set to ``2 * eps``, the initial step
  of the reference AutoAttack (ART's default, 0.1, was chosen for MNIST l-inf
  eps = 0.3; ``--art_eps_step`` sets it);
* ``FB PGD``: Foolbox 3 ``LinfPGD`` / ``L2PGD`` (``--fb_steps`` steps,
  Foolbox's default relative step size, random start), ``--fb_restarts`` runs,
  an example broken if any run breaks it;
* ``FB FMN``: Foolbox's minimum-norm ``LInfFMNAttack`` / ``L2FMNAttack``
  (defaults: 100 steps), and ``FB DDN``: ``DDNAttack`` (l2 only; 100 steps):
  an example is robust if the smallest perturbation they find is larger than
  eps (or they find none).

Every method's points are checked the same way (`verified_robust`): an
example counts as broken only if the model misclassifies the returned point,
the point is finite, inside [0, 1] and ``||x_adv - x||_p <= eps (1 + 1e-5)``
(plus one float32 rounding per pixel). The reported robust accuracies of the
peers are these verified numbers (``*_own`` in the JSON: what the peer itself
reported, where it reports anything). The library's number is its own
(`AutoAttackResult.robust_accuracy`, which verifies the same way); the
verified recount of its ``x_adv`` is in the JSON as a cross-check.

Reported per model and norm: the robust accuracy of each method, ``peers
(union)`` (robust only if no peer method breaks it, per example), the library
ensemble's difference to the best (lowest) single peer (target ``<= +0.005``),
and the wall time of each (target: library at least 10x faster than ART's
AutoAttack).

Fairness of the timing:

* Warm-up is *included for all*: every method runs once, cold, on each freshly
  trained model, and its wall time covers everything from wrapping the model
  to the final count (the library's and PGD-20's ``tf.function`` tracing, ART's
  estimator construction and its probing predictions, Foolbox's wrapper). The
  library builds new compiled functions on every call, so its warm-up cannot
  be excluded without changing what a user runs; ART and Foolbox run eagerly,
  so they have little to warm up.
* Interleaving: within each (norm, model) cell the methods run one after the
  other, in the order ``library, PGD-20, ART, Foolbox`` in even cells and the
  reverse in odd cells, so neither the library nor ART always runs first or
  right after the same method. One sample each: these runs are long (seconds
  to minutes), and the per-cell ratio next to its median over cells is given.
* The same batch size (``--eval_batch_size``) for the library, PGD-20, ART's
  estimator and attacks (its Square attack keeps its own default, 128), and
  the Foolbox calls (which get the data in batches of that size).
* Threads: ``--threads`` sets TensorFlow's intra- and inter-op pools (0:
  TensorFlow's default); numpy's BLAS (used by ART's numpy steps) keeps its
  own default.

Usage::

  python -m benchmarks.bench_evaluation
  python -m benchmarks.bench_evaluation --num_examples=100 --epochs=5 --norms=inf
  python -m benchmarks.bench_evaluation --peers=foolbox --threads=2
  python -m benchmarks.bench_evaluation --norms=inf --methods=adversarial  # one piece

The peers are in the ``bench`` extra (``pip install -e .[bench]``: IBM ART,
Foolbox, and ``multiprocess``, which ART's AutoAttack imports). Writes
``results.json`` and ``table.md`` to ``--output_dir``.
"""

import dataclasses
import functools
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import keras_opnorm
from benchmarks import _timing
from keras_opnorm import datasets
from keras_opnorm import evaluation
from keras_opnorm.experiments import compare

_INF = float("inf")

#: ``--norms`` name -> (p, eps): the main job's radii.
NORMS = {"2": (2.0, 1.0), "inf": (_INF, 0.1)}
PEERS = ("art", "foolbox")
#: Method keys, in (even-cell) running order, and their column labels.
LABELS = {
    "library": "library AA",
    "pgd20": "PGD-20",
    "art_aa": "ART AA",
    "fb_pgd": "FB PGD",
    "fb_fmn": "FB FMN",
    "fb_ddn": "FB DDN",
}
# The main job's row labels, atomic text writer and log filter, shared with compare.
# pylint: disable=protected-access
_MODEL_LABELS = compare._LABELS
_write_text_atomic = compare._write_text_atomic
_NoRetracingWarnings = compare._NoRetracingWarnings
# pylint: enable=protected-access
_PEER_METHODS = {"art": ("art_aa",), "foolbox": ("fb_pgd", "fb_fmn", "fb_ddn")}
# Relative slack of the shared verification, as in the library.
_RTOL = 1e-5

_NUM_EXAMPLES = flags.DEFINE_integer(
    "num_examples", None, "Test examples (the first ones of the digits test split the main "
    "job uses; default: the whole split).")
_NORMS = flags.DEFINE_list("norms", list(NORMS), "Norms: 2 (eps 1.0) and/or inf (eps 0.1).")
_PEERS = flags.DEFINE_list("peers", list(PEERS), "Peer libraries: art and/or foolbox.")
_THREADS = flags.DEFINE_integer(
    "threads", 0, "TensorFlow intra- and inter-op threads (0: TensorFlow's default).")
_EVAL_BATCH_SIZE = flags.DEFINE_integer(
    "eval_batch_size", 256, "Examples per attack batch, the same for every method.")
# --epochs, --seed, --output_dir and the training hyper-parameters (--batch_size,
# --learning_rate, --attack_steps, --at_weight, --opnorm_weight, ...) are the flags of
# keras_opnorm.experiments.compare, defined when it is imported: the same names, meanings
# and defaults as the main job; --methods picks the models (default: all four, a subset
# splits a long run into pieces). Its --dataset, --model, --p, --q, --epsilon and
# --num_seeds are fixed here.
_FIXED = ("dataset", "model", "p", "q", "epsilon", "num_seeds")
flags.FLAGS.set_default("output_dir", os.path.join("outputs", "bench_evaluation"))
_FB_STEPS = flags.DEFINE_integer("fb_steps", 100, "Steps of Foolbox's PGD.")
_FB_RESTARTS = flags.DEFINE_integer("fb_restarts", 5, "Runs of Foolbox's PGD (worst case).")
_ART_EPS_STEP = flags.DEFINE_float(
    "art_eps_step", None, "ART AutoAttack's eps_step (APGD's initial step); default 2 * eps.")


# ----------------------------------------------------------------------------
# The shared check.


def _lp(a, p):
  a = np.abs(a.reshape(a.shape[0], -1)).astype(np.float64)
  if math.isinf(p):
    return a.max(axis=1)
  return np.power(np.power(a, p).sum(axis=1), 1.0 / p)


def predict(model, x, batch_size):
  """Integer predictions of ``model`` (logits) on numpy ``x``, in batches."""
  out = [np.argmax(model(x[i:i + batch_size], training=False), axis=-1)
         for i in range(0, len(x), batch_size)]
  return np.concatenate(out).astype(np.int64)


def verified_robust(model, x, y, x_adv, *, epsilon, p, batch_size, clip=(0.0, 1.0)):
  """Per example: correct on ``x`` and ``x_adv`` is not a valid adversarial point.

  ``x_adv`` breaks an example if it is finite, inside ``clip``, within
  ``||x_adv - x||_p <= eps (1 + 1e-5)`` plus one float rounding per
  coordinate, and misclassified. The same check for every method.

  Args:
    model: the Keras model (logits).
    x: clean inputs, float32 ``[n, ...]``.
    y: integer labels ``[n]``.
    x_adv: the method's points, shaped like ``x``.
    epsilon: the radius.
    p: the norm.
    batch_size: prediction batch size.
    clip: the valid input range. Defaults to `(0.0, 1.0)`.

  Returns:
    A boolean ``[n]`` array.
  """
  x_adv = np.asarray(x_adv, np.float32).reshape(x.shape)
  ulp = np.spacing(np.maximum(np.abs(x), np.abs(x_adv)))
  flat = x_adv.reshape(len(x), -1)
  valid = np.isfinite(flat).all(axis=1)
  valid &= _lp(x_adv.astype(np.float64) - x, p) <= epsilon * (1 + _RTOL) + _lp(ulp, p)
  valid &= (flat >= clip[0]).all(axis=1) & (flat <= clip[1]).all(axis=1)
  safe = np.where(np.isfinite(x_adv), x_adv, x)
  broken = valid & (predict(model, safe, batch_size) != y)
  return (predict(model, x, batch_size) == y) & ~broken


# ----------------------------------------------------------------------------
# The methods. Each returns (robust [n] bool, extra dict); timed by the caller.


@functools.lru_cache(maxsize=None)
def library_cascade():
  """``(version, attacks)`` for `auto_attack`: the standard cascade where it is complete.

  Until ``keras_opnorm.attacks.square`` exists the standard cascade cannot
  run; the benchmark then runs the standard cascade without its last stage
  (APGD-CE, APGD-T, FAB-T with the standard budgets) and says so in the table.
  Decided once per process, so that every cell of a run uses the same cascade.
  """
  if importlib.util.find_spec("keras_opnorm.attacks.square") is None:
    return "custom", ("apgd-ce", "apgd-t", "fab-t")
  return "standard", None


def run_library(model, x, y, *, epsilon, p, batch_size, seed):
  version, attacks = library_cascade()
  result = evaluation.auto_attack(
      model, x, y, epsilon=epsilon, p=p, version=version,
      attacks=None if attacks is None else list(attacks), clip=(0.0, 1.0),
      batch_size=batch_size, seed=seed, verbose=0)
  robust = np.asarray([b == "" for b in result.broken_by])
  check = verified_robust(model, x, y, result.x_adv, epsilon=epsilon, p=p,
                          batch_size=batch_size)
  extra = {"version": version, "attacks": list(result.attacks),
           "robust_accuracy_by_attack": list(result.robust_accuracy_by_attack),
           "own_run_time_s": result.run_time_s,
           "own": result.robust_accuracy,
           "verified_recount": float(check.mean())}
  return robust, extra


def run_pgd20(model, x, y, *, epsilon, p, batch_size, seed):
  keras.utils.set_random_seed(seed)
  curve = evaluation.robust_accuracy(model, x, y, epsilons=[epsilon], p=p, num_steps=20,
                                     num_restarts=1, clip=(0.0, 1.0), batch_size=batch_size)
  # robust_accuracy returns the curve only; its per-example flags are not public.
  return None, {"own": curve.accuracy_at(epsilon)}


def run_art(model, x, y, *, epsilon, p, batch_size, seed, image_shape, eps_step=None):
  # pylint: disable=g-import-not-at-top
  from art.attacks.evasion import AutoAttack
  from art.estimators.classification import TensorFlowV2Classifier
  # pylint: enable=g-import-not-at-top
  keras.utils.set_random_seed(seed)  # ART draws with numpy
  # ART's Square attack takes images only ([n, h, w, c]): ART sees the digits as 8x8x1
  # images through a reshape in front of the same model (same weights).
  images = x.reshape((len(x),) + image_shape)
  inputs = keras.Input(image_shape)
  wrapped = keras.Model(inputs, model(keras.layers.Reshape(x.shape[1:])(inputs)))
  classifier = TensorFlowV2Classifier(
      model=wrapped, nb_classes=int(model.output_shape[-1]), input_shape=image_shape,
      loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      clip_values=(0.0, 1.0))
  attack = AutoAttack(estimator=classifier, norm=np.inf if math.isinf(p) else int(p),
                      eps=epsilon, eps_step=2 * epsilon if eps_step is None else eps_step,
                      batch_size=batch_size)
  for a in attack.attacks:  # progress bars only: the attacks themselves are untouched
    if "verbose" in a.attack_params:
      a.set_params(verbose=False)
  x_adv = attack.generate(x=images, y=y).reshape(x.shape)
  robust = verified_robust(model, x, y, x_adv, epsilon=epsilon, p=p, batch_size=batch_size)
  own = (predict(model, x, batch_size) == y) & (predict(model, x_adv, batch_size) == y)
  return robust, {"attacks": [type(a).__name__ for a in attack.attacks],
                  "eps_step": float(attack.eps_step), "own": float(own.mean())}


def _foolbox_batches(run, x, y, batch_size):
  points, success = [], []
  for i in range(0, len(x), batch_size):
    xb = tf.constant(x[i:i + batch_size])
    yb = tf.constant(y[i:i + batch_size].astype(np.int64))
    pts, ok = run(xb, yb)
    points.append(np.asarray(pts))
    success.append(np.asarray(ok))
  return np.concatenate(points), np.concatenate(success)


def run_foolbox(name, model, x, y, *, epsilon, p, batch_size, seed, steps, restarts):
  import foolbox as fb  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)  # Foolbox draws with TensorFlow's global generator
  fmodel = fb.TensorFlowModel(model, bounds=(0.0, 1.0))
  linf = math.isinf(p)
  if name == "fb_pgd":
    attack = (fb.attacks.LinfPGD if linf else fb.attacks.L2PGD)(steps=steps).repeat(restarts)

    def run(xb, yb):
      _, clipped, ok = attack(fmodel, xb, yb, epsilons=epsilon)
      return clipped, ok
  else:
    if name == "fb_fmn":
      attack = fb.attacks.LInfFMNAttack() if linf else fb.attacks.L2FMNAttack()
    else:
      attack = fb.attacks.DDNAttack()

    def run(xb, yb):
      raw, _, ok = attack(fmodel, xb, yb, epsilons=None)  # minimise: the raw point
      return raw, ok
  x_adv, ok = _foolbox_batches(run, x, y, batch_size)
  robust = verified_robust(model, x, y, x_adv, epsilon=epsilon, p=p, batch_size=batch_size)
  extra = {"attack": repr(attack)}
  if name == "fb_pgd":
    extra["own"] = float(1.0 - ok.mean())
  else:
    norms = _lp(x_adv.astype(np.float64) - x, p)
    found = np.where(ok, norms, np.inf)
    extra["own"] = float(np.mean(found > epsilon))
    extra["median_min_norm"] = float(np.median(found))
  return robust, extra


# ----------------------------------------------------------------------------
# One (norm, model) cell.


@dataclasses.dataclass
class Cell:
  norm: str
  method: str  # the training method of the model (compare.METHODS)
  clean_accuracy: float
  robust: dict  # evaluation method -> robust accuracy
  seconds: dict  # evaluation method -> wall seconds
  order: list
  extra: dict

  def best_peer(self, peers):
    values = {k: self.robust[k] for k in peers if k in self.robust}
    if not values:
      return None, None
    key = min(values, key=values.get)
    return key, values[key]


def methods_for(norm, peers):
  out = ["library", "pgd20"]
  for peer in PEERS:
    if peer in peers:
      out += [m for m in _PEER_METHODS[peer] if not (m == "fb_ddn" and norm != "2")]
  return out


def evaluate_cell(model, x, y, norm, method_names, *, order_index, seed, batch_size,
                  image_shape):
  p, epsilon = NORMS[norm]
  order = method_names if order_index % 2 == 0 else method_names[::-1]
  common = dict(epsilon=epsilon, p=p, batch_size=batch_size, seed=seed)
  robust, seconds, extra, flags_by = {}, {}, {}, {}
  for name in order:
    start = time.perf_counter()
    if name == "library":
      r, e = run_library(model, x, y, **common)
    elif name == "pgd20":
      r, e = run_pgd20(model, x, y, **common)
    elif name == "art_aa":
      r, e = run_art(model, x, y, eps_step=_ART_EPS_STEP.value, image_shape=image_shape,
                     **common)
    else:
      r, e = run_foolbox(name, model, x, y, steps=_FB_STEPS.value,
                         restarts=_FB_RESTARTS.value, **common)
    seconds[name] = time.perf_counter() - start
    robust[name] = float(r.mean()) if r is not None else e["own"]
    flags_by[name] = r
    extra[name] = e
    print(f"    {LABELS[name]:<10} robust {robust[name]:.4f} in {seconds[name]:7.1f} s",
          flush=True)
  peer_flags = [flags_by[m] for m in method_names if m not in ("library", "pgd20")]
  if peer_flags:
    robust["peers_union"] = float(np.logical_and.reduce(peer_flags).mean())
  return robust, seconds, order, extra


# ----------------------------------------------------------------------------
# Report.


def _fmt_s(v):
  return "n/a" if v is None else (f"{v:.1f}" if v < 100 else f"{v:.0f}")


def format_tables(cells, methods_by_norm, num_examples, epochs, seed, machine):
  """The accuracy and the time tables as Markdown, with the legend."""
  lines = []
  all_methods = [m for m in LABELS if any(m in ms for ms in methods_by_norm.values())]
  peers = [m for m in all_methods if m not in ("library", "pgd20")]
  header = ["norm, eps", "model", "clean"] + [LABELS[m] for m in all_methods]
  if peers:
    header += ["peers (union)", "best peer", "library - best peer"]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "|".join(["---"] * len(header)) + "|")
  for c in cells:
    p, eps = NORMS[c.norm]
    row = [f"l{c.norm}, {eps:g}", _MODEL_LABELS[c.method], f"{c.clean_accuracy:.3f}"]
    row += [f"{c.robust[m]:.3f}" if m in c.robust else "-" for m in all_methods]
    if peers:
      key, best = c.best_peer(peers)
      row += [f"{c.robust['peers_union']:.3f}" if "peers_union" in c.robust else "-",
              f"{best:.3f} ({LABELS[key]})" if key else "-",
              f"{c.robust['library'] - best:+.3f}" if key else "-"]
    lines.append("| " + " | ".join(row) + " |")
  lines.append("")
  header = ["norm, eps", "model"] + [f"{LABELS[m]} s" for m in all_methods]
  if "art_aa" in all_methods:
    header.append("ART AA / library")
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "|".join(["---"] * len(header)) + "|")
  ratios = []
  for c in cells:
    p, eps = NORMS[c.norm]
    row = [f"l{c.norm}, {eps:g}", _MODEL_LABELS[c.method]]
    row += [_fmt_s(c.seconds.get(m)) if m in c.seconds else "-" for m in all_methods]
    if "art_aa" in all_methods:
      if "art_aa" in c.seconds:
        ratios.append(c.seconds["art_aa"] / c.seconds["library"])
        row.append(f"{ratios[-1]:.1f}x")
      else:
        row.append("-")
    lines.append("| " + " | ".join(row) + " |")
  if ratios:
    lines.append("")
    lines.append(f"ART AA / library wall time: median {statistics.median(ratios):.1f}x over "
                 f"{len(ratios)} cells (min {min(ratios):.1f}x, max {max(ratios):.1f}x); "
                 "target >= 10x.")
  version, attacks = library_cascade()
  cascade = ("version='standard' (APGD-CE, APGD-T, FAB-T, Square)" if version == "standard"
             else f"version='custom' {list(attacks)}: the standard cascade WITHOUT Square "
             "(keras_opnorm.attacks.square is not available in this checkout)")
  lines += [
      "",
      f"digits 8x8 MLP, the main job's models (compare.train defaults, {epochs} epochs, seed "
      f"{seed}), trained at each norm's eps; {num_examples} test examples; {machine}.",
      "Robust accuracy: share of examples classified correctly on x and on the method's "
      "point, checked the same way for every method (misclassified, in [0, 1], "
      "||x_adv - x||_p <= eps (1 + 1e-5)). library AA: keras_opnorm.evaluation.auto_attack "
      f"{cascade}. PGD-20: "
      "keras_opnorm.evaluation.robust_accuracy, 1 restart. ART AA: art AutoAttack, default "
      "attack list (APGD-CE, APGD-DLR 5 restarts each, DeepFool, Square 5 restarts), "
      "eps_step = 2 eps unless --art_eps_step. FB PGD: Foolbox PGD, "
      f"{_FB_STEPS.value} steps, {_FB_RESTARTS.value} runs, worst case per example. "
      "FB FMN / FB DDN: Foolbox minimum-norm attacks, robust if the smallest norm found > eps.",
      "peers (union): robust only if no peer method breaks it. library - best peer: the "
      "library's robust accuracy minus the lowest single peer's (target <= +0.005).",
      "Wall times: one cold run of each method per model (warm-up, tracing and wrapping "
      "included for all), the methods' order reversed every other cell.",
  ]
  return "\n".join(lines) + "\n"


def _machine():
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  threads = _THREADS.value or "TensorFlow default"
  return (f"{os.cpu_count()}-core CPU ({cpu}), threads {threads}, "
          f"{time.strftime('%Y-%m-%d')}")


def _versions():
  out = {"python": platform.python_version(), "tensorflow": tf.__version__,
         "keras": keras.__version__, "keras_opnorm": keras_opnorm.__version__,
         "numpy": np.__version__}
  for name, module in (("adversarial-robustness-toolbox", "art"), ("foolbox", "foolbox")):
    try:
      out[name] = __import__(module).__version__
    except ImportError:
      out[name] = None
  try:
    out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                       text=True, check=False).stdout.strip() or None
  except OSError:
    out["git_commit"] = None
  return out


def _check_flags():
  norms = list(dict.fromkeys(n.strip() for n in _NORMS.value if n.strip()))
  if not norms or any(n not in NORMS for n in norms):
    raise app.UsageError(f"--norms must be a comma-separated list from {', '.join(NORMS)}. "
                         f"Received: --norms={','.join(_NORMS.value)!r}")
  peers = list(dict.fromkeys(p.strip() for p in _PEERS.value if p.strip()))
  if any(p not in PEERS for p in peers):
    raise app.UsageError(f"--peers must be a comma-separated list from {', '.join(PEERS)}. "
                         f"Received: --peers={','.join(_PEERS.value)!r}")
  fixed = [name for name in _FIXED if flags.FLAGS[name].present]
  if fixed:
    raise app.UsageError(f"--{fixed[0]} is fixed by this benchmark (the main job's digits MLP, "
                         "one seed, the radii of --norms). "
                         f"Received: --{fixed[0]}={flags.FLAGS[fixed[0]].value!r}")
  for name in ("epochs", "eval_batch_size", "fb_steps", "fb_restarts"):
    value = flags.FLAGS[name].value
    if value <= 0:
      raise app.UsageError(f"--{name} must be a positive integer. Received: --{name}={value}")
  if _NUM_EXAMPLES.value is not None and _NUM_EXAMPLES.value <= 0:
    raise app.UsageError("--num_examples must be a positive integer. "
                         f"Received: --num_examples={_NUM_EXAMPLES.value}")
  missing = []
  for peer, module in (("art", "art"), ("foolbox", "foolbox")):
    if peer in peers:
      try:
        __import__(module)
        if peer == "art":
          __import__("multiprocess")  # ART's AutoAttack.generate imports it
      except ImportError as e:
        missing.append(f"{peer} ({e})")
  if missing:
    raise app.UsageError(f"--peers needs the `bench` extra (pip install -e .[bench]); "
                         f"missing: {', '.join(missing)}")
  return norms, peers


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  norms, peers = _check_flags()
  _timing.set_threads(_THREADS.value)
  logger = tf.get_logger()
  logger.addFilter(_NoRetracingWarnings())
  wall_start = time.perf_counter()
  seed, batch_size = flags.FLAGS.seed, _EVAL_BATCH_SIZE.value
  x, y, info = datasets.load_arrays("digits", split="test", max_examples=_NUM_EXAMPLES.value,
                                    seed=seed, flatten=True)
  y = y.astype(np.int64)
  image_shape = datasets.load_arrays("digits", split="test", max_examples=1,
                                     seed=seed)[2].input_shape
  print(f"digits: {len(y)} test examples; norms {norms}; peers {peers or 'none'}", flush=True)
  cells, configs, methods_by_norm = [], {}, {}
  for norm in norms:
    p, epsilon = NORMS[norm]
    cfg = dataclasses.replace(compare.config_from_flags(), dataset="digits", model="mlp",
                              p=p, epsilon=epsilon, num_seeds=1,
                              verbose=0, plots=False)
    cfg = compare.validate(cfg)
    configs[norm] = cfg.to_dict()
    methods_by_norm[norm] = methods_for(norm, peers)
    for method in cfg.methods:
      print(f"[l{norm}, eps {epsilon:g}] training {method}: {compare.describe(method, cfg)}",
            flush=True)
      model, record = compare.train(method, cfg, info, flatten=True)
      clean = float((predict(model, x, batch_size) == y).mean())
      print(f"    trained in {record['train_seconds']:.0f} s, clean accuracy {clean:.3f}",
            flush=True)
      robust, seconds, order, extra = evaluate_cell(
          model, x, y, norm, methods_by_norm[norm], order_index=len(cells), seed=seed,
          batch_size=batch_size, image_shape=image_shape)
      cells.append(Cell(norm=norm, method=method, clean_accuracy=clean, robust=robust,
                        seconds=seconds, order=order,
                        extra={**extra, "train_seconds": record["train_seconds"]}))
      keras.backend.clear_session()
  machine = _machine()
  table = format_tables(cells, methods_by_norm, len(y), flags.FLAGS.epochs, seed, machine)
  print("\n" + table)
  os.makedirs(flags.FLAGS.output_dir, exist_ok=True)
  _write_text_atomic(os.path.join(flags.FLAGS.output_dir, "table.md"), table)
  peer_keys = [m for m in LABELS if m not in ("library", "pgd20")]
  results = {
      "num_examples": int(len(y)),
      "norms": {n: {"p": NORMS[n][0], "epsilon": NORMS[n][1], "methods": methods_by_norm[n],
                    "training_config": configs[n]} for n in norms},
      "peers": peers,
      "batch_size": batch_size,
      "fb_steps": _FB_STEPS.value,
      "fb_restarts": _FB_RESTARTS.value,
      "timing": "one cold run per method and model, warm-up included for all; order "
                "reversed every other cell",
      "cells": [{**dataclasses.asdict(c),
                 "best_peer": c.best_peer(peer_keys)[0],
                 "library_minus_best_peer": (None if c.best_peer(peer_keys)[0] is None else
                                             c.robust["library"] - c.best_peer(peer_keys)[1]),
                 "art_over_library_seconds": (c.seconds["art_aa"] / c.seconds["library"]
                                              if "art_aa" in c.seconds else None)}
                for c in cells],
      "machine": machine,
      "versions": _versions(),
      "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
      "wall_seconds": time.perf_counter() - wall_start,
  }
  compare.write_json_atomic(os.path.join(flags.FLAGS.output_dir, "results.json"), results)
  print(f"wrote {os.path.join(flags.FLAGS.output_dir, 'results.json')} and table.md in "
        f"{results['wall_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
  app.run(main)
