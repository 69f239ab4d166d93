"""`SpectralNormRegularization` on a model that is not built before ``fit``.

A subclassed model whose layers are made in ``__init__`` has no kernels until
its first call, which Keras (without a tf.distribute strategy) defers to the
first traced train step. The objective then makes its power-iteration vectors
on that first batch. Checked against numpy (the largest singular value of each
kernel matrix) and against the same model built beforehand, from the same
seeded vectors and the same seeded initial weights.
"""

import keras
import numpy as np
import tensorflow as tf

import keras_opnorm
from keras_opnorm import callbacks
from keras_opnorm import objectives


class ConvNet(keras.Model):
  """Conv2D -> Flatten -> Dense, layers created in ``__init__`` (never called)."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.conv = keras.layers.Conv2D(3, 2, kernel_initializer=keras.initializers.GlorotUniform(1))
    self.flatten = keras.layers.Flatten()
    self.dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(2))

  def call(self, x):
    return self.dense(self.flatten(self.conv(x)))


class NoKernels(keras.Model):

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.act = keras.layers.Activation("relu")

  def call(self, x):
    return self.act(x)


def _data(n=4):
  rng = np.random.default_rng(0)
  return (rng.uniform(0, 1, (n, 4, 4, 1)).astype("float32"),
          rng.integers(0, 2, n).astype("int32"))


def _compile(model, lr):
  model.compile(optimizer=keras.optimizers.SGD(lr),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _numpy_sigmas(model):
  """Largest singular value of each (out, in*k*k) kernel matrix (numpy SVD)."""
  sigmas = []
  for layer in (model.conv, model.dense):
    k = layer.kernel.numpy()
    m = np.moveaxis(k, -1, 0).reshape(k.shape[-1], -1)
    sigmas.append(np.linalg.svd(m, compute_uv=False)[0])
  return np.array(sigmas)


class UnbuiltModelTest(tf.test.TestCase):

  def test_build_defers_the_vectors(self):
    model = ConvNet()
    objective = objectives.SpectralNormRegularization(seed=0)
    objective.build(model)  # used to raise "needs a built model"
    self.assertEqual(objective.kernel_layers, [])
    self.assertLen(objective.variables, 1)  # the weight only

  def test_callback_fit_logs_the_spectral_norms(self):
    # lr = 0: the kernels stay at their initial values; 60 power iterations
    # on one batch converge, so the logs are sigma_max and 1/2 sum sigma^2.
    model = _compile(ConvNet(), lr=0.0)
    x, y = _data()
    snr = callbacks.SpectralNormRegularization(1.0, num_iters=60, seed=0)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[snr])
    sigmas = _numpy_sigmas(model)
    self.assertEqual(snr.objective.kernel_layers, [model.conv, model.dense])
    self.assertAllClose(history.history["spectral_norm_max"][0], sigmas.max(), rtol=1e-4)
    self.assertAllClose(history.history["spectral_norm_loss"][0], 0.5 * np.sum(sigmas ** 2),
                        rtol=1e-4)

  def test_same_update_as_the_built_model(self):
    # Same seeded initial weights and vectors: the unbuilt model trains to the
    # same weights and power-iteration vectors as the model built beforehand.
    x, y = _data(8)
    runs = []
    for prebuild in (False, True):
      model = ConvNet()
      if prebuild:
        model(x[:1])
      _compile(model, lr=0.1)
      snr = callbacks.SpectralNormRegularization(0.5, seed=3)
      history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                          callbacks=[snr])
      runs.append((model.get_weights(), [v.numpy() for v in snr.objective.variables],
                   history.history))
    (w0, v0, h0), (w1, v1, h1) = runs
    self.assertLen(v0, 3)  # weight, u_conv, u_dense
    for a, b in zip(w0 + v0, w1 + v1):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-7)
    for key in ("loss", "spectral_norm_max", "spectral_norm_loss"):
      self.assertAllClose(h0[key], h1[key], rtol=1e-6)

  def test_robust_model_with_an_unbuilt_inner_model(self):
    inner = ConvNet()
    robust = keras_opnorm.RobustModel(
        inner, [objectives.SpectralNormRegularization(1.0, num_iters=60, seed=0)])
    _compile(robust, lr=0.0)
    x, y = _data()
    history = robust.fit(x, y, batch_size=4, epochs=1, verbose=0)
    sigmas = _numpy_sigmas(inner)
    self.assertAllClose(history.history["spectral_norm_max"][0], sigmas.max(), rtol=1e-4)

  def test_no_kernels_is_an_error_on_the_first_batch(self):
    model = NoKernels()
    model.compile(optimizer="sgd", loss="mse")
    x, _ = _data()
    with self.assertRaisesRegex(ValueError, "no Dense or Conv kernels"):
      model.fit(x, x, batch_size=4, epochs=1, verbose=0,
                callbacks=[callbacks.SpectralNormRegularization(0.1)])


if __name__ == "__main__":
  tf.test.main()
