"""Tests for the comparison command keras_opnorm.experiments.compare."""

import contextlib
import dataclasses
import io
import json
import os
import re
import unittest.mock

from absl import app
from absl.testing import flagsaver
from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("sklearn")

from keras_opnorm.experiments import compare  # pylint: disable=g-import-not-at-top,wrong-import-position

# Tiny but complete settings: every method, every evaluation, every plot.
# Keras' verbosity stays at its default (--keras_verbose=0).
_TINY = dict(
    epochs=1, batch_size=256, attack_steps=2, opnorm_iters=2, num_steps=2,
    eval_examples=16, align_examples=6, spectrum_k=3, sweep=["0", "1"],
    evaluation="fast", min_norm_steps=3,
    num_seeds=1)
_INF = float("inf")


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
      ("empty_grid", dict(protocol="matched_clean", grid_opnorm=[]),
       r"--grid_opnorm must be a non-empty comma-separated list of positive numbers\. "
       r"Received: --grid_opnorm=''"),
      ("negative_grid", dict(protocol="matched_clean", grid_spectral=["0.01", "-0.1"]),
       r"--grid_spectral must be .* Received: --grid_spectral='0.01,-0.1' \('-0.1' is not "
       r"positive"),
      ("non_numeric_grid", dict(protocol="matched_clean", grid_adversarial=["1", "ten"]),
       r"--grid_adversarial must be .* Received: --grid_adversarial='1,ten' \('ten' is not a "
       r"number\)"),
      ("bad_grid_in_single_protocol", dict(grid_opnorm=["zero"]), r"--grid_opnorm must be"),
      ("match_tolerance", dict(protocol="matched_clean", match_tolerance=-0.01),
       r"--match_tolerance must be a non-negative number"),
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

  def test_unexpected_positional_argument_is_named(self):
    with self.assertRaisesRegex(app.UsageError,
                                r"flags only .* Received: positional argument\(s\) 'extra'"):
      compare.main(["compare", "extra"])
    # A flag written without its dashes: the message says what was meant.
    with self.assertRaisesRegex(app.UsageError, r"'p=inf'\. Did you mean --p=inf\?"):
      compare.main(["compare", "p=inf"])

  def test_validate_normalises(self):
    cfg = compare.validate(compare.Config(
        methods=("opnorm", "standard", "opnorm"), p="inf", sweep=(2, 0.5),
        output_dir=self.create_tempdir().full_path))
    self.assertEqual(cfg.methods, ("opnorm", "standard"))
    self.assertEqual(cfg.p, float("inf"))
    self.assertEqual(cfg.sweep, (0.5, 1.0, 2.0))  # the training eps is always in
    self.assertAllClose(cfg.epsilons, [0.05, 0.1, 0.2])  # multiples of the linf default 0.1

  def test_keras_verbosity_flag_and_its_former_name(self):
    self.assertEqual(compare.config_from_flags().verbose, 0)  # no Keras output by default
    with flagsaver.flagsaver(keras_verbose=2):
      self.assertEqual(compare.config_from_flags().verbose, 2)
    with flagsaver.flagsaver(verbose=1):  # the alias
      self.assertEqual(compare.config_from_flags().verbose, 1)
    self._main_fails(r"--keras_verbose must be 0, 1 or 2. Received: --keras_verbose=3",
                     keras_verbose=3)

  def test_protocol_defaults_to_single(self):
    cfg = compare.config_from_flags()
    self.assertEqual(cfg.protocol, "single")
    self.assertEqual(cfg.grid_opnorm, ("0.1", "0.316", "1", "3.16"))  # as the flag reads them
    cfg = compare.validate(dataclasses.replace(cfg, output_dir=self.create_tempdir().full_path))
    self.assertEqual(cfg.grid_opnorm, (0.1, 0.316, 1.0, 3.16))
    self.assertEqual(cfg.grid_adversarial, (1.0, 3.16, 10.0, 31.6))
    with unittest.mock.patch.object(compare, "run_comparison") as single, \
        unittest.mock.patch.object(compare.matched_clean, "run") as matched:
      with flagsaver.flagsaver(output_dir=self.create_tempdir().full_path):
        compare.main(["compare"])
      self.assertEqual((single.call_count, matched.call_count), (1, 0))
      with flagsaver.flagsaver(protocol="matched_clean",
                               output_dir=self.create_tempdir().full_path):
        compare.main(["compare"])
      self.assertEqual((single.call_count, matched.call_count), (1, 1))

  def test_default_output_dir_names_the_setting(self):
    cfg = compare.Config(p=float("inf"), epsilon=0.1)
    self.assertEqual(compare._default_output_dir(cfg),  # pylint: disable=protected-access
                     os.path.join("outputs", "compare", "digits_mlp_pinf_q2_eps0.1"))


