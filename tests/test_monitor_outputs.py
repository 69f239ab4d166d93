"""The monitors on models with several outputs or probability outputs (`output=`, `from_logits=`)."""

import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import callbacks


def _two_output_model(w):
  """x -> {"logits": x W, "aux": sum(x)}: the logits' Jacobian is W^T at every x."""
  inputs = keras.Input((w.shape[0],))
  dense = keras.layers.Dense(w.shape[1], use_bias=False, name="logits")
  aux = keras.layers.Dense(1, name="aux")
  model = keras.Model(inputs, {"logits": dense(inputs), "aux": aux(inputs)})
  dense.set_weights([w])
  model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
                loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      "aux": "mse"})
  return model


class MonitorOutputTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.w = rng.normal(size=(6, 4)).astype(np.float32)
    self.x = rng.uniform(0.2, 0.8, (16, 6)).astype(np.float32)
    self.y = rng.integers(0, 4, 16)

  def test_operator_norm_of_the_named_output(self):
    model = _two_output_model(self.w)
    monitor = callbacks.OperatorNormMonitor(self.x[:8], output="logits")
    model.fit(self.x, {"logits": self.y, "aux": np.zeros(16, np.float32)}, epochs=1, verbose=0,
              callbacks=[monitor])
    sigma = np.linalg.svd(self.w, compute_uv=False)[0]
    self.assertAllClose(monitor.values[0][1], sigma, rtol=1e-4)

  def test_without_output_a_two_output_model_is_a_clear_error(self):
    model = _two_output_model(self.w)
    monitor = callbacks.OperatorNormMonitor(self.x[:8])
    with self.assertRaisesRegex(ValueError, "output"):
      model.fit(self.x, {"logits": self.y, "aux": np.zeros(16, np.float32)}, epochs=1,
                verbose=0, callbacks=[monitor])

  def test_probability_output_declared(self):
    # softmax(x W): with from_logits=False the library uses log p = x W - lse(x W),
    # whose Jacobian is (I - 1 p^T) W^T; its top singular value per example.
    inputs = keras.Input((6,))
    dense = keras.layers.Dense(4, use_bias=False, activation="softmax")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([self.w])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
                  loss="sparse_categorical_crossentropy")
    monitor = callbacks.OperatorNormMonitor(self.x[:8], from_logits=False)
    model.fit(self.x, self.y, epochs=1, verbose=0, callbacks=[monitor])
    expected = []
    for xi in self.x[:8]:
      z = xi @ self.w
      prob = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
      jac = (np.eye(4) - np.outer(np.ones(4), prob)) @ self.w.T
      expected.append(np.linalg.svd(jac, compute_uv=False)[0])
    self.assertAllClose(monitor.values[0][1], np.mean(expected), rtol=1e-4)
    # Undeclared, the softmax layer is refused.
    with self.assertRaisesRegex(ValueError, "softmax"):
      model.fit(self.x, self.y, epochs=1, verbose=0,
                callbacks=[callbacks.OperatorNormMonitor(self.x[:8])])

  def test_robust_accuracy_of_the_named_output(self):
    # Linear logits: the l2 robust accuracy at eps is the share of correct
    # examples whose distance (f_y - f_j) / ||w_y - w_j||_2 exceeds eps for all j.
    model = _two_output_model(self.w)
    logits = self.x @ self.w
    y = logits.argmax(axis=1)
    dist = np.array([min((logits[i, y[i]] - logits[i, j]) / np.linalg.norm(self.w[:, y[i]] - self.w[:, j])
                         for j in range(4) if j != y[i]) for i in range(16)])
    eps = float(np.median(dist))
    monitor = callbacks.RobustAccuracy(self.x, y, epsilon=eps, p=2, attack="fast", output="logits")
    model.fit(self.x, {"logits": y, "aux": np.zeros(16, np.float32)}, epochs=1, verbose=0,
              callbacks=[monitor])
    self.assertAllClose(monitor.values[0][1], np.mean(dist > eps), atol=1 / 16 + 1e-6)

  def test_config_round_trip(self):
    monitor = callbacks.OperatorNormMonitor(self.x[:4], output="logits", from_logits=False)
    config = monitor.get_config()
    self.assertEqual(config["output"], "logits")
    self.assertFalse(config["from_logits"])
    again = callbacks.OperatorNormMonitor.from_config(config)
    self.assertEqual((again.output, again.from_logits), ("logits", False))
    self.assertNotIn("output", callbacks.OperatorNormMonitor(self.x[:4]).get_config())
