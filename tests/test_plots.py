"""Tests for keras_opnorm.plots: PNGs are written, colours are per method."""

import os
import sys
from unittest import mock

from absl.testing import parameterized
import tensorflow as tf

from keras_opnorm import evaluation
from keras_opnorm import plots

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_METHODS = ("standard", "adversarial", "opnorm", "spectral")


def _curves():
  eps = [0.0, 0.25, 0.5, 1.0]
  acc = {"standard": [0.98, 0.5, 0.1, 0.0], "adversarial": [0.97, 0.85, 0.6, 0.35],
         "opnorm": [0.98, 0.84, 0.58, 0.33], "spectral": [0.98, 0.55, 0.12, 0.01]}
  return {m: evaluation.RobustAccuracyCurve(
      epsilons=eps, accuracies=acc[m], clean_accuracy=acc[m][0], p=2.0,
      num_examples=100, num_steps=20) for m in _METHODS}


def _alignments():
  out = {}
  for i, m in enumerate(_METHODS):
    mean = [0.7 / (r + 1) ** (0.5 + 0.2 * i) for r in range(10)]
    out[m] = evaluation.AlignmentResult(
        epsilon=1.0, p=2.0, q=2.0, loss="crossentropy", k=10, num_examples=50,
        mean=mean, std=[0.05] * 10, random_mean=[0.1] * 10, random_std=[0.07] * 10,
        random_expected=0.0997, singular_values=[5.0 / (r + 1) for r in range(10)],
        logit_shift=[0.1] * 10, centered=True, centered_mean=[v * 1.1 for v in mean],
        centered_std=[0.05] * 10, centered_singular_values=[4.0 / (r + 1) for r in range(10)])
  return out


def _alignment_curves():
  eps = [0.25, 0.5, 1.0, 2.0]
  return {m: evaluation.AlignmentCurve(
      epsilons=eps, mean=[0.8 - 0.1 * i - 0.05 * j for j in range(4)], std=[0.05] * 4,
      random_mean=0.1, random_expected=0.0997, p=2.0, q=2.0, loss="logit",
      num_examples=50) for i, m in enumerate(_METHODS)}


def _spectra():
  return {m: evaluation.SpectrumResult(
      k=10, num_examples=50, mean=[(10.0 / (i + 1)) / (r + 1) ** 1.5 for r in range(10)],
      std=[0.1] * 10) for i, m in enumerate(_METHODS)}


class PlotsTest(parameterized.TestCase, tf.test.TestCase):

  def _check_png(self, path):
    self.assertTrue(os.path.exists(path))
    self.assertGreater(os.path.getsize(path), 5000)
    with open(path, "rb") as f:
      self.assertEqual(f.read(8), _PNG_MAGIC)

  @parameterized.named_parameters(
      ("robust_accuracy", plots.plot_robust_accuracy, _curves, {}),
      ("alignment_by_rank", plots.plot_alignment_by_rank, _alignments, {}),
      ("alignment_by_rank_centered", plots.plot_alignment_by_rank, _alignments,
       {"centered": True}),
      ("alignment_vs_epsilon", plots.plot_alignment_vs_epsilon, _alignment_curves, {}),
      ("spectra", plots.plot_spectra, _spectra, {}),
  )
  def test_writes_png(self, plot, make, kwargs):
    path = os.path.join(self.get_temp_dir(), "sub", plot.__name__ + ".png")
    self.assertEqual(plot(make(), path, **kwargs), path)
    self._check_png(path)

  def test_accepts_to_dict_output(self):
    path = os.path.join(self.get_temp_dir(), "from_dict.png")
    curves = {m: c.to_dict() for m, c in _curves().items()}
    curves["linf"] = dict(curves["standard"], p="inf")
    self._check_png(plots.plot_robust_accuracy(curves, path))

  def test_colours_fixed_per_method_and_distinct(self):
    self.assertEqual(plots.method_color("adversarial"), plots.METHOD_COLORS["adversarial"])
    self.assertLen(set(plots.METHOD_COLORS.values()), 4)
    styles = plots._styles({"opnorm": 0, "new_a": 0, "new_b": 0})  # pylint: disable=protected-access
    self.assertEqual(styles["opnorm"][0], plots.METHOD_COLORS["opnorm"])
    colours = [s[0] for s in styles.values()]
    self.assertLen(set(colours), 3)

  def test_centered_without_values_is_an_error(self):
    results = _alignments()
    results["standard"] = evaluation.AlignmentResult(
        **{**results["standard"].__dict__, "centered": False, "centered_mean": None})
    with self.assertRaisesRegex(ValueError, "centered=True"):
      plots.plot_alignment_by_rank(results, os.path.join(self.get_temp_dir(), "x.png"),
                                   centered=True)

  def test_empty_results(self):
    with self.assertRaisesRegex(ValueError, "non-empty dict"):
      plots.plot_spectra({}, os.path.join(self.get_temp_dir(), "x.png"))

  def test_missing_matplotlib_names_the_extra(self):
    with mock.patch.dict(sys.modules, {"matplotlib": None, "matplotlib.figure": None,
                                       "matplotlib.backends.backend_agg": None}):
      with self.assertRaisesRegex(ImportError, "experiments"):
        plots.plot_spectra(_spectra(), os.path.join(self.get_temp_dir(), "x.png"))


if __name__ == "__main__":
  tf.test.main()