class ThreatModelTest(parameterized.TestCase, tf.test.TestCase):

  def _validated(self, **kwargs):
    return compare.validate(compare.Config(output_dir=self.create_tempdir().full_path,
                                           **kwargs))

  @parameterized.named_parameters(
      ("digits_l2", "digits", 2.0, 1.0),  # the version-0.1 default, unchanged
      ("digits_linf", "digits", _INF, 0.1),  # the README's l-inf comparison
      ("digits_l1", "digits", 1.0, 5.0),  # MNIST's l1/l2 = 10/2 times digits' l2 radius 1
      ("mnist_linf", "mnist", _INF, 0.3),  # Madry et al. 2018
      ("mnist_l2", "mnist", 2.0, 2.0),
      ("mnist_l1", "mnist", 1.0, 10.0),
      ("fashion_mnist_linf", "fashion_mnist", _INF, 0.1),
      # cifar10 pixels are in [-1, 1]: the [0, 1] radii 8/255 and 12 double.
      ("cifar10_linf", "cifar10", _INF, 16 / 255),
      ("cifar10_l1", "cifar10", 1.0, 24.0),
      ("cifar10_l2", "cifar10", 2.0, 1.75),  # Roth et al. 2020
  )
  def test_default_radius_per_dataset_and_norm(self, dataset, p, expected):
    model = "mlp" if dataset == "digits" else "small_cnn"
    cfg = self._validated(dataset=dataset, model=model, p=p)
    self.assertAlmostEqual(cfg.epsilon, expected)
    self.assertEqual(compare.threat_model(cfg)["epsilon_source"], "default")
    # The sweep and the output directory follow the resolved radius.
    self.assertAlmostEqual(max(cfg.epsilons), 2 * expected)

  def test_explicit_epsilon_wins(self):
    cfg = self._validated(p=_INF, epsilon=0.2)
    self.assertEqual(cfg.epsilon, 0.2)
    self.assertEqual(compare.threat_model(cfg)["epsilon_source"], "--epsilon")

  def test_main_without_epsilon_uses_the_linf_default(self):
    with unittest.mock.patch.object(compare, "run_comparison") as run:
      with flagsaver.flagsaver(p=_INF, output_dir=self.create_tempdir().full_path):
        compare.main(["compare"])
    cfg = run.call_args.args[0]
    self.assertEqual(cfg.epsilon, 0.1)
    self.assertTrue(cfg.output_dir)

  @parameterized.named_parameters(
      ("fashion_mnist_l2", dict(dataset="fashion_mnist", model="small_cnn", p=2.0),
       r"--epsilon has no default for --dataset=fashion_mnist with --p=2 .*linf"),
      ("digits_l3", dict(p=3.0), r"--epsilon has no default for --dataset=digits with --p=3"),
  )
  def test_no_default_asks_for_epsilon(self, kwargs, regex):
    with self.assertRaisesRegex(app.UsageError, regex):
      self._validated(**kwargs)

  @parameterized.parameters(
      # (p, input range, dim, r): (hi - lo) / 2 * dim^(1/p).
      (_INF, (0.0, 1.0), 64, 0.5),
      (2.0, (0.0, 1.0), 64, 4.0),  # 0.5 * sqrt(64)
      (1.0, (0.0, 1.0), 64, 32.0),  # 0.5 * 64
      (_INF, (-1.0, 1.0), 3072, 1.0),
      (2.0, (0.0, 1.0), 784, 14.0),  # 0.5 * 28
  )
  def test_vacuous_radius(self, p, input_range, dim, expected):
    r = compare.vacuous_radius(p, input_range, dim)
    self.assertAlmostEqual(r, expected)
    # It is the lp distance from the box's centre to a corner.
    lo, hi = input_range
    corner_offset = np.full(dim, (hi - lo) / 2)
    self.assertAlmostEqual(np.linalg.norm(corner_offset, ord=p), r, places=4)

  def test_no_default_is_vacuous(self):
    for dataset, table in compare.DEFAULT_EPSILONS.items():
      for p in table:
        model = "mlp" if dataset == "digits" else "small_cnn"
        threat = compare.threat_model(self._validated(dataset=dataset, model=model, p=p))
        # MNIST's linf 0.3 is the largest share: 60% of r = 0.5.
        self.assertLessEqual(threat["epsilon"], 0.61 * threat["vacuous_radius"],
                             f"{dataset} p={p}")
        self.assertFalse(threat["vacuous"], f"{dataset} p={p}")

  def _start_of_run(self, **flag_values):
    """What the command prints before its first training run."""
    out = io.StringIO()
    with unittest.mock.patch.object(compare, "train", side_effect=KeyboardInterrupt):
      with flagsaver.flagsaver(output_dir=self.create_tempdir().full_path, **flag_values):
        with contextlib.redirect_stdout(out), self.assertRaises(KeyboardInterrupt):
          compare.main(["compare"])
    return out.getvalue()

  def test_explicit_vacuous_epsilon_warns_and_runs(self):
    # eps = 1 in linf on [0, 1]: every input reaches every point of the box.
    text = self._start_of_run(p=_INF, epsilon=1.0)
    self.assertRegex(text, r"WARNING: vacuous threat model: --epsilon=1 with --p=inf on "
                           r"digits .* at least 1, the linf radius whose ball around every "
                           r"input covers the whole box")
    self.assertIn("the digits default for linf is 0.1", text)
    # eps = 0.5 in linf: every input reaches the all-0.5 image.
    self.assertIn("at least 0.5, the linf radius that reaches the box's centre",
                  self._start_of_run(p=_INF, epsilon=0.5))

  def test_default_and_sensible_epsilon_do_not_warn(self):
    text = self._start_of_run(p=_INF)
    self.assertIn("threat model: linf ball of radius eps=0.1 (the digits default for linf)",
                  text)
    self.assertNotIn("WARNING", text)
    self.assertNotIn("WARNING", self._start_of_run(p=2.0, epsilon=3.9))  # below 0.5 * 8


