"""Small models, a hand-checkable objective and probes for the training tests.

Used by test_training.py, test_callbacks.py, test_robust_model.py,
test_layers.py and test_mixed_precision.py.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import objectives


@keras.saving.register_keras_serializable(package="keras_opnorm_tests")
class SquaredLogits(objectives.Objective):
  """``weight * sum_i w_i * mean_j f(x_i)_j^2 / batch_size`` on ``y_pred``.

  A term whose gradient is easy to derive by hand: for ``f(x) = x W + b``
  (``F = X W + b``, ``d`` outputs, ``n`` examples) it is
  ``d/dW = 2 * weight / (n d) * X^T diag(w) F``. Metric ``{name}_sq``: the
  unweighted mean of ``mean_j f_j^2`` over the batch.
  """

  default_name = "sq"

  def __init__(self, weight=0.5, replace_clean_loss=False, name=None, declare_metrics=True):
    super().__init__(name=name)
    self._add_hyperparameter("weight", weight, _nonnegative)
    self.replace_clean_loss = replace_clean_loss
    self.declare_metrics = declare_metrics
    self.calls = 0

  @property
  def metric_names(self):
    # Declared metric names let the train step make its trackers eagerly;
    # without them they are made during the first trace.
    return (f"{self.name}_sq",) if self.declare_metrics else None

  def _validate_model(self, model):
    del model

  @property
  def clean_loss_weight(self):
    return 0.0 if self.replace_clean_loss else 1.0

  def call(self, model, x, y, y_pred, sample_weight=None):
    self.calls += 1  # counts traces (Python side effect)
    per_example = tf.reduce_mean(tf.square(tf.cast(y_pred, tf.float32)), axis=-1)
    loss = self._hyperparameter("weight") * objectives.weighted_batch_mean(
        per_example, sample_weight)
    return loss, {f"{self.name}_sq": tf.reduce_mean(per_example)}

  def get_config(self):
    return {**super().get_config(), **self._hyper_config(),
            "replace_clean_loss": self.replace_clean_loss}


def _nonnegative(value, name):
  value = float(value)
  if value < 0:
    raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")
  return value


def linear_weights(n_in=3, n_out=2, seed=0):
  rng = np.random.RandomState(seed)
  return [rng.normal(size=(n_in, n_out)).astype("float32"),
          rng.normal(size=(n_out,)).astype("float32")]


def data(n=8, n_in=3, n_out=2, seed=1):
  rng = np.random.RandomState(seed)
  x = rng.normal(size=(n, n_in)).astype("float32")
  y = rng.normal(size=(n, n_out)).astype("float32")
  return x, y


def classification_data(n=8, n_in=4, classes=3, seed=1):
  rng = np.random.RandomState(seed)
  x = rng.uniform(-1, 1, size=(n, n_in)).astype("float32")
  y = rng.randint(0, classes, size=(n,)).astype("int32")
  return x, y


class SubclassedLinear(keras.Model):

  def __init__(self, units=2, **kwargs):
    super().__init__(**kwargs)
    self.dense = keras.layers.Dense(units)

  def call(self, x):
    return self.dense(x)


def linear_model(kind="sequential", n_in=3, n_out=2, weights=None):
  """``f(x) = x W + b`` built three ways, with the given (or seeded) weights."""
  if kind == "sequential":
    model = keras.Sequential([keras.Input((n_in,)), keras.layers.Dense(n_out)])
  elif kind == "functional":
    inputs = keras.Input((n_in,))
    model = keras.Model(inputs, keras.layers.Dense(n_out)(inputs))
  elif kind == "subclassed":
    model = SubclassedLinear(n_out)
    model(np.zeros((1, n_in), np.float32))  # builds the Dense layer
  else:
    raise ValueError(kind)
  model.set_weights(weights if weights is not None else linear_weights(n_in, n_out))
  return model


def mlp(n_in=4, classes=3, hidden=8, batch_norm=False, dropout=0.0, seed=0):
  keras.utils.set_random_seed(seed)
  layers = [keras.Input((n_in,)), keras.layers.Dense(hidden)]
  if batch_norm:
    layers.append(keras.layers.BatchNormalization())
  layers.append(keras.layers.ReLU())
  if dropout:
    layers.append(keras.layers.Dropout(dropout))
  layers.append(keras.layers.Dense(classes))
  return keras.Sequential(layers)


def compile_mse(model, lr=0.1, **kwargs):
  model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse", **kwargs)
  return model


def compile_ce(model, lr=0.05, **kwargs):
  model.compile(
      optimizer=keras.optimizers.SGD(lr),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kwargs)
  return model


def expected_linear_sgd(weights, x, y, *, lr, weight, sample_weight=None, clean=1.0):
  """One SGD step of ``clean * MSE + weight * mean_j F^2`` on ``F = X W + b``.

  With ``n`` examples, ``d`` outputs, ``w_i`` the sample weights (1 if None)
  and Keras' "sum_over_batch_size" reduction (divide by ``n``)::

    L = clean * sum_i w_i ||F_i - Y_i||^2 / (n d) + weight * sum_i w_i ||F_i||^2 / (n d)
    dL/dF_i = 2 w_i (clean (F_i - Y_i) + weight F_i) / (n d)
    dL/dW = X^T dL/dF,   dL/db = sum_i dL/dF_i
  """
  w, b = weights
  n, d = x.shape[0], w.shape[1]
  sw = np.ones(n, np.float64) if sample_weight is None else np.asarray(sample_weight, np.float64)
  f = x.astype(np.float64) @ w + b
  g = 2.0 * sw[:, None] * (clean * (f - y) + weight * f) / (n * d)
  return [w - lr * (x.T @ g), b - lr * g.sum(0)]


def assert_weights_close(test, weights, expected):
  """Asserts ``weights`` match ``expected`` array by array (float32 tolerance)."""
  for got, want in zip(weights, expected):
    test.assertAllClose(got, want, rtol=1e-5, atol=1e-6)


def assert_weights_equal(test, weights, expected):
  """Asserts ``weights`` equal ``expected`` array by array, exactly."""
  for got, want in zip(weights, expected):
    test.assertAllEqual(got, want)


class Recorder(keras.callbacks.Callback):
  """Records, per epoch begin, the objectives installed and hyper-parameters."""

  def __init__(self, objective=None, names=("weight",)):
    super().__init__()
    self.objective = objective
    self.names = names
    self.epochs = []
    self.installed = []
    self.values = []

  def on_epoch_begin(self, epoch, logs=None):
    from keras_opnorm import training  # pylint: disable=g-import-not-at-top
    self.epochs.append(epoch)
    self.installed.append(len(training.installed_objectives(self.model)))
    if self.objective is not None:
      self.values.append({n: self.objective.get_hyperparameter(n) for n in self.names})


class RaiseAt(keras.callbacks.Callback):
  """Raises ``RuntimeError`` at a given batch of a given epoch (simulated crash)."""

  def __init__(self, epoch=0, batch=0, where="batch_end"):
    super().__init__()
    self.epoch, self.batch, self.where = epoch, batch, where
    self._epoch = None

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    if self.where == "epoch_begin" and epoch == self.epoch:
      raise RuntimeError("simulated crash")

  def on_train_batch_end(self, batch, logs=None):
    if self.where == "batch_end" and self._epoch == self.epoch and batch == self.batch:
      raise RuntimeError("simulated crash")
