"""Tests of the exact-vs-power cost model (keras_opnorm._cost) and its users.

Expected decisions are hand-computed from the pass counts of the module
docstring, in forward + backward passes of the batch (fb):
  exact = passes * copies * 0.85 + passes * 0.5,  m = min(d, n) products in
          passes = ceil(m / 32) of copies = ceil(m / passes);
  power = K * 1.2 + 0.6 + 1.0.
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import _cost
from keras_opnorm import objectives
from keras_opnorm import operator_norm as operator_norm_fn
from keras_opnorm.operator_norm import AUTO_EXACTNESS_PREMIUM


class PassCountsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      (10, 64, (1, 10)),     # 10 rows in one pass.
      (32, 64, (1, 32)),     # A full pass.
      (33, 1000, (2, 17)),   # ceil(33/32) = 2 passes of ceil(33/2) = 17.
      (100, 3072, (4, 25)),  # 4 passes of 25.
      (100, 10, (1, 10)),    # n < d: 10 forward-mode columns.
  )
  def test_pass_counts(self, d, n, expected):
    self.assertEqual(_cost.pass_counts(d, n), expected)

  def test_path_costs(self):
    # d = 100: 4 * 25 * 0.85 + 4 * 0.5 = 87; K = 20: 24 + 0.6 + 1 = 25.6.
    self.assertAllClose(_cost.path_costs(100, 3072, num_iters=20), (87.0, 25.6))
    # Differentiated: the exact path doubles (174), power adds 2 * 0.6.
    self.assertAllClose(_cost.path_costs(100, 3072, num_iters=20, differentiate=True),
                        (174.0, 26.8))


class CheaperPathTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      # K = 10: power 13.6. d = 15: 13.25 (exact); d = 16: 14.1 (power).
      (15, 64, 10, 1.0, "exact"),
      (16, 64, 10, 1.0, "power"),
      # K = 20: power 25.6. d = 29: 25.15; d = 30: 26.0.
      (29, 64, 20, 1.0, "exact"),
      (30, 64, 20, 1.0, "power"),
      # Premium 2 (51.2): d = 58: 2 * 29 * 0.85 + 1 = 50.3; d = 59: 52.0.
      (58, 3072, 20, 2.0, "exact"),
      (59, 3072, 20, 2.0, "power"),
      # min(d, n) counts: 100 logits of a 10-pixel input = 10 columns.
      (100, 10, 20, 1.0, "exact"),
  )
  def test_svd_decisions(self, d, n, k, premium, expected):
    self.assertEqual(
        _cost.cheaper_path(d, n, num_iters=k, exactness_premium=premium), expected)

  def test_differentiate_tips_towards_power(self):
    # d = 20, K = 20: exact 17.5 <= 25.6, but 35 > 26.8 when differentiated.
    self.assertEqual(_cost.cheaper_path(20, 64, num_iters=20), "exact")
    self.assertEqual(_cost.cheaper_path(20, 64, num_iters=20, differentiate=True), "power")

  @parameterized.parameters((1, 2), ("inf", "inf"), (3, 1), (1, 1))
  def test_other_closed_forms_are_exact(self, p, q):
    # Their power method is a local ascent: no cost makes it the same answer.
    self.assertEqual(_cost.cheaper_path(200, 3072, num_iters=1, p=float(p), q=float(q)), "exact")

  def test_crossover(self):
    self.assertEqual(_cost.crossover(3072, num_iters=20), 29)
    self.assertEqual(_cost.crossover(3072, num_iters=10), 15)
    self.assertEqual(_cost.crossover(3072, num_iters=20, exactness_premium=2.0), 58)

  @parameterized.parameters(
      dict(kw=dict(d=0), match="d=0"),
      dict(kw=dict(n=2.5), match="n=2.5"),
      dict(kw=dict(num_iters=-1), match="num_iters=-1"),
      dict(kw=dict(exactness_premium=0.0), match="exactness_premium=0.0"),
  )
  def test_invalid(self, kw, match):
    args = dict(d=10, n=64, num_iters=20)
    args.update(kw)
    with self.assertRaisesRegex(ValueError, match):
      _cost.cheaper_path(**args)


def _linear(n, d, seed=0):
  model = keras.Sequential([keras.Input((n,)), keras.layers.Dense(d, use_bias=False)])
  model.set_weights([np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)])
  return model


class OperatorNormAutoTest(tf.test.TestCase):

  def test_auto_follows_the_cost_model(self):
    self.assertEqual(AUTO_EXACTNESS_PREMIUM, 2.0)
    x = tf.random.normal([2, 64])
    # d = 10, K = 20: 9.0 <= 2 * 25.6: exact, sigma_1 of W^T.
    small = _linear(64, 10)
    result = operator_norm_fn(small, x)
    self.assertTrue(result.exact)
    sigma = np.linalg.svd(small.get_weights()[0], compute_uv=False)[0]
    self.assertAllClose(result.norm, [sigma, sigma], rtol=1e-5)
    # d = 64 (min(d, n) = 64): 2 * 32 * 0.85 + 1 = 55.4 > 51.2: power.
    self.assertFalse(operator_norm_fn(_linear(64, 64), x).exact)
    # K = 40 (49.6 * 2 = 99.2 >= 55.4): exact again.
    self.assertTrue(operator_norm_fn(_linear(64, 64), x, num_iters=40).exact)
    # Not (2, 2): exact up to exact_max_dim whatever the cost.
    self.assertTrue(operator_norm_fn(_linear(64, 64), x, p="inf", q="inf").exact)


class ObjectiveAutoDirectionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      # K = 10 (13.6): d = 10 -> 9.0, exact; d = 16 -> 14.1, power.
      (10, 64, 10, True),
      (16, 64, 10, False),
      # K = 1 (2.8): d = 2 -> 2.2, exact; d = 3 -> 3.05, power.
      (2, 3, 1, True),
      (3, 64, 1, False),
  )
  def test_auto_decision(self, d, n, k, expected):
    objective = objectives.OperatorNormRegularization(0.1, num_iters=k, direction="auto")
    self.assertEqual(objective.exact_direction(d, n), expected)

  def test_auto_without_closed_form_is_power(self):
    objective = objectives.OperatorNormRegularization(0.1, p="inf", q=2, direction="auto")
    self.assertFalse(objective.exact_direction(2, 3))
    # (inf, 1) has the vertex enumeration up to 12 logits only.
    objective = objectives.OperatorNormRegularization(0.1, p="inf", q=1, direction="auto")
    self.assertTrue(objective.exact_direction(10, 64))
    self.assertFalse(objective.exact_direction(13, 64))

  def test_power_is_never_exact(self):
    objective = objectives.OperatorNormRegularization(0.1, num_iters=1)
    self.assertEqual(objective.direction, "power")
    self.assertFalse(objective.exact_direction(2, 3))