class ProgressTest(tf.test.TestCase):

  def test_duration(self):
    self.assertEqual(compare._duration(42.4), "42 s")  # pylint: disable=protected-access
    self.assertEqual(compare._duration(185), "3 min 05 s")  # pylint: disable=protected-access
    self.assertEqual(compare._duration(7620), "2 h 07 min")  # pylint: disable=protected-access
    self.assertEqual(compare._duration(None), "?")  # pylint: disable=protected-access

  def test_eta_from_the_runs_done(self):
    # Seeds 0, 1 x methods a, b: 4 runs.
    cfg = compare.Config(methods=("a", "b"), num_seeds=2, epochs=3)
    out = io.StringIO()
    progress = compare._Progress(cfg, stream=out)  # pylint: disable=protected-access

    def eta():
      return re.search(r"ETA ([^\n]*)$", out.getvalue().splitlines()[-1]).group(1)

    record = lambda t: {"train_seconds": t, "seconds_per_epoch": t / 3, "epoch_seconds": [1] * 3}
    progress.trained(record(2.0))
    self.assertEqual(eta(), "?")  # nothing evaluated yet
    progress.evaluated(3.0, {"clean_accuracy": 1.0, "robust_accuracy": 0.5})
    # 3 runs to come; b not seen: the mean of all runs, 2 + 3 each.
    self.assertEqual(eta(), "15 s")
    progress.trained(record(4.0))
    # Rest of b's run: the mean evaluation (3); then a (2 + 3) and b (4 + 3).
    self.assertEqual(eta(), "15 s")
    self.assertStartsWith(out.getvalue().splitlines()[-1],
                          "[run 2/4, seed 0] b: trained 3 epochs in 4.0 s (1.33 s/epoch); ")
    progress.evaluated(5.0, {"clean_accuracy": 1.0, "robust_accuracy": 0.5})
    self.assertEqual(eta(), "14 s")  # a: 2 + 3, b: 4 + 5
    progress.stage("alignment", 1.5)
    self.assertEqual(out.getvalue().splitlines()[-1],
                     "[run 3/4, seed 1] a: evaluation stage alignment: 1.5 s")


