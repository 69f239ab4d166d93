"""Tests of keras_opnorm.layers.OperatorNormRegularizer (the regulariser layer)."""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import layers
import training_testlib as tl


def _linear(w, b):
  model = keras.Sequential([keras.Input((w.shape[0],)), keras.layers.Dense(w.shape[1])])
  model.set_weights([w, b])
  return model


def _wrapped_model(inner, **kwargs):
  inputs = keras.Input((inner.input_shape[-1],))
  outputs = layers.OperatorNormRegularizer(inner, **kwargs)(inputs)
  return keras.Model(inputs, outputs)


class OperatorNormRegularizerTest(tf.test.TestCase):

  def test_identity_in_inference_no_loss(self):
    x, _ = tl.data()
    inner = tl.linear_model()
    model = _wrapped_model(inner, epsilon=0.5)
    self.assertAllClose(model(x), inner(x))
    self.assertAllClose(model.predict(x, verbose=0), inner.predict(x, verbose=0))
    model(x, training=False)
    self.assertEqual(model.losses, [])

  def test_training_adds_the_closed_form_penalty(self):
    # For a linear g(x) = x W + b the Jacobian is W^T for every example, the
    # (2,2) power method converges to sigma_max(W), and the sum-of-squares
    # term is exact: ||g(x + eps v) - g(x)||_2 = eps ||W^T v||_2 = eps sigma_max.
    # So loss = weight/2 * eps^2 * sigma_max(W)^2 (the batch mean of a constant).
    w = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)
    b = np.array([0.5, -0.5], np.float32)
    x, _ = tl.data()
    eps, weight = 0.5, 0.2
    model = _wrapped_model(_linear(w, b), epsilon=eps, weight=weight, num_iters=20)
    out = model(x, training=True)
    self.assertAllClose(out, x @ w + b, rtol=1e-6)
    self.assertLen(model.losses, 1)
    self.assertAllClose(model.losses[0], weight / 2 * eps ** 2 * 3.0 ** 2, rtol=1e-4)

  def test_fit_gradient_includes_penalty(self):
    # One SGD step: MSE + weight/2 eps^2 ||W^T v||^2 with v = e_1 (top right
    # singular vector of W^T, sigma = 3): d/dW [weight/2 eps^2 ||W^T e_1||^2]
    # = weight eps^2 e_1 e_1^T W (only the first row of W).
    w = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)
    b = np.zeros(2, np.float32)
    x, y = tl.data()
    eps, weight, lr = 0.5, 0.2, 0.1
    inner = _linear(w, b)
    model = tl.compile_mse(_wrapped_model(inner, epsilon=eps, weight=weight, num_iters=20), lr)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    expected_w, expected_b = tl.expected_linear_sgd([w, b], x, y, lr=lr, weight=0.0)
    expected_w[0] -= lr * weight * eps ** 2 * w[0]
    got_w, got_b = inner.get_weights()
    self.assertAllClose(got_w, expected_w, rtol=1e-4, atol=1e-5)
    self.assertAllClose(got_b, expected_b, rtol=1e-4, atol=1e-5)

  def test_config_round_trip_and_save(self):
    x, _ = tl.classification_data()
    model = _wrapped_model(tl.mlp(), epsilon=0.3, p=2, q="inf", weight=0.05, num_iters=3)
    reg = model.layers[1]
    config = reg.get_config()
    clone = layers.OperatorNormRegularizer.from_config(config)
    self.assertEqual(clone.get_config()["epsilon"], 0.3)
    self.assertEqual(clone.get_config()["q"], "inf")
    path = os.path.join(self.get_temp_dir(), "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    self.assertAllClose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    loaded_config = loaded.layers[1].get_config()
    self.assertEqual(loaded_config.pop("layer")["class_name"], config.pop("layer")["class_name"])
    self.assertEqual(loaded_config, config)

  def test_bad_input(self):
    with self.assertRaisesRegex(TypeError, "keras.Layer"):
      layers.OperatorNormRegularizer(lambda x: x, epsilon=1.0)
    with self.assertRaisesRegex(ValueError, "epsilon"):
      layers.OperatorNormRegularizer(tl.linear_model(), epsilon=-1.0)
    with self.assertRaisesRegex(ValueError, "weight"):
      layers.OperatorNormRegularizer(tl.linear_model(), epsilon=1.0, weight=-1.0)
    softmax = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    with self.assertRaisesRegex(ValueError, "softmax"):
      _wrapped_model(softmax, epsilon=1.0)


if __name__ == "__main__":
  tf.test.main()
