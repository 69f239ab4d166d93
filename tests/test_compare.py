"""Tests for the comparison command keras_opnorm.experiments.compare."""

import json
import os
import unittest.mock

from absl import app
from absl.testing import flagsaver
from absl.testing import parameterized
import pytest
import tensorflow as tf

pytest.importorskip("sklearn")

from keras_opnorm.experiments import compare  # pylint: disable=g-import-not-at-top,wrong-import-position

# Tiny but complete settings: every method, every evaluation, every plot.
_TINY = dict(
    epochs=1, batch_size=256, attack_steps=2, opnorm_iters=2, num_steps=2,
    eval_examples=16, align_examples=6, spectrum_k=3, sweep=["0", "1"], verbose=0,
    evaluation="fast", min_norm_steps=3,
    num_seeds=1)


class FlagValidationTest(parameterized.TestCase, tf.test.TestCase):

  def _main_fails(self, regex, **flag_values):
    flag_values.setdefault("output_dir", self.create_tempdir().full_path)
    with unittest.mock.patch.object(compare, "train", side_effect=AssertionError(
        "training started before the flags were validated")):
      with flagsaver.flagsaver(**flag_values):
        with self.assertRaisesRegex(app.UsageError, regex):
          compare.main(["compare"])

  @parameterized.named_parameters(
      ("dataset", dict(dataset="imagenet"), r"--dataset must be one of digits, mnist"),
      ("model", dict(model="resnet"), r"--model must be one of mlp, cnn, small_cnn"),
      ("method", dict(methods=["standard", "madry"]),
       r"--methods must be .* from standard, adversarial, opnorm, spectral"),
      ("no_method", dict(methods=[]), r"--methods"),
      ("negative_epsilon", dict(epsilon=-1.0), r"--epsilon must be a positive number"),
      ("zero_epsilon", dict(epsilon=0.0), r"--epsilon must be a positive number"),
      ("nan_epsilon", dict(epsilon=float("nan")), r"--epsilon must be a positive number"),
      ("inf_epsilon", dict(epsilon=float("inf")), r"--epsilon must be a positive number"),
      ("p_below_one", dict(p=0.5), r"--p must be a number in \[1, inf\]"),
      ("epochs", dict(epochs=0), r"--epochs must be a positive integer"),
      ("num_seeds", dict(num_seeds=0), r"--num_seeds must be a positive integer"),
      ("weight", dict(opnorm_weight=-0.1), r"--opnorm_weight must be a non-negative"),
      ("sweep", dict(sweep=["0", "x"]), r"--sweep must be"),
  )
  def test_bad_flag_fails_before_training(self, flag_values, regex):
    self._main_fails(regex, **flag_values)

  def test_unwritable_output_dir(self):
    # A path below a regular file can never be created (even by root).
    blocker = self.create_tempfile("blocker").full_path
    self._main_fails(r"--output_dir must be a writable directory",
                     output_dir=os.path.join(blocker, "out"))

  def test_missing_tfds_set_says_what_to_download(self):
    data_dir = self.create_tempdir().full_path
    self._main_fails(r"cifar10 is not prepared under .*tfds build cifar10",
                     dataset="cifar10", model="small_cnn", data_dir=data_dir)

  def test_failed_run_leaves_no_new_directory(self):
    # The output directory (and its missing parents) do not exist yet: the
    # writability check must not leave them behind when the data turns out
    # not to be prepared.
    parent = os.path.join(self.create_tempdir().full_path, "new")
    out = os.path.join(parent, "out")
    self._main_fails(r"cifar10 is not prepared", dataset="cifar10", model="small_cnn",
                     data_dir=self.create_tempdir().full_path, output_dir=out)
    self.assertFalse(os.path.exists(parent))

  def test_validate_checks_without_creating(self):
    parent = os.path.join(self.create_tempdir().full_path, "new")
    cfg = compare.validate(compare.Config(output_dir=os.path.join(parent, "out")))
    self.assertEqual(cfg.output_dir, os.path.join(parent, "out"))
    self.assertFalse(os.path.exists(parent))

  def test_unexpected_positional_argument(self):
    with self.assertRaisesRegex(app.UsageError, "Unexpected arguments: extra"):
      compare.main(["compare", "extra"])

  def test_validate_normalises(self):
    cfg = compare.validate(compare.Config(
        methods=("opnorm", "standard", "opnorm"), p="inf", sweep=(2, 0.5),
        output_dir=self.create_tempdir().full_path))
    self.assertEqual(cfg.methods, ("opnorm", "standard"))
    self.assertEqual(cfg.p, float("inf"))
    self.assertEqual(cfg.sweep, (0.5, 1.0, 2.0))  # the training eps is always in
    self.assertEqual(cfg.epsilons, [0.5, 1.0, 2.0])

  def test_default_output_dir_names_the_setting(self):
    cfg = compare.Config(p=float("inf"), epsilon=0.1)
    self.assertEqual(compare._default_output_dir(cfg),  # pylint: disable=protected-access
                     os.path.join("outputs", "compare", "digits_mlp_pinf_q2_eps0.1"))


