"""Tests for the monitor callbacks (keras_opnorm.callbacks.monitors)."""

import json
import math

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm.callbacks import monitors


def _data(count=32, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((count, 3)).astype(np.float32)
  y = (x[:, 0] - x[:, 1] > 0).astype(np.int32)
  return x, y


def _linear_classifier():
  """Binary linear classifier ``x -> W x + b`` (W is the Dense kernel transposed)."""
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  model.compile(keras.optimizers.SGD(0.1),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _mlp():
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(2)])
  model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _make(kind, x, y, **kwargs):
  if kind == "opnorm":
    return monitors.OperatorNormMonitor(x, **kwargs)
  if kind == "robust":
    return monitors.RobustAccuracy(x, y, epsilon=0.3, num_steps=3, **kwargs)
  return monitors.AlignmentMonitor(x, epsilon=0.3, num_steps=3, **kwargs)


_KEYS = {"opnorm": "val_opnorm", "robust": "val_robust_acc", "alignment": "val_alignment"}


def _boundary_distances(model, x, y):
  """l2 distance of each (x, y) to the boundary of a linear binary classifier.

  With logits z = W x + b, the margin m = (w_y - w_o) x + b_y - b_o is linear,
  so the distance is m / ||w_y - w_o||_2 (negative where misclassified).
  """
  k, b = (v.numpy() for v in model.layers[-1].weights)
  w = k.T
  diff = w[y] - w[1 - y]
  return (np.sum(diff * x, axis=1) + b[y] - b[1 - y]) / np.linalg.norm(diff, axis=1)


class MonitorsTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters("opnorm", "robust", "alignment")
  def test_fit_logs_to_history_and_later_callbacks(self, kind):
    x, y = _data()
    model = _mlp()
    monitor = _make(kind, x[:16], y[:16])
    seen = []
    later = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(logs.get(_KEYS[kind])))
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor, later])
    values = history.history[_KEYS[kind]]
    self.assertLen(values, 2)
    self.assertTrue(all(isinstance(v, float) and math.isfinite(v) for v in values))
    self.assertEqual(seen, values)  # a callback after the monitor (TensorBoard) sees it
    self.assertEqual([v for _, v in monitor.values], values)
    if kind != "opnorm":
      self.assertTrue(all(0.0 <= v <= 1.0 for v in values))

  @parameterized.parameters("opnorm", "robust", "alignment")
  def test_compiled_once_and_reusable_across_fits(self, kind):
    x, y = _data()
    model = _mlp()
    monitor = _make(kind, x[:16], y[:16])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    kernel = monitor._kernel  # pylint: disable=protected-access
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor])
    self.assertIs(monitor._kernel, kernel)  # pylint: disable=protected-access
    self.assertLen(monitor.values, 1)  # per-run state reset in on_train_begin
    self.assertLen(history.history[_KEYS[kind]], 1)
    # One trace of the compiled function over three epochs and two fits.
    fn = {"opnorm": lambda k: k.norm, "robust": lambda k: k.robust,
          "alignment": lambda k: k.perturbation}[kind](kernel)
    self.assertEqual(fn.experimental_get_tracing_count(), 1)
    # A new model gets its own kernel.
    monitor_model = _mlp()
    monitor_model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor])
    self.assertIsNot(monitor._kernel, kernel)  # pylint: disable=protected-access

  def test_every_n_epochs(self):
    x, y = _data()
    monitor = monitors.OperatorNormMonitor(x[:8], every_n_epochs=2, name="opn")
    history = _mlp().fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[monitor])
    # Like Keras' validation_freq: logged at epochs 2 (index 1) only.
    self.assertLen(history.history["opn"], 1)
    self.assertEqual([e for e, _ in monitor.values], [1])

  def test_operator_norm_closed_form(self):
    # Linear model: J = W at every x, so the logged value after the last
    # epoch is sigma_max of the final kernel (Dense computes x @ K, W = K^T).
    x, y = _data()
    model = _linear_classifier()
    monitor = monitors.OperatorNormMonitor(x[:8], num_iters=50)
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    kernel = model.layers[-1].kernel.numpy()
    self.assertAllClose(history.history["val_opnorm"][-1],
                        np.linalg.svd(kernel, compute_uv=False)[0], rtol=1e-3)

  def test_robust_accuracy_closed_form(self):
    # Linear binary classifier, l2 PGD without random start: (x, y) is robust
    # at eps iff its distance to the boundary m / ||w_y - w_o||_2 exceeds eps
    # (see tests/test_evaluation.py for the derivation).
    x, y = _data()
    model = _linear_classifier()
    monitor = monitors.RobustAccuracy(x, y, epsilon=0.3, p=2, num_steps=20,
                                      random_start=False)
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    distance = _boundary_distances(model, x, y)
    self.assertGreater(np.min(np.abs(distance - 0.3)), 1e-4)
    self.assertAllClose(history.history["val_robust_acc"][-1], np.mean(distance > 0.3))

  def test_robust_accuracy_fast_ensemble_closed_form(self):
    # The same linear binary classifier under the fast AutoAttack cascade: the
    # exact robust accuracy is the share of distances above eps, and APGD on
    # a linear model reaches the boundary of every point closer than eps.
    x, y = _data()
    model = _linear_classifier()
    monitor = monitors.RobustAccuracy(x, y, epsilon=0.3, p=2, attack="fast")
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    distance = _boundary_distances(model, x, y)
    self.assertGreater(np.min(np.abs(distance - 0.3)), 1e-4)
    self.assertAllClose(history.history["val_robust_acc"][-1], np.mean(distance > 0.3))

  def test_alignment_centered_logs_both(self):
    x, y = _data()
    monitor = monitors.AlignmentMonitor(x[:8], epsilon=0.2, y=y[:8], num_steps=3,
                                        centered=True)
    history = _mlp().fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor])
    self.assertIn("val_alignment", history.history)
    self.assertIn("val_alignment_centered", history.history)

  @parameterized.parameters("opnorm", "robust", "alignment")
  def test_get_config_round_trip(self, kind):
    x, y = _data(count=4)
    monitor = _make(kind, x, y, every_n_epochs=3, name="m")
    config = monitor.get_config()
    clone = type(monitor).from_config(config)
    self.assertAllClose(clone.x, x)
    self.assertEqual(clone.every_n_epochs, 3)
    # Through Keras serialisation and JSON (registered class, numpy arrays).
    serialized = keras.saving.serialize_keras_object(monitor)
    self.assertEqual(serialized["registered_name"], f"keras_opnorm>{type(monitor).__name__}")
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    self.assertIsInstance(restored, type(monitor))
    restored_config = restored.get_config()
    self.assertEqual(sorted(restored_config), sorted(config))
    for key, value in config.items():
      if isinstance(value, np.ndarray):
        self.assertAllClose(restored_config[key], value)
      else:
        self.assertEqual(restored_config[key], value)

  def test_bad_arguments(self):
    x, y = _data(count=4)
    with self.assertRaisesRegex(ValueError, "`every_n_epochs` must be a positive integer"):
      monitors.OperatorNormMonitor(x, every_n_epochs=0)
    with self.assertRaisesRegex(ValueError, "`epsilon` must be a positive"):
      monitors.RobustAccuracy(x, y, epsilon=0.0)
    with self.assertRaisesRegex(ValueError, "`y` must hold"):
      monitors.RobustAccuracy(x, y[:2], epsilon=0.1)
    with self.assertRaisesRegex(ValueError, "`name` must be a non-empty string"):
      monitors.AlignmentMonitor(x, epsilon=0.1, name="")
    # Datasets are accepted (tests/test_monitor_datasets.py); integer ones are not.
    with self.assertRaisesRegex(TypeError, "`x` must be a tf.data.Dataset of floating-point"):
      monitors.OperatorNormMonitor(tf.data.Dataset.from_tensor_slices(y).batch(2))
    with self.assertRaisesRegex(ValueError, "`p` must be"):
      monitors.OperatorNormMonitor(x, p=0.5)


if __name__ == "__main__":
  tf.test.main()
