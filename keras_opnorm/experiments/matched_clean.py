r"""The paper's protocol: every method over a grid of its constant, compared at matched clean accuracy.

Roth, Kilcher & Hofmann (NeurIPS 2020, https://arxiv.org/abs/1906.01527,
experiments) tune each method's constant so that all reach about the same clean
accuracy and compare robustness there. ``--protocol=single`` of
`keras_opnorm.experiments.compare` trains one hand-picked constant per method;
``--protocol=matched_clean`` (this module) trains each regularised method over
a grid of its constant and states the paper's claims at matched clean
accuracy:

  python -m keras_opnorm.experiments.compare --protocol=matched_clean

The constants (`GRID_FLAGS`):

* PGD AT (``--grid_adversarial``): the weight ``w`` of ``CE + w CE_adv``
  (``--at_weight``), at the training and evaluation radius ``--epsilon``. By
  the theorem AT at radius eps with weight ``w`` is ``w * eps *
  ||J||_{p,q}`` regularisation in a linear region: ``w`` is the counterpart
  of the d.d. ``lambda`` at the same eps, and the threat model trained for
  stays the one evaluated. Not the training radius: on the 8x8 digits (MLP,
  l2, eps 1, one seed, shared 2-core CPU machine, 2026-12-02) AT at w = 1
  with eps_train = 2 eps ended at clean accuracy 0.978, the standard model's
  (and robust accuracy 0.09 at eps, below the 0.21 of eps_train = eps): a
  larger radius does not trace a trade-off there. The weight does, up to a
  ceiling: clean 0.976 at w = 1, 0.964 at w = 10, 0.960 at w = 100 (as ``w``
  grows the loss tends to pure adversarial training, Adam being invariant to
  the loss' scale). AT's range of clean accuracy at this eps is that narrow;
  the matched comparisons are made inside it.
* d.d. operator-norm regularisation (``--grid_opnorm``): its ``lambda``
  (``--opnorm_weight``), at radius ``--epsilon``.
* global SNR (``--grid_spectral``): its ``lambda`` (``--spectral_weight``).

The standard model is trained once per seed: it has no constant and is the
paper's reference as trained (93.5% clean on CIFAR-10, not matched either).
Every point of every seed starts from the same initial weights and sees the
same data order as the single protocol's run of that seed
(`keras_opnorm.experiments.compare.train`). Each point is evaluated with its
clean accuracy, the headline robust accuracy (the ``--evaluation`` ensemble,
as in the single protocol) and PGD-``num_steps`` at ``--epsilon`` (cheap);
the alignment, spectra, operator norms, radius sweeps and FMN radii of the
single protocol are left out (they would multiply its cost by the grid size).

How the default grids were chosen (`DEFAULT_GRIDS`): four points each (the
run-time budget of the full run: 13 models per seed), log-spaced by a factor
``sqrt(10)``, each starting at the single protocol's constant (AT w = 1, d.d.
lambda 0.1, SNR lambda 0.01: clean accuracy within a point of the standard
model's) and reaching past the end of AT's range of clean accuracy, so that
every AT point can find a partner. From a one-seed pilot of the clean
accuracy (digits, l2, eps 1; standard 0.978): AT 0.976 / 0.964 / 0.960 at
w = 1 / 10 / 100; d.d. 0.980 / 0.969 / 0.940 at lambda = 0.1 / 1 / 10; SNR
0.980 / 0.956 at lambda = 0.01 / 0.1. AT's grid stops at 31.6, where it has
nearly reached its ceiling; the d.d. and SNR grids stop one step below the
pilot's lowest clean accuracies (lambda 3.16 and 0.316). The grids were set
from these clean accuracies alone, before any matched robust accuracy was
seen, not by which grid makes a claim hold.

Matching (`match_points`, `matched_comparisons`): PGD AT is the reference, as
in the paper. For every AT point ``a`` (constant ``c_a``, mean clean accuracy
over seeds ``C_a``) and every other regularised method ``M``, the matched point
of ``M`` is its grid point whose mean clean accuracy is nearest to ``C_a``,
if ``|C_M - C_a| <= tol`` (``--match_tolerance``, 0.01 = one point;
ties: the smaller constant); else ``M`` has no match at ``a``. A matched
comparison is an AT point with its matches; the table lists the constants.

Claims (`claim_margins`, `claim_verdicts`), as in
`keras_opnorm.experiments.compare.check_claims`, on the headline robust
accuracies ``R``:

* ``opnorm_within_3_points_of_adversarial``: ``|R_dd - R_AT| <= 0.03``
  (margin: the difference ``R_dd - R_AT``);
* ``adversarial_and_opnorm_20_points_above_standard``:
  ``min(R_AT, R_dd) - R_std >= 0.20`` (margin: the left side);
* ``spectral_below_both``: ``R_SNR < min(R_AT, R_dd)`` (margin:
  ``min(R_AT, R_dd) - R_SNR``).

Decision rule (`verdict`): at one matched comparison the claim is tested in
every seed on that seed's robust accuracies of the matched points (the same
seed's initial weights for all of them); it **holds** if it holds in every
seed, **fails** if it fails in every seed, and is **inconclusive** otherwise.
The margin is reported as its mean over seeds ± its standard deviation over
seeds. Over the comparisons: **holds** if it holds at every matched
comparison where it can be tested, **fails** if it fails at every one,
**inconclusive** otherwise (it depends on the clean-accuracy level or on the
seed), and **inconclusive** when no comparison has the points it needs (no
match within the tolerance). An inconclusive result is never reported as
holds. With one seed "every seed" is that seed: the verdict then says
nothing about the seed spread (the std is 0).
"""

