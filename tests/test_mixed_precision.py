"""Mixed precision: the regularised step under 'mixed_float16' / 'mixed_bfloat16'."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import callbacks
import training_testlib as tl

POLICIES = ["mixed_float16", "mixed_bfloat16"]


class MixedPrecisionTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self._policy = keras.config.dtype_policy()

  def tearDown(self):
    keras.config.set_dtype_policy(self._policy)
    super().tearDown()

  @parameterized.parameters(*POLICIES)
  def test_loss_scaling_gives_the_float32_update(self, policy):
    # Under mixed_float16 the step multiplies the loss by the loss scale S and
    # the LossScaleOptimizer divides the gradients by S, so the update must be
    # the hand-derived float32 SGD step (training_testlib.expected_linear_sgd)
    # up to half-precision rounding; a missing scale (or unscale) would be off
    # by S = 64. (Keras' default S = 2^15 overflows these float16 gradients on
    # the first step, which then is skipped, with or without keras_opnorm.)
    keras.config.set_dtype_policy(policy)
    x, y = tl.data()
    w0 = tl.linear_weights()
    model = tl.linear_model(weights=w0)
    optimizer = keras.optimizers.SGD(0.01)
    if policy == "mixed_float16":
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=64.0)
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
                        callbacks=[callbacks.ObjectiveCallback(tl.SquaredLogits(0.5))])
    expected = tl.expected_linear_sgd(w0, x, y, lr=0.01, weight=0.5)
    for got, want, start in zip(model.get_weights(), expected, w0):
      # Compare the update itself (weights are float32 variables).
      self.assertAllClose(got - start, want - start, rtol=3e-2, atol=2e-3)
    self.assertTrue(np.isfinite(history.history["loss"][0]))
    if policy == "mixed_float16":
      self.assertEqual(float(model.optimizer.dynamic_scale), 64.0)  # no overflow

  def test_default_loss_scale_optimizer_is_used(self):
    keras.config.set_dtype_policy("mixed_float16")
    x, y = tl.classification_data()
    model = tl.compile_ce(tl.mlp())
    self.assertIsInstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                        callbacks=[callbacks.AdversarialTraining(0.1, num_steps=1)])
    self.assertTrue(np.all(np.isfinite(history.history["adv_loss"])))

  @parameterized.product(
      policy=POLICIES,
      make=[lambda: callbacks.AdversarialTraining(0.1, p=2, num_steps=2),
            lambda: callbacks.OperatorNormRegularization(0.1, num_iters=2, weight=0.1),
            lambda: callbacks.SpectralNormRegularization(0.01)])
  def test_builtin_callbacks_train_with_finite_terms(self, policy, make):
    keras.config.set_dtype_policy(policy)
    x, y = tl.classification_data()
    model = tl.compile_ce(tl.mlp())
    self.assertEqual(model.layers[-1].compute_dtype, policy.split("_")[1])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[make()])
    for key, values in history.history.items():
      self.assertTrue(np.all(np.isfinite(values)), key)
    self.assertGreater(len(history.history), 1)


if __name__ == "__main__":
  tf.test.main()
