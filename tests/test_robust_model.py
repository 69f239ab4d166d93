"""Tests of keras_opnorm.RobustModel (the wrapper-model adapter)."""

import os

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import keras_opnorm
from keras_opnorm import objectives
import training_testlib as tl

LR = 0.1
WEIGHT = 0.5


class RobustModelTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(kind=["sequential", "functional", "subclassed"],
                         jit_compile=[False, True])
  def test_one_step_matches_hand_derived_sgd(self, kind, jit_compile):
    x, y = tl.data()
    w0 = tl.linear_weights()
    inner = tl.linear_model(kind, weights=w0)
    robust = keras_opnorm.RobustModel(inner, [tl.SquaredLogits(WEIGHT)])
    tl.compile_mse(robust, LR, jit_compile=jit_compile)
    history = robust.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    # One SGD step of MSE + WEIGHT * mean_j F^2 (training_testlib.expected_linear_sgd).
    expected = tl.expected_linear_sgd(w0, x, y, lr=LR, weight=WEIGHT)
    tl.assert_weights_close(self, inner.get_weights(), expected)
    self.assertIn("sq_sq", history.history)

  def test_call_delegates_and_evaluate_is_plain(self):
    x, y = tl.data()
    inner = tl.linear_model()
    robust = tl.compile_mse(keras_opnorm.RobustModel(inner, tl.SquaredLogits()), LR)
    robust.fit(x, y, batch_size=4, epochs=2, verbose=0)
    self.assertAllClose(robust.predict(x, verbose=0), inner.predict(x, verbose=0))
    self.assertEqual(set(robust.evaluate(x, y, verbose=0, return_dict=True)), {"loss"})

  def test_metrics_are_epoch_means(self):
    # lr = 0 freezes the model: the logged metric is the mean over the batches.
    x, y = tl.data()
    w0 = tl.linear_weights()
    robust = keras_opnorm.RobustModel(tl.linear_model(weights=w0), [tl.SquaredLogits()])
    tl.compile_mse(robust, 0.0)
    history = robust.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    f = x @ w0[0] + w0[1]
    expected = np.mean([np.mean(f[:4] ** 2), np.mean(f[4:] ** 2)])
    self.assertAllClose(history.history["sq_sq"], [expected, expected], rtol=1e-5)

  def test_real_objectives(self):
    x, y = tl.classification_data()
    robust = keras_opnorm.RobustModel(tl.mlp(), [
        objectives.AdversarialTraining(0.1, num_steps=1),
        objectives.SpectralNormRegularization(0.01)])
    tl.compile_ce(robust, metrics=["accuracy"])
    history = robust.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for key in ["loss", "accuracy", "adv_loss", "spectral_norm_max"]:
      self.assertTrue(np.isfinite(history.history[key][0]), key)

  def test_config_round_trip_and_save(self):
    x, y = tl.classification_data()
    robust = keras_opnorm.RobustModel(
        tl.mlp(), [objectives.AdversarialTraining(0.1, p=2, num_steps=2, loss="logit")],
        name="robust")
    tl.compile_ce(robust)
    robust.fit(x, y, epochs=1, verbose=0)
    config = robust.get_config()
    clone = keras_opnorm.RobustModel.from_config(config)
    self.assertEqual(clone.get_config(), config)
    self.assertEqual(clone.objectives[0].get_config(), robust.objectives[0].get_config())
    # The wrapper saves and loads with keras_opnorm imported ...
    path = os.path.join(self.get_temp_dir(), "robust.keras")
    robust.save(path)
    loaded = keras.saving.load_model(path)
    self.assertIsInstance(loaded, keras_opnorm.RobustModel)
    self.assertAllClose(loaded.predict(x, verbose=0), robust.predict(x, verbose=0))
    # ... and the deployable inner model holds no keras_opnorm object.
    inner_path = os.path.join(self.get_temp_dir(), "inner.keras")
    robust.model.save(inner_path)
    with open(inner_path, "rb") as f:
      self.assertNotIn(b"keras_opnorm", f.read())

  def test_export_delegates_to_inner_model(self):
    x, y = tl.data()
    robust = tl.compile_mse(keras_opnorm.RobustModel(tl.linear_model(), tl.SquaredLogits()))
    robust.fit(x, y, epochs=1, verbose=0)
    path = os.path.join(self.get_temp_dir(), "exported")
    robust.export(path, verbose=False)
    loaded = tf.saved_model.load(path)
    served = loaded.serve(x)
    self.assertAllClose(served, robust.model.predict(x, verbose=0), rtol=1e-6)

  def test_callback_adds_to_the_wrapper_objectives(self):
    x, y = tl.data()
    w0 = tl.linear_weights()
    inner = tl.linear_model(weights=w0)
    robust = tl.compile_mse(keras_opnorm.RobustModel(inner, [tl.SquaredLogits(0.2, name="a")]), LR)
    history = robust.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[
        keras_opnorm.callbacks.ObjectiveCallback(tl.SquaredLogits(0.3, name="b"))])
    # Both terms: weight 0.2 + 0.3 (training_testlib.expected_linear_sgd).
    expected = tl.expected_linear_sgd(w0, x, y, lr=LR, weight=0.5)
    tl.assert_weights_close(self, inner.get_weights(), expected)
    self.assertContainsSubset(["a_sq", "b_sq"], history.history)

  def test_bad_input(self):
    with self.assertRaisesRegex(TypeError, "keras.Model"):
      keras_opnorm.RobustModel(lambda x: x, [tl.SquaredLogits()])
    with self.assertRaisesRegex(ValueError, "non-empty"):
      keras_opnorm.RobustModel(tl.linear_model(), [])
    with self.assertRaisesRegex(ValueError, "objectives=None"):
      keras_opnorm.RobustModel(tl.linear_model(), None)
    with self.assertRaisesRegex(TypeError, "objective"):
      keras_opnorm.RobustModel(tl.linear_model(), ["adv"])

  def test_probability_output_fails_before_training(self):
    x, y = tl.classification_data()
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    w0 = inner.get_weights()
    robust = keras_opnorm.RobustModel(inner, [objectives.AdversarialTraining(0.1)])
    robust.compile("sgd", "sparse_categorical_crossentropy")
    with self.assertRaisesRegex(ValueError, "softmax"):
      robust.fit(x, y, epochs=1, verbose=0)
    tl.assert_weights_equal(self, inner.get_weights(), w0)


if __name__ == "__main__":
  tf.test.main()