import math

import numpy as np

# The regularised methods of the protocol: method -> (grid flag, the Config
# field the grid's values set, what the value means).
GRID_FLAGS = {
    "adversarial": ("grid_adversarial", "at_weight", "w"),
    "opnorm": ("grid_opnorm", "opnorm_weight", "lambda"),
    "spectral": ("grid_spectral", "spectral_weight", "lambda"),
}

# Default grids (see the module docstring for how they were chosen).
DEFAULT_GRIDS = {
    "adversarial": (1.0, 3.16, 10.0, 31.6),
    "opnorm": (0.1, 0.316, 1.0, 3.16),
    "spectral": (0.01, 0.0316, 0.1, 0.316),
}

# One point of clean accuracy.
DEFAULT_TOLERANCE = 0.01

CLAIMS = (
    "opnorm_within_3_points_of_adversarial",
    "adversarial_and_opnorm_20_points_above_standard",
    "spectral_below_both",
)

VERDICTS = ("holds", "fails", "inconclusive")

# Float slack of the tolerance test (0.975 - 0.965 is 0.01000000000000001).
_SLACK = 1e-9


def parse_grid(values, name):
  """Parses a grid flag: positive finite numbers, sorted, repeats dropped.

  Args:
    values: the flag's values (strings or numbers).
    name: the flag's name, for the message.

  Returns:
    A tuple of floats, ascending.

  Raises:
    ValueError: if ``values`` is empty or holds a value that is not a
      positive finite number, naming the flag and the value received.
  """
  values = [v.strip() if isinstance(v, str) else v for v in (values or ())]
  values = [v for v in values if v != ""]
  text = ",".join(map(str, values))
  message = (f"--{name} must be a non-empty comma-separated list of positive numbers. "
             f"Received: --{name}={text!r}")
  if not values:
    raise ValueError(message)
  grid = []
  for v in values:
    try:
      x = float(v)
    except (TypeError, ValueError):
      raise ValueError(message + f" ({v!r} is not a number)") from None
    if isinstance(v, bool) or math.isnan(x) or math.isinf(x) or x <= 0:
      raise ValueError(message + f" ({v!r} is not positive and finite)")
    grid.append(x)
  return tuple(sorted(set(grid)))