class AggregationTest(tf.test.TestCase):

  def test_average_of_results(self):
    # Numbers and equal-length lists are averaged; strings and ragged lists
    # come from the first result.
    a = {"loss": "logit", "mean": [1.0, 0.0], "n": 2, "k": 3, "ragged": [1],
         "nested": {"x": 1.0}}
    b = {"loss": "ce", "mean": [0.0, 1.0], "n": 4, "k": 3, "ragged": [1, 2],
         "nested": {"x": 3.0}}
    average = compare._average([a, b])  # pylint: disable=protected-access
    self.assertEqual(average, {"loss": "logit", "mean": [0.5, 0.5], "n": 3.0, "k": 3,
                               "ragged": [1], "nested": {"x": 2.0}})
    self.assertIsInstance(average["k"], int)

  def test_claims_on_the_mean_and_per_seed(self):
    # Robust accuracies of two seeds: AT 0.30/0.34, opnorm 0.26/0.33 (means
    # 0.32 / 0.295: difference -0.025, within 3 points; per seed -0.04 and
    # -0.01: holds in 1 of 2), standard 0.01/0.03, spectral 0.02/0.02.
    rob = {"standard": (0.01, 0.03), "adversarial": (0.30, 0.34),
           "opnorm": (0.26, 0.33), "spectral": (0.02, 0.02)}
    results = {m: {"robust_accuracy": sum(r) / 2,
                   "per_seed": [{"robust_accuracy": v} for v in r]} for m, r in rob.items()}
    claims = compare.check_claims(results)
    within = claims["opnorm_within_3_points_of_adversarial"]
    self.assertTrue(within["holds"])
    self.assertAlmostEqual(within["difference"], -0.025)
    self.assertEqual((within["holds_in_seeds"], within["num_seeds"]), (1, 2))
    above = claims["adversarial_and_opnorm_20_points_above_standard"]
    self.assertTrue(above["holds"])
    self.assertAlmostEqual(above["margin"], 0.295 - 0.02)
    self.assertEqual(above["holds_in_seeds"], 2)
    self.assertTrue(claims["spectral_below_both"]["holds"])
    del results["spectral"]
    self.assertEqual(compare.check_claims(results), {})


class AtomicWriteTest(tf.test.TestCase):

  def test_json_is_plain_and_infinite_values_are_strings(self):
    path = os.path.join(self.create_tempdir().full_path, "results.json")
    compare.write_json_atomic(path, {"p": float("inf"), "x": [1, 2.5], "nan": float("nan")})
    with open(path) as f:
      self.assertEqual(json.load(f), {"p": "inf", "x": [1, 2.5], "nan": None})

  def test_written_files_have_the_mode_of_a_plain_open(self):
    # mkstemp makes 0600 files; a plain open() gives 0666 & ~umask (0644 for umask 022).
    path = os.path.join(self.create_tempdir().full_path, "results.json")
    old = os.umask(0o022)
    try:
      compare.write_json_atomic(path, {"run": 1})
    finally:
      os.umask(old)
    self.assertEqual(os.stat(path).st_mode & 0o777, 0o644)

  def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(self):
    directory = self.create_tempdir().full_path
    path = os.path.join(directory, "results.json")
    compare.write_json_atomic(path, {"run": 1})
    with self.assertRaises(TypeError):  # json cannot write an object()
      compare.write_json_atomic(path, {"run": 2, "bad": object()})
    with open(path) as f:
      self.assertEqual(json.load(f), {"run": 1})
    self.assertEqual(os.listdir(directory), ["results.json"])


