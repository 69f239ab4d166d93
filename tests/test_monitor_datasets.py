"""The monitors accept a batched tf.data.Dataset like the evaluation functions.

Each check puts an array-fed and a dataset-fed monitor (different ``name``)
into the same ``fit``: both evaluate the same model at the same epoch end, so
the dataset version must log the array version's value. The computations are
per example (no randomness: PGD without random start), so the dataset's own
batching (5, with a short last batch) does not change the value.
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm.callbacks import monitors


def _data(count=12, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((count, 3)).astype(np.float32)
  y = (x[:, 0] - x[:, 1] > 0).astype(np.int32)
  return x, y


def _mlp():
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(2)])
  model.compile(keras.optimizers.SGD(0.1),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _dataset(x, y, kind):
  if kind == "x":
    return tf.data.Dataset.from_tensor_slices(x).batch(5)
  if kind == "xy":
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
  w = np.ones(len(x), np.float32)
  return tf.data.Dataset.from_tensor_slices((x, y, w)).batch(5)


def _fit_both(array_monitor, dataset_monitor):
  x, y = _data(16, seed=1)
  history = _mlp().fit(x, y, epochs=2, batch_size=8, verbose=0,
                       callbacks=[array_monitor, dataset_monitor])
  return history.history[array_monitor.name], history.history[dataset_monitor.name]


_PGD = dict(epsilon=0.3, num_steps=3, random_start=False)


class MonitorDatasetTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters("x", "xy", "xyw")
  def test_operator_norm_monitor(self, kind):
    x, y = _data()
    a, b = _fit_both(monitors.OperatorNormMonitor(x, name="a", batch_size=8),
                     monitors.OperatorNormMonitor(_dataset(x, y, kind), name="b"))
    self.assertLen(b, 2)
    self.assertAllClose(b, a, rtol=1e-5)

  @parameterized.parameters("xy", "xyw")
  def test_robust_accuracy(self, kind):
    x, y = _data()
    a, b = _fit_both(monitors.RobustAccuracy(x, y, name="a", batch_size=8, **_PGD),
                     monitors.RobustAccuracy(_dataset(x, y, kind), name="b", **_PGD))
    self.assertLen(b, 2)
    self.assertEqual(b, a)

  @parameterized.parameters(("x", False), ("xy", True))
  def test_alignment_monitor(self, kind, labels):
    # An x-only dataset attacks the model's predictions, like y=None with arrays.
    x, y = _data()
    a, b = _fit_both(
        monitors.AlignmentMonitor(x, y=y if labels else None, name="a", batch_size=8, **_PGD),
        monitors.AlignmentMonitor(_dataset(x, y, kind), name="b", **_PGD))
    self.assertLen(b, 2)
    self.assertAllClose(b, a, rtol=1e-5)

  def test_dataset_errors_name_the_argument(self):
    x, y = _data()
    with self.assertRaisesRegex(ValueError, "Labels are needed.*`x`"):
      monitors.RobustAccuracy(_dataset(x, y, "x"), epsilon=0.1)
    with self.assertRaisesRegex(ValueError, "`y` must be None when `x` is a tf.data.Dataset"):
      monitors.RobustAccuracy(_dataset(x, y, "xy"), y, epsilon=0.1)
    with self.assertRaisesRegex(ValueError, "`y` must be None when `x` is a tf.data.Dataset"):
      monitors.AlignmentMonitor(_dataset(x, y, "xy"), epsilon=0.1, y=y)
    with self.assertRaisesRegex(ValueError, "`epsilon`.*Received: epsilon=None"):
      monitors.RobustAccuracy(_dataset(x, y, "xy"))
    with self.assertRaisesRegex(NotImplementedError, "cannot be serialised.*`x`"):
      monitors.OperatorNormMonitor(_dataset(x, y, "x")).get_config()

  @parameterized.parameters("opnorm", "robust", "alignment")
  def test_outside_fit_names_the_model_argument(self, kind):
    x, y = _data()
    monitor = {
        "opnorm": lambda: monitors.OperatorNormMonitor(x),
        "robust": lambda: monitors.RobustAccuracy(x, y, epsilon=0.1),
        "alignment": lambda: monitors.AlignmentMonitor(x, epsilon=0.1),
    }[kind]()
    with self.assertRaisesRegex(ValueError, r"`model` is not set.*Received: model=None"):
      monitor.on_epoch_end(0, {})


if __name__ == "__main__":
  tf.test.main()