def summarize_point(constant, per_seed):
  """Mean and std over seeds of one grid point's accuracies.

  Args:
    constant: the point's constant.
    per_seed: list of dicts with ``clean_accuracy`` and ``robust_accuracy``
      (and any other per-run numbers), one per seed, in seed order.

  Returns:
    ``{"constant", "clean_accuracy", "clean_accuracy_std", "robust_accuracy",
    "robust_accuracy_std", ..., "per_seed"}``: the mean and the population
    standard deviation (``np.std``) of every numeric field of ``per_seed``.
  """
  out = {"constant": float(constant)}
  for key, first in per_seed[0].items():
    if key == "seed" or isinstance(first, bool) or not isinstance(first, (int, float)):
      continue
    values = [float(r[key]) for r in per_seed]
    out[key] = float(np.mean(values))
    out[key + "_std"] = float(np.std(values))
  out["per_seed"] = list(per_seed)
  return out


def match_points(reference, points, *, tolerance=DEFAULT_TOLERANCE):
  """For each reference point, the index of the point of equal clean accuracy.

  The nearest mean clean accuracy wins if it is within ``tolerance``; ties go
  to the earlier point (the smaller constant of an ascending grid).

  Args:
    reference: list of points with a mean ``clean_accuracy``.
    points: list of points of another method.
    tolerance: the largest ``|clean - clean_ref|`` that counts as matched.
      Defaults to `DEFAULT_TOLERANCE` (one point).

  Returns:
    A list, one entry per reference point: an index into ``points`` or
    ``None`` (no point within ``tolerance``).
  """
  out = []
  for r in reference:
    best, gap = None, None
    for i, p in enumerate(points):
      d = abs(p["clean_accuracy"] - r["clean_accuracy"])
      if d <= tolerance + _SLACK and (gap is None or d < gap - _SLACK):
        best, gap = i, d
    out.append(best)
  return out


def matched_comparisons(grids, *, tolerance=DEFAULT_TOLERANCE):
  """The matched comparisons: each AT point with the points matched to it.

  Args:
    grids: ``method -> list of points`` (`summarize_point`) for
      ``adversarial`` and any of ``opnorm``, ``spectral``.
    tolerance: see `match_points`. Defaults to `DEFAULT_TOLERANCE`.

  Returns:
    A list, one per AT point in grid order, of ``{"clean_accuracy": the AT
    point's, "adversarial": i, "opnorm": j or None, "spectral": k or None}``
    (indices into the grids; a method not in ``grids`` is ``None``).
  """
  reference = grids.get("adversarial") or []
  matches = {m: match_points(reference, grids[m], tolerance=tolerance)
             if m in grids else [None] * len(reference) for m in ("opnorm", "spectral")}
  return [{"clean_accuracy": a["clean_accuracy"], "adversarial": i,
           "opnorm": matches["opnorm"][i], "spectral": matches["spectral"][i]}
          for i, a in enumerate(reference)]


def claim_margins(robust):
  """The claims on one set of robust accuracies.

  Args:
    robust: ``method -> robust accuracy`` with ``standard``, ``adversarial``,
      ``opnorm`` and optionally ``spectral``.

  Returns:
    ``claim name -> (holds, margin name, margin)``; ``spectral_below_both``
    only if ``spectral`` is given.
  """
  ours = min(robust["adversarial"], robust["opnorm"])
  out = {
      CLAIMS[0]: (abs(robust["opnorm"] - robust["adversarial"]) <= 0.03 + _SLACK,
                  "difference", robust["opnorm"] - robust["adversarial"]),
      CLAIMS[1]: (ours - robust["standard"] >= 0.20 - _SLACK, "margin",
                  ours - robust["standard"]),
  }
  if robust.get("spectral") is not None:
    out[CLAIMS[2]] = (robust["spectral"] < ours, "margin", ours - robust["spectral"])
  return out


def verdict(holds_per_seed):
  """``"holds"`` if true in every seed, ``"fails"`` if in none, else ``"inconclusive"``.

  Args:
    holds_per_seed: booleans, one per seed (an empty list: nothing to test).

  Returns:
    One of `VERDICTS`.

  Example:

  >>> verdict([True, True, False])
  'inconclusive'
  """
  holds = [bool(h) for h in holds_per_seed]
  if not holds:
    return "inconclusive"
  if all(holds):
    return "holds"
  if not any(holds):
    return "fails"
  return "inconclusive"