class EndToEndTest(tf.test.TestCase):

  def test_interrupted_run_writes_no_results(self):
    out = self.create_tempdir().full_path
    with unittest.mock.patch.object(compare, "evaluate", side_effect=KeyboardInterrupt):
      with flagsaver.flagsaver(methods=["standard"], output_dir=out, **_TINY):
        with self.assertRaises(KeyboardInterrupt):
          compare.main(["compare"])
    self.assertFalse(os.path.exists(os.path.join(out, "results.json")))
    self.assertEqual([f for f in os.listdir(out) if f.endswith(".tmp")], [])

  def test_one_method_tiny(self):
    # The whole path (train, evaluate, table, JSON, plots) for one method,
    # into an output directory that the run creates when it writes.
    out = os.path.join(self.create_tempdir().full_path, "new", "out")
    with flagsaver.flagsaver(methods=["opnorm"], output_dir=out, plots=False, **_TINY):
      compare.main(["compare"])
    with open(os.path.join(out, "results.json")) as f:
      results = json.load(f)
    self.assertEqual(list(results["methods"]), ["opnorm"])
    self.assertEqual(results["claims"], {})  # needs all four methods
    self.assertEqual(results["plots"], [])
    r = results["methods"]["opnorm"]
    self.assertBetween(r["robust_accuracy"], 0.0, r["clean_accuracy"])
    self.assertIn("opnorm", r["per_seed"][0]["history"])  # the regulariser's metric

  @pytest.mark.slow
  def test_tfds_dataset_with_a_cnn(self):
    tfds = pytest.importorskip("tensorflow_datasets")
    out = self.create_tempdir().full_path
    data_dir = self.create_tempdir().full_path
    tiny = dict(_TINY, eval_examples=4, align_examples=2, batch_size=4)
    with tfds.testing.mock_data(num_examples=8):
      with flagsaver.flagsaver(dataset="mnist", model="small_cnn", data_dir=data_dir,
                               methods=["standard", "spectral"], output_dir=out,
                               plots=False, **tiny):
        compare.main(["compare"])
    with open(os.path.join(out, "results.json")) as f:
      results = json.load(f)
    self.assertEqual(results["dataset"]["input_shape"], [28, 28, 1])
    self.assertEqual(results["eval_examples"], 4)
    self.assertEqual(list(results["methods"]), ["standard", "spectral"])

  @pytest.mark.slow
  def test_all_methods_tiny(self):
    out = self.create_tempdir().full_path
    with flagsaver.flagsaver(output_dir=out, **_TINY):
      compare.main(["compare"])
    with open(os.path.join(out, "results.json")) as f:
      results = json.load(f)
    self.assertEqual(list(results["methods"]), list(compare.METHODS))
    self.assertEqual(results["config"]["epsilon"], 1.0)
    self.assertEqual(results["config"]["p"], 2.0)
    self.assertEqual(results["dataset"]["name"], "digits")
    self.assertEqual(results["eval_examples"], 16)
    self.assertEqual(results["align_examples"], 6)
    for method, r in results["methods"].items():
      for key in ("clean_accuracy", "robust_accuracy"):
        self.assertBetween(r[key], 0.0, 1.0, msg=f"{method} {key}")
      self.assertLessEqual(r["robust_accuracy"], r["clean_accuracy"])
      for key in ("alignment_rank1_ce", "alignment_rank1_ce_centered",
                  "alignment_rank1_logit", "alignment_rank1_logit_centered",
                  "alignment_random"):
        self.assertBetween(r[key], 0.0, 1.0, msg=f"{method} {key}")
      self.assertGreater(r["mean_operator_norm"], 0.0)
      self.assertGreater(r["seconds_per_epoch"], 0.0)
      self.assertLen(r["per_seed"], 1)
      self.assertLen(r["per_seed"][0]["epoch_seconds"], 1)
      self.assertEqual(r["robust_accuracy_std"], 0.0)
      self.assertBetween(r["top_output_direction_margin"], 0.0, 1.0)
      self.assertIn("loss", r["per_seed"][0]["history"])
      curve = r["evaluation"]["robust_accuracy_curve"]
      self.assertEqual(curve["epsilons"], [0.0, 1.0])
      self.assertLen(r["evaluation"]["spectrum"]["mean"], 3)
    self.assertCountEqual(
        results["claims"],
        ["opnorm_within_3_points_of_adversarial",
         "adversarial_and_opnorm_20_points_above_standard", "spectral_below_both"])
    plots = ["accuracy_vs_epsilon_min_norm.png", "accuracy_vs_epsilon.png",
             "alignment_by_rank.png", "alignment_by_rank_centered.png", "alignment_by_rank_logit.png",
             "alignment_vs_epsilon.png", "alignment_vs_epsilon_logit.png", "spectra.png"]
    self.assertCountEqual(results["plots"], plots)
    for name in plots + ["table.md"]:
      path = os.path.join(out, name)
      self.assertTrue(os.path.exists(path), name)
      self.assertGreater(os.path.getsize(path), 0)
    with open(os.path.join(out, "table.md")) as f:
      table = f.read()
    for label in ("standard", "PGD AT", "d.d. opnorm", "global SNR"):
      self.assertIn(label, table)
