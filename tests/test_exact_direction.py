"""Tests of OperatorNormRegularization(direction=...): the exact direction.

On a linear model f(x) = x W (J = W^T for every x, top singular value
sigma_1), the exact top right singular vector v gives, by the objective's
docstring formula (f(x + eps v) - f(x) = eps J v, ||J v||_2 = sigma_1):
  sum of squares: weight * 1/2 * ||eps J v||^2        = weight * eps^2 sigma_1^2 / 2
  Jacobian:       weight * 1/2 * eps^2 (u^T J v)^2    = the same.
One power iteration from a random start falls short of it when sigma_2 is
close to sigma_1.
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import callbacks
from keras_opnorm import objectives

# sigma = (3, 2.9): the power method converges slowly ((2.9/3)^(2K)).
_W = np.array([[3.0, 0.0], [0.0, 2.9], [0.0, 0.0]], np.float32)  # n = 3, d = 2


def _model(w=_W):
  model = keras.Sequential([keras.Input((w.shape[0],)),
                            keras.layers.Dense(w.shape[1], use_bias=False)])
  model.set_weights([w])
  return model


class ExactDirectionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(form=["sum_of_squares", "jacobian"], direction=["exact", "auto"])
  def test_penalty_is_the_closed_form(self, form, direction):
    model = _model()
    x = tf.random.stateless_normal([5, 3], seed=[1, 2])
    eps, weight = 0.5, 2.0
    # auto with K = 1, d = 2, n = 3: exact 2.2 <= power 2.8 (test_cost_model).
    objective = objectives.OperatorNormRegularization(
        eps, weight=weight, num_iters=1, form=form, direction=direction)
    objective.build(model)
    loss, metrics = objective(model, x, None, model(x))
    # weight * eps^2 * sigma_1^2 / 2 = 2 * 0.25 * 9 / 2 = 2.25.
    self.assertAllClose(loss, 2.25, rtol=1e-5)
    self.assertAllClose(metrics["opnorm"], 3.0, rtol=1e-6)

  def test_power_direction_falls_short(self):
    model = _model()
    x = tf.random.stateless_normal([64, 3], seed=[1, 2])
    objective = objectives.OperatorNormRegularization(0.5, weight=2.0, num_iters=1)
    objective.build(model)
    loss, _ = objective(model, x, None, model(x))
    self.assertLess(float(loss), 2.25 * (1 - 1e-3))

  def test_gradient_matches_closed_form(self):
    # d/dW of weight/2 * eps^2 * ||W^T v||^2 with v fixed = weight eps^2 v (W^T v)^T.
    model = _model()
    x = tf.random.stateless_normal([4, 3], seed=[3, 4])
    objective = objectives.OperatorNormRegularization(0.5, weight=2.0, direction="exact")
    objective.build(model)
    with tf.GradientTape() as tape:
      loss, _ = objective(model, x, None, model(x))
    grad = tape.gradient(loss, model.trainable_variables[0])
    v = np.array([1.0, 0.0, 0.0], np.float32)  # Top right singular vector of W^T (up to sign).
    expected = 2.0 * 0.25 * np.outer(v, _W.T @ v)
    self.assertAllClose(grad, expected, atol=1e-5)

  def test_exact_needs_a_closed_form(self):
    with self.assertRaisesRegex(ValueError, "direction='exact'.*p=inf"):
      objectives.OperatorNormRegularization(0.1, p="inf", q=2, direction="exact")
    with self.assertRaisesRegex(ValueError, "direction='sideways'"):
      objectives.OperatorNormRegularization(0.1, direction="sideways")
    # (inf, inf) has one (the largest row l1 norm).
    objectives.OperatorNormRegularization(0.1, p="inf", q="inf", direction="exact")

  def test_config_round_trip(self):
    objective = objectives.OperatorNormRegularization(0.1, direction="auto")
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(objective))
    self.assertEqual(restored.direction, "auto")
    self.assertEqual(restored.get_config(), objective.get_config())
    cb = callbacks.OperatorNormRegularization(0.1, direction="exact", warmup_epochs=2)
    self.assertEqual(cb.objective.direction, "exact")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cb))
    self.assertEqual(restored.get_config(), cb.get_config())
    self.assertEqual(restored.objective.direction, "exact")

  def test_fit_with_exact_direction(self):
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.zeros((8, 2), np.float32)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[
        callbacks.OperatorNormRegularization(0.5, weight=2.0, direction="exact")])
    self.assertAllClose(history.history["opnorm"], [3.0], rtol=1e-5)
    self.assertAllClose(history.history["opnorm_loss"], [0.25 * 9 / 2], rtol=1e-5)
