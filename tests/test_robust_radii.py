"""Tests for evaluation.robust_radii: per-example radii by FMN and their curve."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from keras_opnorm import evaluation
from keras_opnorm import norms


def _linear(seed=0, n=6, d=4, batch=40):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(n, d)).astype(np.float32)
  b = rng.normal(size=d).astype(np.float32)
  x = rng.normal(size=(batch, n)).astype(np.float32)
  return w, b, x


def _exact_radii(w, b, x, y, p):
  # Linear f(x) = x W + b: the lp distance from x to {z: f_y(z) = f_j(z)} is
  # |f_y(x) - f_j(x)| / ||w_y - w_j||_{p*}; the exact robust radius is the
  # minimum over j != y (0 where x is misclassified).
  z = x @ w + b
  p_star = norms.dual_exponent(p)
  out = []
  for i in range(len(x)):
    if z[i].argmax() != y[i]:
      out.append(0.0)
      continue
    out.append(min(abs(z[i, y[i]] - z[i, j]) / np.linalg.norm(w[:, y[i]] - w[:, j], ord=p_star)
                   for j in range(w.shape[1]) if j != y[i]))
  return np.array(out)


class RobustRadiiTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(float("inf"), 2.0, 1.0)
  def test_linear_model_radii_are_exact(self, p):
    w, b, x = _linear()
    y = (x @ w + b).argmax(1)
    y[:5] = (y[:5] + 1) % 4  # five misclassified examples: radius 0
    result = evaluation.robust_radii(lambda t: tf.matmul(t, w) + b, x, y, p=p, batch_size=16)
    exact = _exact_radii(w, b, x, y, p)
    radii = np.array(result.radii)
    np.testing.assert_array_equal(radii[:5], 0.0)
    # FMN's radii are upper bounds (adversarial points) and reach the exact
    # radius up to the tolerance of its final steps (measured < 7e-3 for l1).
    self.assertTrue(np.all(radii[5:] >= exact[5:] * (1 - 1e-4)))
    np.testing.assert_allclose(radii[5:], exact[5:], rtol=1e-2)
    self.assertAlmostEqual(result.clean_accuracy, 35 / 40)

  def test_curve_counts_radii_above_each_epsilon(self):
    # Radii 0 (misclassified), 0.5, 1, 2 and inf: at eps = 0.75 three of five
    # (1, 2, inf) are above; an example broken at exactly eps counts as
    # broken, so at eps = 1 it is 2/5; eps = 0 is the clean accuracy.
    result = evaluation.RobustRadii(radii=[0.0, 0.5, 1.0, 2.0, float("inf")],
                                    clean_accuracy=0.8, p=2.0, num_examples=5, num_steps=10)
    self.assertAlmostEqual(result.accuracy_at(0.75), 3 / 5)
    self.assertAlmostEqual(result.accuracy_at(1.0), 2 / 5)
    self.assertEqual(result.median(), 1.0)
    curve = result.curve([1.0, 0.0, 3.0])
    self.assertEqual(curve.epsilons, [0.0, 1.0, 3.0])
    self.assertEqual(curve.accuracies, [0.8, 0.4, 0.2])
    self.assertEqual(result.to_dict()["radii"][-1], "inf")

  def test_bad_input(self):
    w, b, x = _linear(batch=4)
    f = lambda t: tf.matmul(t, w) + b
    with self.assertRaisesRegex(ValueError, "num_steps"):
      evaluation.robust_radii(f, x, np.zeros(4, np.int32), num_steps=0)
    with self.assertRaisesRegex(ValueError, "`y` is required"):
      evaluation.robust_radii(f, x)


if __name__ == "__main__":
  tf.test.main()