def overall_verdict(verdicts):
  """Combines the verdicts of several matched comparisons (see the module docstring).

  Args:
    verdicts: the verdicts (`VERDICTS`) of the comparisons where the claim
      could be tested.

  Returns:
    ``"holds"`` if all hold, ``"fails"`` if all fail, else (and for none)
    ``"inconclusive"``.
  """
  verdicts = list(verdicts)
  for v in ("holds", "fails"):
    if verdicts and all(x == v for x in verdicts):
      return v
  return "inconclusive"


def _needs(claim):
  return ("opnorm", "spectral") if claim == CLAIMS[2] else ("opnorm",)


def claim_verdicts(grids, standard, comparisons):
  """The claims at matched clean accuracy, with their per-comparison verdicts.

  Args:
    grids: ``method -> list of points`` (`summarize_point`).
    standard: the standard model's point (its ``per_seed`` robust accuracies).
    comparisons: from `matched_comparisons`.

  Returns:
    ``claim name -> {"verdict", "comparisons": [{"clean_accuracy", the
    indices, "constants", margin name, margin name + "_std", "per_seed",
    "holds_in_seeds", "num_seeds", "verdict"}]}``; a claim with no comparison
    that has the points it needs is ``inconclusive`` with an empty list.
  """
  num_seeds = len(standard["per_seed"])
  out = {}
  for claim in CLAIMS:
    rows = []
    for comp in comparisons:
      if any(comp[m] is None for m in _needs(claim)):
        continue
      methods = ("adversarial",) + _needs(claim)
      points = {m: grids[m][comp[m]] for m in methods}
      tests = []
      for s in range(num_seeds):
        robust = {"standard": standard["per_seed"][s]["robust_accuracy"]}
        robust.update({m: points[m]["per_seed"][s]["robust_accuracy"] for m in methods})
        tests.append(claim_margins(robust)[claim])
      key = tests[0][1]
      margins = [t[2] for t in tests]
      holds = [bool(t[0]) for t in tests]
      rows.append({
          "clean_accuracy": comp["clean_accuracy"],
          **{m: comp[m] for m in methods},
          "constants": {m: points[m]["constant"] for m in methods},
          key: float(np.mean(margins)),
          key + "_std": float(np.std(margins)),
          "per_seed": [float(m) for m in margins],
          "holds_in_seeds": sum(holds),
          "num_seeds": num_seeds,
          "verdict": verdict(holds),
      })
    out[claim] = {"verdict": overall_verdict(r["verdict"] for r in rows), "comparisons": rows}
  return out


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------

_LABELS = {"standard": "standard", "adversarial": "PGD AT", "opnorm": "d.d. opnorm",
           "spectral": "global SNR"}


def constant_text(method, constant):
  """``"w=10"`` for PGD AT, ``"lambda=0.1"`` for the regularisers, ``"-"`` for standard."""
  if method == "standard":
    return "-"
  return f"{GRID_FLAGS[method][2]}={constant:g}"


def _pm(point, key, num_seeds):
  text = f"{point[key]:.3f}"
  if num_seeds > 1:
    text += f" ± {point[key + '_std']:.3f}"
  return text


def _markdown(header, rows):
  widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

  def line(cells):
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

  return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [
      line(r) for r in rows]


def claim_lines(claims):
  """The claims as printed: one line per claim, one indented line per comparison."""
  out = []
  for name, claim in claims.items():
    rows = claim["comparisons"]
    if not rows:
      out.append(f"claim {name}: inconclusive (no matched comparison: no point within "
                 "the tolerance)")
      continue
    out.append(f"claim {name}: {claim['verdict']} at matched clean accuracy "
               f"({len(rows)} matched comparison(s))")
    for r in rows:
      key = "difference" if "difference" in r else "margin"
      where = ", ".join(f"{_LABELS[m]} {constant_text(m, c)}"
                        for m, c in r["constants"].items())
      out.append(f"  at clean {r['clean_accuracy']:.3f} ({where}): {key} "
                 f"{r[key]:+.3f} ± {r[key + '_std']:.3f} over seeds; holds in "
                 f"{r['holds_in_seeds']}/{r['num_seeds']} seeds: {r['verdict']}")
  return out


