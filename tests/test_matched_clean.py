"""Tests for keras_opnorm.experiments.matched_clean (the matched-clean-accuracy protocol)."""

import json
import os

from absl.testing import flagsaver
from absl.testing import parameterized
import pytest
import tensorflow as tf

from keras_opnorm.experiments import matched_clean

_CLAIMS = matched_clean.CLAIMS


def _point(constant, clean, robust):
  """A grid point from per-seed (clean, robust) accuracies."""
  per_seed = [{"seed": s, "clean_accuracy": c, "robust_accuracy": r}
              for s, (c, r) in enumerate(zip(clean, robust))]
  return matched_clean.summarize_point(constant, per_seed)


class ParseGridTest(parameterized.TestCase, tf.test.TestCase):

  def test_sorted_without_repeats(self):
    self.assertEqual(matched_clean.parse_grid(["1", " 0.1", "1", "3.16"], "grid_opnorm"),
                     (0.1, 1.0, 3.16))
    self.assertEqual(matched_clean.parse_grid((10, 1.0), "grid_adversarial"), (1.0, 10.0))

  @parameterized.named_parameters(
      ("empty", [], r"--grid_opnorm must be a non-empty comma-separated list of positive "
                    r"numbers\. Received: --grid_opnorm=''"),
      ("blank", ["", " "], r"Received: --grid_opnorm=''"),
      ("negative", ["0.1", "-1"], r"Received: --grid_opnorm='0.1,-1' \('-1' is not positive"),
      ("zero", ["0"], r"'0' is not positive and finite"),
      ("non_numeric", ["0.1", "abc"], r"Received: --grid_opnorm='0.1,abc' \('abc' is not a "
                                      r"number\)"),
      ("nan", ["nan"], r"'nan' is not positive and finite"),
      ("inf", ["inf"], r"'inf' is not positive and finite"),
  )
  def test_bad_grid_names_flag_and_value(self, values, regex):
    with self.assertRaisesRegex(ValueError, regex):
      matched_clean.parse_grid(values, "grid_opnorm")


class SummaryTest(tf.test.TestCase):

  def test_mean_and_population_std_over_seeds(self):
    # clean 0.9, 0.8: mean 0.85, std 0.05; robust 0.2, 0.4: mean 0.3, std 0.1.
    p = _point(3.0, (0.9, 0.8), (0.2, 0.4))
    self.assertEqual(p["constant"], 3.0)
    self.assertAlmostEqual(p["clean_accuracy"], 0.85)
    self.assertAlmostEqual(p["clean_accuracy_std"], 0.05)
    self.assertAlmostEqual(p["robust_accuracy"], 0.3)
    self.assertAlmostEqual(p["robust_accuracy_std"], 0.1)
    self.assertLen(p["per_seed"], 2)
    self.assertNotIn("seed_std", p)


class MatchingTest(tf.test.TestCase):

  def test_nearest_within_one_point(self):
    reference = [_point(1, (0.975,), (0,)), _point(10, (0.960,), (0,)),
                 _point(100, (0.930,), (0,))]
    points = [_point(0.1, (0.980,), (0,)), _point(1, (0.969,), (0,)),
              _point(10, (0.950,), (0,))]
    # 0.975: 0.980 is 0.005 away, 0.969 is 0.006: the first.
    # 0.960: 0.969 is 0.009, 0.950 is 0.010 (exactly one point, still in): 0.969.
    # 0.930: the nearest, 0.950, is 0.02 away: no match.
    self.assertEqual(matched_clean.match_points(reference, points), [0, 1, None])
    self.assertEqual(matched_clean.match_points(reference, points, tolerance=0.0),
                     [None, None, None])

  def test_exactly_one_point_apart_matches_despite_float_rounding(self):
    # 0.975 - 0.965 == 0.010000000000000009 in floating point.
    self.assertEqual(matched_clean.match_points([_point(1, (0.975,), (0,))],
                                                [_point(1, (0.965,), (0,))]), [0])

  def test_tie_goes_to_the_smaller_constant(self):
    reference = [_point(1, (0.97,), (0,))]
    points = [_point(0.1, (0.975,), (0,)), _point(1, (0.965,), (0,))]
    self.assertEqual(matched_clean.match_points(reference, points), [0])

  def test_comparisons_use_adversarial_as_reference(self):
    grids = {"adversarial": [_point(1, (0.97,), (0,)), _point(10, (0.90,), (0,))],
             "opnorm": [_point(0.1, (0.965,), (0,))]}
    comparisons = matched_clean.matched_comparisons(grids)
    self.assertEqual(comparisons, [
        {"clean_accuracy": 0.97, "adversarial": 0, "opnorm": 0, "spectral": None},
        {"clean_accuracy": 0.90, "adversarial": 1, "opnorm": None, "spectral": None}])


class VerdictTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(
      ([True, True, True], "holds"),
      ([False, False], "fails"),
      ([True, False, True], "inconclusive"),
      ([True], "holds"),
      ([], "inconclusive"),
  )
  def test_per_seed_rule(self, holds, expected):
    self.assertEqual(matched_clean.verdict(holds), expected)

  @parameterized.parameters(
      (["holds", "holds"], "holds"),
      (["fails"], "fails"),
      (["holds", "fails"], "inconclusive"),
      (["holds", "inconclusive"], "inconclusive"),
      ([], "inconclusive"),
  )
  def test_over_comparisons(self, verdicts, expected):
    self.assertEqual(matched_clean.overall_verdict(verdicts), expected)

  def test_claim_margins_by_hand(self):
    robust = {"standard": 0.01, "adversarial": 0.25, "opnorm": 0.23, "spectral": 0.05}
    out = matched_clean.claim_margins(robust)
    # |0.23 - 0.25| = 0.02 <= 0.03; min(0.25, 0.23) - 0.01 = 0.22 >= 0.20; 0.05 < 0.23.
    self.assertEqual(out[_CLAIMS[0]][:2], (True, "difference"))
    self.assertAlmostEqual(out[_CLAIMS[0]][2], -0.02)
    self.assertTrue(out[_CLAIMS[1]][0])
    self.assertAlmostEqual(out[_CLAIMS[1]][2], 0.22)
    self.assertTrue(out[_CLAIMS[2]][0])
    self.assertAlmostEqual(out[_CLAIMS[2]][2], 0.18)
    # Exactly 3 points apart: still within.
    self.assertTrue(matched_clean.claim_margins(
        {"standard": 0.0, "adversarial": 0.33, "opnorm": 0.30})[_CLAIMS[0]][0])
    self.assertNotIn(_CLAIMS[2], matched_clean.claim_margins(
        {"standard": 0.0, "adversarial": 0.3, "opnorm": 0.3}))


class ClaimVerdictsTest(tf.test.TestCase):

  def _claims(self, opnorm_robust, spectral_clean=(0.96, 0.96)):
    # Two seeds. AT at w=10: clean 0.96 both seeds, robust 0.25 / 0.27.
    # standard: robust 0.01 / 0.03. spectral: robust 0.02 / 0.02.
    grids = {
        "adversarial": [_point(10, (0.96, 0.96), (0.25, 0.27))],
        "opnorm": [_point(1, (0.955, 0.965), opnorm_robust)],
        "spectral": [_point(0.1, spectral_clean, (0.02, 0.02))],
    }
    standard = _point(0, (0.978, 0.978), (0.01, 0.03))
    comparisons = matched_clean.matched_comparisons(grids)
    return matched_clean.claim_verdicts(grids, standard, comparisons), grids

  def test_holds_in_every_seed(self):
    # opnorm 0.24 / 0.25: differences -0.01 / -0.02 (mean -0.015, std 0.005);
    # min(AT, dd) - standard: 0.23 / 0.22; spectral below in both.
    claims, _ = self._claims((0.24, 0.25))
    within = claims[_CLAIMS[0]]
    self.assertEqual(within["verdict"], "holds")
    (row,) = within["comparisons"]
    self.assertAlmostEqual(row["difference"], -0.015)
    self.assertAlmostEqual(row["difference_std"], 0.005)
    self.assertEqual((row["holds_in_seeds"], row["num_seeds"]), (2, 2))
    self.assertEqual(row["constants"], {"adversarial": 10.0, "opnorm": 1.0})
    above = claims[_CLAIMS[1]]["comparisons"][0]
    self.assertAlmostEqual(above["margin"], 0.225)
    self.assertEqual(claims[_CLAIMS[1]]["verdict"], "holds")
    self.assertEqual(claims[_CLAIMS[2]]["verdict"], "holds")

  def test_holds_on_the_mean_but_not_in_every_seed_is_inconclusive(self):
    # opnorm 0.25 / 0.22: differences 0.00 / -0.05 (mean -0.025, within 3
    # points on the mean); fails in seed 1: inconclusive, never "holds".
    claims, _ = self._claims((0.25, 0.22))
    within = claims[_CLAIMS[0]]
    self.assertAlmostEqual(within["comparisons"][0]["difference"], -0.025)
    self.assertEqual(within["comparisons"][0]["holds_in_seeds"], 1)
    self.assertEqual(within["verdict"], "inconclusive")

  def test_fails_in_every_seed(self):
    # opnorm 0.10 / 0.12: 15 points below AT in both seeds; 0.09 above standard.
    claims, _ = self._claims((0.10, 0.12))
    self.assertEqual(claims[_CLAIMS[0]]["verdict"], "fails")
    self.assertEqual(claims[_CLAIMS[1]]["verdict"], "fails")
    self.assertEqual(claims[_CLAIMS[2]]["verdict"], "holds")

  def test_no_match_is_inconclusive(self):
    # spectral at clean 0.90: 6 points from AT's 0.96, no match.
    claims, _ = self._claims((0.24, 0.25), spectral_clean=(0.90, 0.90))
    self.assertEqual(claims[_CLAIMS[2]], {"verdict": "inconclusive", "comparisons": []})
    self.assertEqual(claims[_CLAIMS[0]]["verdict"], "holds")  # opnorm is matched
    lines = matched_clean.claim_lines(claims)
    self.assertIn("claim spectral_below_both: inconclusive (no matched comparison", lines[-1])

  def test_report_names_the_constants(self):
    claims, grids = self._claims((0.24, 0.25), spectral_clean=(0.90, 0.90))
    standard = _point(0, (0.978, 0.978), (0.01, 0.03))
    text = matched_clean.format_report(
        grids, standard, matched_clean.matched_comparisons(grids), claims, num_seeds=2)
    self.assertIn("| PGD AT      | w=10       | 0.960 ± 0.000 | 0.260 ± 0.010 |", text)
    self.assertIn("no match", text)
    self.assertIn("at clean 0.960 (PGD AT w=10, d.d. opnorm lambda=1): difference -0.015 "
                  "± 0.005 over seeds; holds in 2/2 seeds: holds", text)


