"""Tests for evaluation.sanity: gradient-masking checks flag masked gradients.

Hand derivations. For a linear model ``f(x) = x W + b`` the gradient of every
attack loss is exact, so APGD reaches the boundary wherever it lies within
eps: the accuracy falls with eps to 0 at a radius far beyond every point's
distance, more steps change nothing, and no gradient is zero. The masked
model returns the same logits through ``stop_gradient(z) + 0 * z``: the same
predictions (so the same true robust accuracy) but an input gradient that is
exactly 0 everywhere, so gradient attacks only move by their random start.
"""

import importlib.util
import json
import warnings

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from keras_opnorm.evaluation import sanity
from keras_opnorm.evaluation.sanity import gradient_masking_checks

_INF = float("inf")
_HAS_SQUARE = importlib.util.find_spec("keras_opnorm.attacks.square") is not None


def _problem(n=24, dim=8, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  w = tf.constant(rng.normal(size=(dim, classes)), tf.float32)
  b = tf.constant(rng.normal(size=classes), tf.float32)
  x = rng.uniform(0.0, 1.0, size=(n, dim)).astype(np.float32)
  plain = lambda t: tf.matmul(t, w) + b

  def masked(t):
    z = plain(t)
    return tf.stop_gradient(z) + 0.0 * z  # same logits, zero input gradient

  y = np.argmax(plain(x).numpy(), axis=1).astype(np.int32)
  return plain, masked, x, y


_CHEAP = dict(epsilon_factors=(0.5, 1.0, 2.0), num_steps=10, strong_steps_factor=3,
              strong_restarts=1, num_queries=300, tolerance=0.05)


class SanityTest(tf.test.TestCase, parameterized.TestCase):

  def test_plain_linear_model_passes(self):
    plain, _, x, y = _problem()
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # no warning may be issued
      r = gradient_masking_checks(plain, x, y, epsilon=0.05, p=_INF, clip=(0.0, 1.0), **_CHEAP)
    self.assertTrue(r.passed, [c.message for c in r.checks])
    mono = r.check("monotonic")
    # eps * (0.5, 1, 2) and the whole box (hi - lo = 1 for l-inf).
    self.assertAllClose(mono.values["epsilons"], [0.025, 0.05, 0.1, 1.0])
    self.assertEqual(mono.values["accuracies"][-1], 0.0)
    self.assertEqual(r.check("zero_gradients").values["share"], 0.0)
    self.assertEqual([c.name for c in r.checks],
                     ["monotonic", "gradient_free", "budget", "zero_gradients"])
    self.assertEqual(r.check("gradient_free").skipped, not _HAS_SQUARE)

  def test_masked_gradients_are_flagged_and_warn(self):
    _, masked, x, y = _problem()
    with self.assertWarnsRegex(UserWarning, "check 'zero_gradients' failed"):
      r = gradient_masking_checks(masked, x, y, epsilon=0.05, p=_INF, clip=(0.0, 1.0), **_CHEAP)
    self.assertFalse(r.passed)
    self.assertEqual(r.check("zero_gradients").values["share"], 1.0)
    # Zero gradients: APGD never leaves its random start, which cannot reach the
    # corners of the box that flip every point: not about 0 at eps = hi - lo.
    self.assertFalse(r.check("monotonic").passed)
    self.assertGreater(r.check("monotonic").values["accuracies"][-1], 0.05)
    self.assertIn("cannot fail", r.check("monotonic").message)

  @pytest.mark.skipif(not _HAS_SQUARE, reason="keras_opnorm.attacks.square is not committed yet")
  def test_square_beats_masked_gradients(self):
    plain, masked, x, y = _problem()
    with self.assertWarnsRegex(UserWarning, "check 'gradient_free' failed"):
      r = gradient_masking_checks(masked, x, y, epsilon=0.1, p=_INF, clip=(0.0, 1.0), **_CHEAP)
    c = r.check("gradient_free")
    self.assertFalse(c.passed)
    self.assertLess(c.values["square_accuracy"], c.values["gradient_accuracy"] - 0.05)
    r = gradient_masking_checks(plain, x, y, epsilon=0.1, p=_INF, clip=(0.0, 1.0), **_CHEAP)
    self.assertTrue(r.check("gradient_free").passed, r.check("gradient_free").message)
    # Same logits: Square, which never uses gradients, finds on the masked model
    # what the gradient attacks find on the plain one.
    self.assertEqual(c.values["square_accuracy"], r.check("gradient_free").values[
        "gradient_accuracy"])

  def test_l1_skips_square_and_uses_unbounded_radius_without_clip(self):
    plain, _, x, y = _problem(n=12)
    r = gradient_masking_checks(plain, x, y, epsilon=0.2, p=1, **_CHEAP)
    self.assertTrue(r.check("gradient_free").skipped)
    self.assertIn("no l1 version", r.check("gradient_free").message)
    # Without clip: 100 x the largest radius of the sweep (2 eps).
    self.assertAllClose(r.check("monotonic").values["epsilons"][-1], 100 * 2 * 0.2)
    self.assertTrue(r.passed, [c.message for c in r.checks])

  def test_report_to_dict_round_trip(self):
    plain, _, x, y = _problem(n=8)
    r = gradient_masking_checks(plain, x, y, epsilon=0.05, p=2, clip=(0.0, 1.0), **_CHEAP)
    # l2 diameter of the box [0, 1]^8: sqrt(8).
    self.assertAllClose(r.check("monotonic").values["epsilons"][-1], np.sqrt(8))
    d = json.loads(json.dumps(r.to_dict()))
    back = sanity.SanityReport.from_dict(d)
    self.assertEqual(back.check("budget").passed, r.check("budget").passed)
    self.assertEqual(back.check("monotonic").values["accuracies"],
                     r.check("monotonic").values["accuracies"])
    with self.assertRaisesRegex(ValueError, "`name`.*'nope'"):
      r.check("nope")

  @parameterized.parameters(dict(tolerance=1.0), dict(num_steps=0), dict(epsilon=0.0))
  def test_bad_arguments(self, **kw):
    plain, _, x, y = _problem(n=4)
    args = dict(epsilon=0.1, p=_INF)
    args.update(kw)
    with self.assertRaises(ValueError):
      gradient_masking_checks(plain, x, y, **args)