def format_report(grids, standard, comparisons, claims, *, num_seeds, legend=()):
  """table.md of the protocol: the grid table, the matched comparisons, the claims.

  Args:
    grids: ``method -> list of points``.
    standard: the standard model's point, or ``None``.
    comparisons: from `matched_comparisons`.
    claims: from `claim_verdicts`.
    num_seeds: the number of seeds (``± std`` only for more than one).
    legend: lines appended after the tables. Defaults to `()`.

  Returns:
    The Markdown text.
  """
  header = ["method", "constant", "clean acc", "robust acc", "PGD acc"]
  rows = []
  first = [("standard", [standard])] if standard is not None else []
  for method, points in first + list(grids.items()):
    for p in points:
      rows.append([_LABELS[method], constant_text(method, p["constant"]),
                   _pm(p, "clean_accuracy", num_seeds), _pm(p, "robust_accuracy", num_seeds),
                   _pm(p, "robust_accuracy_pgd", num_seeds)
                   if "robust_accuracy_pgd" in p else "n/a"])
  out = ["## Grid", ""] + _markdown(header, rows)
  header = ["PGD AT", "clean acc", "robust acc", "d.d. opnorm", "clean acc", "robust acc",
            "global SNR", "clean acc", "robust acc"]
  rows = []
  for comp in comparisons:
    row = []
    for m in ("adversarial", "opnorm", "spectral"):
      i = comp[m]
      if i is None:
        row += ["no match", "", ""]
      else:
        p = grids[m][i]
        row += [constant_text(m, p["constant"]), f"{p['clean_accuracy']:.3f}",
                f"{p['robust_accuracy']:.3f}"]
    rows.append(row)
  out += ["", "## Matched comparisons", ""] + _markdown(header, rows)
  out += ["", "## Claims at matched clean accuracy", ""]
  out += ["```text"] + claim_lines(claims) + ["```"]
  out += [""] + list(legend)
  return "\n".join(out) + "\n"


def _legend(cfg, compare):
  p = compare._p_text(cfg.p)  # pylint: disable=protected-access
  seeds = (f"mean over {cfg.num_seeds} seeds {cfg.seeds[0]}..{cfg.seeds[-1]} (each its own "
           "split, initial weights and data order, shared by every point; ± one standard "
           "deviation over seeds)" if cfg.num_seeds > 1 else f"seed {cfg.seed}")
  return [
      f"{cfg.dataset} / {cfg.model}, p={p}, q={compare._p_text(cfg.q)}, "  # pylint: disable=protected-access
      f"eps={cfg.epsilon:g}, {cfg.epochs} epochs, {seeds}; --protocol=matched_clean.",
      "constant: PGD AT's weight w of CE + w CE_adv (training radius eps); d.d. opnorm's and "
      "global SNR's lambda; the standard model is trained once per seed.",
      compare._robust_legend(cfg),  # pylint: disable=protected-access
      f"PGD acc: accuracy under PGD-{cfg.num_steps} (l{p}, cross-entropy, "
      f"{cfg.num_restarts} restart(s)) at eps.",
      f"Matched comparisons: for each PGD AT point, the d.d. opnorm and global SNR points "
      f"whose mean clean accuracy is nearest to it within {cfg.match_tolerance:g} "
      "(--match_tolerance); no match: none within it.",
      "Claims: tested per seed at each matched comparison: holds if in every seed, fails if "
      "in none, else inconclusive; over the comparisons: holds (fails) if it holds (fails) "
      "at every one, else inconclusive, and inconclusive without a match. Margins: mean ± "
      "std over seeds.",
  ]


