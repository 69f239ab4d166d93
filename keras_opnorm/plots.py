"""PNG plots of the evaluation results, one colour per method.

Draws the paper's figures from `keras_opnorm.evaluation` results, each as a
dict ``method name -> result``:

* `plot_robust_accuracy`: accuracy under attack vs eps.
* `plot_alignment_by_rank`: ``|cos|`` between PGD perturbations and the right
  singular vectors of ``J`` by rank, with the random-direction baseline dashed.
* `plot_alignment_vs_epsilon`: rank-1 alignment vs eps.
* `plot_spectra`: top singular values of ``J`` by rank (log scale).
* `plot_pareto`: clean vs robust accuracy over each method's grid of constants.

The paper's four methods always get the same colours (`METHOD_COLORS`), other
names the next colours of a fixed palette, so a method looks the same in every
figure. matplotlib (the ``experiments`` extra) is imported only when a plot is
drawn, and only its object-oriented API with the Agg canvas is used: the
global pyplot backend of the caller (a notebook) is left untouched.
"""

import os

__all__ = [
    "METHOD_COLORS",
    "method_color",
    "plot_robust_accuracy",
    "plot_alignment_by_rank",
    "plot_alignment_vs_epsilon",
    "plot_spectra",
    "plot_pareto",
]

# Fixed colours (matplotlib's tab10) for the paper's methods.
METHOD_COLORS = {
    "standard": "#7f7f7f",     # grey
    "adversarial": "#d62728",  # red
    "opnorm": "#1f77b4",       # blue
    "spectral": "#2ca02c",     # green
}
_PALETTE = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
_MARKERS = {"standard": "o", "adversarial": "s", "opnorm": "^", "spectral": "D"}
_LABELS = {
    "standard": "standard",
    "adversarial": "adversarial training",
    "opnorm": "d.d. operator norm",
    "spectral": "global spectral norm",
}


def method_color(method, index=0):
  """The colour of a method: fixed for the paper's four, else from a palette.

  Args:
    method: the method name.
    index: position of an unknown method among the unknown ones, so that
      different unknown methods get different colours. Defaults to `0`.

  Returns:
    A matplotlib colour string.

  Example:

  >>> method_color("opnorm")
  '#1f77b4'
  """
  if method in METHOD_COLORS:
    return METHOD_COLORS[method]
  return _PALETTE[index % len(_PALETTE)]


def _matplotlib():
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "keras_opnorm.plots needs matplotlib, which is part of the "
        "'experiments' extra: pip install 'keras-opnorm[experiments]' "
        "(or pip install matplotlib).") from e
  return Figure, FigureCanvasAgg


def _styles(results):
  """``method -> (colour, marker, label)`` with distinct colours for unknown methods."""
  if not isinstance(results, dict) or not results:
    raise ValueError(
        "`results` must be a non-empty dict mapping a method name to its "
        f"result. Received: results={results!r}")
  styles, unknown = {}, 0
  for method in results:
    styles[method] = (method_color(method, unknown), _MARKERS.get(method, "o"),
                      _LABELS.get(method, str(method)))
    unknown += method not in METHOD_COLORS
  return styles


def _new_figure(figsize=(7.6, 4.2)):
  figure_cls, canvas_cls = _matplotlib()
  fig = figure_cls(figsize=figsize, dpi=120)
  canvas_cls(fig)
  ax = fig.add_subplot(1, 1, 1)
  ax.grid(True, alpha=0.3)
  return fig, ax


def _legend(ax):
  """Legend outside the axes (never hides data); baselines listed last."""
  handles, labels = ax.get_legend_handles_labels()
  order = sorted(range(len(labels)), key=lambda i: labels[i] == "random direction")
  ax.legend([handles[i] for i in order], [labels[i] for i in order],
            loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def _loss_text(loss):
  return {"crossentropy": "cross-entropy", "logit": "logit-distance", "kl": "KL"}.get(loss, loss)


def _save(fig, path):
  path = os.fspath(path)
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, format="png")
  return path


def _p_text(p):
  return "inf" if p in (float("inf"), "inf") else f"{float(p):g}"


def _field(result, name):
  if isinstance(result, dict):
    return result[name]
  return getattr(result, name)