class ParetoPlotTest(tf.test.TestCase):

  def test_writes_a_png(self):
    pytest.importorskip("matplotlib")
    from keras_opnorm import plots  # pylint: disable=g-import-not-at-top
    path = os.path.join(self.create_tempdir().full_path, "pareto.png")
    fronts = {"standard": [_point(0, (0.98,), (0.0,))],
              "adversarial": [_point(1, (0.97, 0.96), (0.2, 0.3)),
                              _point(10, (0.95, 0.96), (0.3, 0.3))]}
    self.assertEqual(plots.plot_pareto(fronts, path), path)
    with open(path, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    with self.assertRaisesRegex(ValueError, r"`results` must be a non-empty dict"):
      plots.plot_pareto({}, path)


class EndToEndTest(tf.test.TestCase):

  @pytest.mark.slow
  def test_protocol_on_digits_tiny(self):
    # The command's own code path at a reduced size: 1 epoch, 1 seed, 2 grid
    # points per method, 16 evaluation examples, the fast ensemble.
    pytest.importorskip("sklearn")
    from keras_opnorm.experiments import compare  # pylint: disable=g-import-not-at-top
    out = self.create_tempdir().full_path
    with flagsaver.flagsaver(
        protocol="matched_clean", output_dir=out, epochs=1, num_seeds=1, batch_size=256,
        attack_steps=2, opnorm_iters=2, num_steps=2, eval_examples=16, evaluation="fast",
        grid_adversarial=["1", "10"], grid_opnorm=["0.1", "1"],
        grid_spectral=["0.01", "0.1"]):
      compare.main(["compare"])
    with open(os.path.join(out, "results.json")) as f:
      results = json.load(f)
    self.assertEqual(results["protocol"], "matched_clean")
    self.assertEqual(list(results["methods"]), list(compare.METHODS))
    self.assertLen(results["methods"]["standard"]["points"], 1)
    for method, grid in (("adversarial", [1.0, 10.0]), ("opnorm", [0.1, 1.0]),
                         ("spectral", [0.01, 0.1])):
      entry = results["methods"][method]
      self.assertEqual(entry["grid"], grid)
      self.assertEqual([p["constant"] for p in entry["points"]], grid)
      for p in entry["points"]:
        self.assertBetween(p["robust_accuracy"], 0.0, p["clean_accuracy"])
        self.assertLen(p["per_seed"], 1)
        self.assertEqual(p["clean_accuracy_std"], 0.0)
    self.assertLen(results["comparisons"], 2)  # one per AT point
    self.assertCountEqual(results["claims"], _CLAIMS)
    for claim in results["claims"].values():
      self.assertIn(claim["verdict"], matched_clean.VERDICTS)
    self.assertEqual(results["plots"], ["pareto.png"])
    self.assertGreater(os.path.getsize(os.path.join(out, "pareto.png")), 0)
    with open(os.path.join(out, "table.md")) as f:
      table = f.read()
    self.assertIn("## Matched comparisons", table)
    self.assertIn("claim opnorm_within_3_points_of_adversarial: ", table)


if __name__ == "__main__":
  tf.test.main()