def evaluate_point(model, x, y, cfg, info, *, use_ensemble):
  """Clean accuracy, the headline robust accuracy and PGD accuracy of one model.

  The same attacks, seeds and settings as the single protocol's
  `keras_opnorm.experiments.compare.evaluate` (whose other stages are left
  out): PGD-``num_steps`` at ``[0, eps]``, then the ``--evaluation``
  ensemble where it applies.

  Args:
    model: the trained model (logits).
    x: held-out inputs.
    y: their labels.
    cfg: the `Config` of this seed.
    info: the dataset's `keras_opnorm.datasets.DatasetInfo`.
    use_ensemble: whether the headline robust accuracy is the ensemble's
      (else PGD's).

  Returns:
    ``{"clean_accuracy", "robust_accuracy", "robust_accuracy_pgd"}``.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from keras_opnorm import evaluation  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(cfg.seed)
  clip = tuple(info.input_range)
  curve = evaluation.robust_accuracy(
      model, x, y, epsilons=[0.0, cfg.epsilon], p=cfg.p, num_steps=cfg.num_steps,
      num_restarts=cfg.num_restarts, clip=clip, jit_compile=cfg.jit_compile)
  pgd = curve.accuracy_at(cfg.epsilon)
  robust = pgd
  if use_ensemble:
    robust = evaluation.auto_attack(model, x, y, epsilon=cfg.epsilon, p=cfg.p,
                                    version=cfg.evaluation, clip=clip, seed=cfg.seed,
                                    verbose=0).robust_accuracy
  return {"clean_accuracy": float(curve.clean_accuracy), "robust_accuracy": float(robust),
          "robust_accuracy_pgd": float(pgd)}


def grid_of(cfg, method):
  """The grid of ``method`` in a validated `Config` (``(0,)`` for standard)."""
  if method == "standard":
    return (0.0,)
  return tuple(getattr(cfg, GRID_FLAGS[method][0]))


def run(cfg, compare=None):
  """Runs the matched-clean protocol for a validated `Config`; writes the outputs.

  Every seed trains the standard model once and every grid point of the
  other methods in ``cfg.methods``, each from that seed's initial weights
  and data order, and evaluates it (`evaluate_point`). Writes
  ``results.json``, ``table.md`` and ``pareto.png`` (with ``--plots``).

  Args:
    cfg: a `Config` returned by `keras_opnorm.experiments.compare.validate`
      with ``protocol="matched_clean"``.
    compare: the `keras_opnorm.experiments.compare` module whose helpers
      (training, the threat model, the writers) are used; ``None`` imports
      it. The command passes itself (it may run as ``__main__``). Defaults
      to `None`.

  Returns:
    The results dict written to ``results.json``.

  Raises:
    absl.app.UsageError: if the dataset cannot be loaded.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  if compare is None:
    from keras_opnorm.experiments import compare  # pylint: disable=g-import-not-at-top

  wall_start = time.perf_counter()
  threat = compare.announce_threat_model(cfg)
  points = [(m, c) for m in cfg.methods for c in grid_of(cfg, m)]
  labels = {(m, c): m if m == "standard" else f"{m} {constant_text(m, c)}"
            for m, c in points}
  progress = compare._Progress(  # pylint: disable=protected-access
      cfg, runs=[(s, labels[pt]) for s in cfg.seeds for pt in points])
  flatten = cfg.model == "mlp"
  per_seed = {pt: [] for pt in points}
  descriptions = {}
  for seed_index, seed in enumerate(cfg.seeds):
    cfg_s = dataclasses.replace(cfg, seed=seed)
    x_eval, y_eval, info = compare.load_eval_arrays(cfg, seed, flatten)
    if seed_index == 0:
      print(f"{cfg.dataset}: {info.num_train} training / {info.num_test} test examples of "
            f"shape {info.input_shape} in {list(info.input_range)}; evaluating on "
            f"{len(y_eval)}; seeds {cfg.seeds}; protocol matched_clean: "
            f"{len(points)} models per seed.", flush=True)
      for m in cfg.methods:
        what = compare.describe(m, cfg)
        if m != "standard":
          what += f"; grid of {GRID_FLAGS[m][2]}: {', '.join(f'{c:g}' for c in grid_of(cfg, m))}"
        print(f"{m}: {what}", flush=True)
    for method, c in points:
      cfg_p = cfg_s if method == "standard" else dataclasses.replace(
          cfg_s, **{GRID_FLAGS[method][1]: c})
      model, record = compare.train(method, cfg_p, info, flatten,
                                    callbacks=[progress.heartbeat()])
      progress.trained(record)
      descriptions[(method, c)] = record["description"]
      start = time.perf_counter()
      summary = evaluate_point(model, x_eval, y_eval, cfg_p, info,
                               use_ensemble=compare._uses_ensemble(cfg))  # pylint: disable=protected-access
      eval_seconds = time.perf_counter() - start
      progress.evaluated(eval_seconds, summary)
      per_seed[(method, c)].append({
          "seed": seed, **summary, "train_seconds": record["train_seconds"],
          "seconds_per_epoch": record["seconds_per_epoch"], "eval_seconds": eval_seconds,
          "final_loss": record["history"]["loss"][-1]})
      keras.backend.clear_session()
  summaries = {pt: {"description": descriptions[pt], **summarize_point(pt[1], per_seed[pt])}
               for pt in points}
  grids = {m: [summaries[(m, c)] for c in grid_of(cfg, m)]
           for m in cfg.methods if m != "standard"}
  standard = summaries.get(("standard", 0.0))
  comparisons = matched_comparisons(grids, tolerance=cfg.match_tolerance) if (
      "adversarial" in grids) else []
  claims = {}
  if standard is not None and "adversarial" in grids and "opnorm" in grids:
    claims = claim_verdicts(grids, standard, comparisons)
    if "spectral" not in grids:
      del claims[CLAIMS[2]]
  text = format_report(grids, standard, comparisons, claims, num_seeds=cfg.num_seeds,
                       legend=_legend(cfg, compare))
  os.makedirs(cfg.output_dir, exist_ok=True)
  files = []
  if cfg.plots:
    from keras_opnorm import plots  # pylint: disable=g-import-not-at-top
    fronts = ({"standard": [standard]} if standard is not None else {})
    fronts.update(grids)
    files.append(os.path.basename(plots.plot_pareto(
        fronts, os.path.join(cfg.output_dir, "pareto.png"),
        title=(f"Clean vs robust accuracy over each method's constant ({cfg.dataset}, "
               f"$\\ell_{{{compare._p_text(cfg.p)}}}$, eps={cfg.epsilon:g})"))))  # pylint: disable=protected-access
  compare._write_text_atomic(os.path.join(cfg.output_dir, "table.md"), text)  # pylint: disable=protected-access
  methods = {}
  for m in cfg.methods:
    entry = {"label": _LABELS[m], "description": compare.describe(m, cfg)}
    if m == "standard":
      entry["points"] = [standard]
    else:
      entry.update({"constant": GRID_FLAGS[m][1], "grid": list(grid_of(cfg, m)),
                    "points": grids[m]})
    methods[m] = entry
  out = {
      "protocol": "matched_clean",
      "config": cfg.to_dict(),
      "threat_model": threat,
      "dataset": info.to_dict(),
      "eval_examples": int(len(y_eval)),
      "methods": methods,
      "match_tolerance": cfg.match_tolerance,
      "comparisons": [dict(c) for c in comparisons],
      "claims": claims,
      "plots": files,
      "environment": compare._environment(),  # pylint: disable=protected-access
      "wall_seconds": time.perf_counter() - wall_start,
  }
  for comp in out["comparisons"]:
    comp["constants"] = {m: grids[m][comp[m]]["constant"] for m in grids
                         if comp.get(m) is not None}
  compare.write_json_atomic(os.path.join(cfg.output_dir, "results.json"), out)
  print("\n" + text)
  print(f"wrote {os.path.join(cfg.output_dir, 'results.json')}, table.md"
        + (f" and {', '.join(files)}" if files else "")
        + f" in {out['wall_seconds']:.0f} s", flush=True)
  return out