def _mean(result, centered, argument, method, function):
  """``result``'s ``mean`` or ``centered_mean``; raises if the latter was not computed."""
  mean = _field(result, "centered_mean" if centered else "mean")
  if mean is None:
    raise ValueError(
        f"`{argument}[{method!r}]` has no centered alignment: compute it with "
        f"`{function}(..., centered=True)`. Received: centered=True")
  return mean


def plot_robust_accuracy(curves, path, *, title=None):
  """Accuracy under PGD vs the radius eps, one line per method.

  Args:
    curves: dict ``method -> RobustAccuracyCurve`` (or its ``to_dict()``).
    path: where to write the PNG (parent folders are created).
    title: the figure title; ``None`` describes the attack. Defaults to `None`.

  Returns:
    ``path`` as a string.

  Raises:
    ImportError: without matplotlib (the ``experiments`` extra).
    ValueError: if ``curves`` is empty.
  """
  styles = _styles(curves)
  fig, ax = _new_figure()
  p, steps = None, None
  for method, curve in curves.items():
    color, marker, label = styles[method]
    ax.plot(_field(curve, "epsilons"), _field(curve, "accuracies"), color=color,
            marker=marker, linewidth=2, markersize=5, label=label)
    p, steps = _field(curve, "p"), _field(curve, "num_steps")
  ax.set_xlabel("attack radius $\\epsilon$")
  ax.set_ylabel("accuracy under attack")
  ax.set_ylim(-0.02, 1.02)
  ax.set_title(title or f"Robust accuracy (PGD-{steps}, $\\ell_{{{_p_text(p)}}}$)")
  _legend(ax)
  return _save(fig, path)


def plot_alignment_by_rank(results, path, *, centered=False, title=None):
  """Mean ``|cos|`` between PGD perturbations and singular vectors, by rank.

  Solid lines: the perturbations; dashed lines of the same colour: a random
  direction (the flat baseline). Error bars: one standard deviation over
  examples.

  Args:
    results: dict ``method -> AlignmentResult`` (or its ``to_dict()``).
    path: where to write the PNG.
    centered: plot the centered-logits alignment (``P J``) instead.
      Defaults to `False`.
    title: the figure title; ``None`` describes the attack. Defaults to `None`.

  Returns:
    ``path`` as a string.

  Raises:
    ImportError: without matplotlib.
    ValueError: if ``results`` is empty, or ``centered`` is asked for results
      computed without it.
  """
  styles = _styles(results)
  fig, ax = _new_figure()
  loss, eps = None, None
  for method, result in results.items():
    color, marker, label = styles[method]
    mean = _mean(result, centered, "results", method, "alignment")
    std = _field(result, "centered_std" if centered else "std")
    ranks = list(range(1, len(mean) + 1))
    ax.errorbar(ranks, mean, yerr=std, color=color, marker=marker, linewidth=2,
                markersize=5, capsize=2, label=label)
    ax.plot(ranks, _field(result, "random_mean"), color=color, linestyle="--",
            linewidth=1.2, alpha=0.8)
    loss, eps, p = _field(result, "loss"), _field(result, "epsilon"), _field(result, "p")
  ax.plot([], [], color="black", linestyle="--", linewidth=1.2, label="random direction")
  ax.set_xlabel("rank r of the right singular vector $v_r$ of $J$")
  ax.set_ylabel("mean |cos(perturbation, $v_r$)|")
  ax.set_xticks(ranks)
  ax.set_ylim(bottom=0.0)
  which = "centered logits $PJ$" if centered else "$J$"
  ax.set_title(title or f"Alignment with singular vectors of {which}\n"
               f"({_loss_text(loss)} PGD-$\\ell_{{{_p_text(p)}}}$, $\\epsilon$ = {eps:g})")
  _legend(ax)
  return _save(fig, path)


