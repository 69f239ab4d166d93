"""Tests for keras_opnorm.models: shapes, layer counts, piecewise linearity."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import models


def _count(model, cls):
  return sum(isinstance(layer, cls) for layer in model.layers)


class ModelsTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(
      ("mlp_digits_flat", "mlp", (64,)),
      ("mlp_digits_image", "mlp", (8, 8, 1)),
      ("cnn_digits", "cnn", (8, 8, 1)),
      ("cnn_mnist", "cnn", (28, 28, 1)),
      ("small_cnn_cifar", "small_cnn", (32, 32, 3)),
  )
  def test_outputs_logits(self, name, shape):
    model = models.build(name, shape, 10)
    x = np.random.default_rng(0).uniform(size=(2,) + shape).astype(np.float32)
    out = model(x, training=False)
    self.assertEqual(tuple(out.shape), (2, 10))
    # Logits, not probabilities: rows do not sum to one and can be negative.
    self.assertNotAllClose(tf.reduce_sum(out, axis=1), [1.0, 1.0])

  def test_mlp_is_the_probe_network(self):
    model = models.build("mlp", (64,), 10)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    self.assertEqual([d.units for d in dense], [256, 256, 10])
    # 64*256+256 + 256*256+256 + 256*10+10 parameters.
    self.assertEqual(model.count_params(), 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10)

  def test_cnn_has_seven_weight_layers_with_batch_norm(self):
    model = models.build("cnn", (32, 32, 3), 10)
    self.assertEqual(_count(model, keras.layers.Conv2D), 6)
    self.assertEqual(_count(model, keras.layers.Dense), 1)
    self.assertEqual(_count(model, keras.layers.BatchNormalization), 6)
    small = models.build("small_cnn", (28, 28, 1), 10)
    self.assertEqual(_count(small, keras.layers.Conv2D), 2)
    self.assertEqual(_count(small, keras.layers.BatchNormalization), 2)

  @parameterized.parameters("mlp", "cnn", "small_cnn")
  def test_positively_homogeneous_without_bias(self, name):
    # A ReLU net whose biases (and BN shifts/means) are zero is positively
    # homogeneous: f(a x) = a f(x) for a > 0 (ReLU(a z) = a ReLU(z), max-pool
    # commutes with a). In inference mode BN is x * gamma / sqrt(var + eps),
    # linear. This checks there is no softmax or other non-homogeneous layer.
    keras.utils.set_random_seed(1)
    model = models.build(name, (8, 8, 1), 10)
    for w in model.weights:
      if any(k in w.path for k in ("bias", "beta", "moving_mean")):
        w.assign(tf.zeros_like(w))
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 1)).astype(np.float32)
    self.assertAllClose(model(2.5 * x, training=False), 2.5 * model(x, training=False),
                        rtol=1e-4, atol=1e-4)

  def test_same_seed_same_weights(self):
    keras.utils.set_random_seed(7)
    a = models.build("small_cnn", (8, 8, 1), 10)
    keras.utils.set_random_seed(7)
    b = models.build("small_cnn", (8, 8, 1), 10)
    for wa, wb in zip(a.weights, b.weights):
      self.assertAllEqual(wa, wb)

  @parameterized.named_parameters(
      ("unknown", dict(name="resnet", input_shape=(8, 8, 1)), "mlp, cnn, small_cnn"),
      ("flat_cnn", dict(name="cnn", input_shape=(64,)), "model='mlp'"),
      ("bad_shape", dict(name="mlp", input_shape=(0, 3)), "input_shape"),
  )
  def test_bad_arguments(self, kwargs, regex):
    with self.assertRaisesRegex(ValueError, regex):
      models.build(num_classes=10, **kwargs)