class ReadmeRunTimesTest(tf.test.TestCase):

  def test_every_run_time_of_the_main_job_names_machine_and_date(self):
    # A wall time measured on one machine says little about another: every
    # paragraph of the README's main-job section that states one (``361 s``,
    # tables aside) also names the machine (its cores) and the date.
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "README.md")
    with open(readme, encoding="utf-8") as f:
      text = f.read()
    start = text.index("## Results of the main job")
    section = text[start:text.index("\n## ", start + 1)]
    paragraphs = [p for p in re.split(r"\n\s*\n", section)
                  if not p.lstrip().startswith("|")]
    timed = [p for p in paragraphs if re.search(r"\b\d+(\.\d+)? s\b(?!/)", p)]
    self.assertGreaterEqual(len(timed), 3)  # l2, l-inf, the re-run
    for paragraph in timed:
      self.assertRegex(paragraph, r"20\d\d-\d\d-\d\d", paragraph)
      self.assertRegex(paragraph, r"2-core|same (kind of )?machine", paragraph)


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
    # Holds on the mean, in one seed of two: inconclusive, not "holds".
    self.assertEqual(within["verdict"], "inconclusive")
    self.assertAlmostEqual(within["difference_std"], 0.015)  # |-0.04 - -0.01| / 2
    above = claims["adversarial_and_opnorm_20_points_above_standard"]
    self.assertTrue(above["holds"])
    self.assertAlmostEqual(above["margin"], 0.295 - 0.02)
    self.assertEqual(above["holds_in_seeds"], 2)
    self.assertEqual(above["verdict"], "holds")
    # Per seed: min(0.30, 0.26) - 0.01 = 0.25, min(0.34, 0.33) - 0.03 = 0.30.
    self.assertAlmostEqual(above["margin_std"], 0.025)
    self.assertTrue(claims["spectral_below_both"]["holds"])
    self.assertEqual(claims["spectral_below_both"]["verdict"], "holds")
    # Standard as robust as both in every seed: fails.
    results["standard"] = {"robust_accuracy": 0.32, "per_seed": [{"robust_accuracy": 0.30},
                                                                 {"robust_accuracy": 0.34}]}
    self.assertEqual(compare.check_claims(results)[
        "adversarial_and_opnorm_20_points_above_standard"]["verdict"], "fails")
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
    # The whole path (train, evaluate, table, JSON, plots) for one method and
    # two seeds at the linf default radius, into an output directory that the
    # run creates when it writes.
    out_dir = os.path.join(self.create_tempdir().full_path, "new", "out")
    out = io.StringIO()
    with flagsaver.flagsaver(methods=["opnorm"], output_dir=out_dir, plots=False, p=_INF,
                             **dict(_TINY, num_seeds=2)):
      with contextlib.redirect_stdout(out):
        compare.main(["compare"])
    with open(os.path.join(out_dir, "results.json")) as f:
      results = json.load(f)
    self.assertEqual(list(results["methods"]), ["opnorm"])
    self.assertEqual(results["claims"], {})  # needs all four methods
    self.assertEqual(results["plots"], [])
    r = results["methods"]["opnorm"]
    self.assertBetween(r["robust_accuracy"], 0.0, r["clean_accuracy"])
    self.assertIn("opnorm", r["per_seed"][0]["history"])  # the regulariser's metric
    # The resolved radius is recorded, and the sweep is its multiples.
    self.assertEqual(results["config"]["epsilon"], 0.1)
    self.assertEqual(results["threat_model"]["epsilon_source"], "default")
    self.assertEqual(results["threat_model"]["vacuous_radius"], 0.5)
    self.assertEqual(r["evaluation"]["robust_accuracy_curve"]["epsilons"], [0.0, 0.1])
    with open(os.path.join(out_dir, "table.md")) as f:
      self.assertIn("eps=0.1 (the dataset's default for this p)", f.read())
    # With the default verbosity: one plain line per training run, with an ETA.
    text = out.getvalue()
    self.assertNotIn("\x1b", text)  # no terminal escape codes
    self.assertNotIn("\r", text)  # no progress bar redrawn in place
    lines = text.splitlines()
    trained = [l for l in lines if re.search(r"\] opnorm: trained ", l)]
    self.assertLen(trained, 2)
    duration = r"\d+ (s|min \d\d s|h \d\d min)"
    self.assertRegex(trained[0], r"^\[run 1/2, seed 0\] opnorm: trained 1 epochs in "
                                 rf"[0-9.]+ s .*; elapsed {duration}, ETA \?$")
    self.assertRegex(trained[1], rf"^\[run 2/2, seed 1\] .*; elapsed {duration}, "
                                 rf"ETA {duration}$")
    evaluated = [l for l in lines if "] opnorm: evaluated in " in l]
    self.assertLen(evaluated, 2)
    self.assertTrue(evaluated[-1].endswith("ETA 0 s"), evaluated[-1])
    # PGD sweep, operator norms and spectra, alignment, ensemble, FMN; per run.
    self.assertLen([l for l in lines if "evaluation stage" in l], 2 * 5)
    self.assertNotIn("WARNING", text)

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