def plot_alignment_vs_epsilon(curves, path, *, centered=False, title=None):
  """Rank-1 alignment ``|cos(x_adv - x, v_1)|`` vs the radius eps.

  Args:
    curves: dict ``method -> AlignmentCurve`` (or its ``to_dict()``).
    path: where to write the PNG.
    centered: plot the centered-logits alignment. Defaults to `False`.
    title: the figure title. Defaults to `None`.

  Returns:
    ``path`` as a string.

  Raises:
    ImportError: without matplotlib.
    ValueError: if ``curves`` is empty or lacks the centered values.
  """
  styles = _styles(curves)
  fig, ax = _new_figure()
  loss, random_level = None, []
  for method, curve in curves.items():
    color, marker, label = styles[method]
    mean = _mean(curve, centered, "curves", method, "alignment_vs_epsilon")
    ax.plot(_field(curve, "epsilons"), mean, color=color, marker=marker, linewidth=2,
            markersize=5, label=label)
    random_level.append(_field(curve, "random_expected"))
    loss, p = _field(curve, "loss"), _field(curve, "p")
  ax.axhline(sum(random_level) / len(random_level), color="black", linestyle="--",
             linewidth=1.2, label="random direction")
  ax.set_xlabel("attack radius $\\epsilon$")
  ax.set_ylabel("mean |cos(perturbation, $v_1$)|")
  ax.set_ylim(0.0, 1.02)
  which = "$PJ$" if centered else "$J$"
  ax.set_title(title or f"Rank-1 alignment with {which} vs $\\epsilon$\n"
               f"({_loss_text(loss)} PGD-$\\ell_{{{_p_text(p)}}}$)")
  _legend(ax)
  return _save(fig, path)


def plot_spectra(spectra, path, *, title=None):
  """Top singular values ``sigma_r`` of ``J`` by rank (mean over examples), log scale.

  Args:
    spectra: dict ``method -> SpectrumResult`` (or its ``to_dict()``).
    path: where to write the PNG.
    title: the figure title. Defaults to `None`.

  Returns:
    ``path`` as a string.

  Raises:
    ImportError: without matplotlib.
    ValueError: if ``spectra`` is empty.
  """
  styles = _styles(spectra)
  fig, ax = _new_figure()
  centered = False
  for method, result in spectra.items():
    color, marker, label = styles[method]
    mean = _field(result, "mean")
    ranks = list(range(1, len(mean) + 1))
    ax.plot(ranks, mean, color=color, marker=marker, linewidth=2, markersize=5, label=label)
    centered = centered or bool(_field(result, "centered"))
  ax.set_yscale("log")
  ax.set_xlabel("rank r")
  ax.set_ylabel("singular value $\\sigma_r$ (mean over examples)")
  ax.set_xticks(ranks)
  which = "$PJ$ (centered logits)" if centered else "$J$"
  ax.set_title(title or f"Singular value spectrum of the Jacobian {which}")
  _legend(ax)
  return _save(fig, path)


def plot_pareto(fronts, path, *, title=None):
  """Clean accuracy (x) vs robust accuracy (y), one curve per method over its grid.

  Each point is a model trained with one constant (mean over seeds), with the
  standard deviation over seeds as error bars in both axes; a method with a
  single point (the standard model) is drawn as one marker. Points are joined
  in grid order (ascending constant) and labelled with their ``constant``
  where they have one.

  Args:
    fronts: dict ``method -> list of points``, each a dict with
      ``clean_accuracy``, ``robust_accuracy`` and optionally their
      ``*_std`` (as in `keras_opnorm.experiments.matched_clean`).
    path: where to write the PNG.
    title: the figure title. Defaults to `None`.

  Returns:
    ``path`` as a string.

  Raises:
    ImportError: without matplotlib.
    ValueError: if ``fronts`` is empty.
  """
  styles = _styles(fronts)
  fig, ax = _new_figure()
  for method, points in fronts.items():
    color, marker, label = styles[method]
    x = [pt["clean_accuracy"] for pt in points]
    y = [pt["robust_accuracy"] for pt in points]
    ax.errorbar(x, y, xerr=[pt.get("clean_accuracy_std", 0.0) for pt in points],
                yerr=[pt.get("robust_accuracy_std", 0.0) for pt in points], color=color,
                marker=marker, markersize=6 if len(points) == 1 else 5,
                linewidth=0 if len(points) == 1 else 2, capsize=3, label=label)
    for pt, xi, yi in zip(points, x, y):
      if len(points) > 1 and pt.get("constant") is not None:
        ax.annotate(f"{pt['constant']:g}", (xi, yi), textcoords="offset points",
                    xytext=(4, 4), fontsize=7, color=color)
  ax.set_xlabel("clean accuracy")
  ax.set_ylabel("robust accuracy")
  ax.set_title(title or "Clean vs robust accuracy over each method's constant")
  _legend(ax)
  return _save(fig, path)
