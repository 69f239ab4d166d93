"""Tests for keras_opnorm.datasets: the digits split and the tfds path (mocked)."""

import os
import re
import unittest.mock

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from keras_opnorm import datasets

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("sklearn")


class DigitsTest(parameterized.TestCase, tf.test.TestCase):

  def test_split_sizes_and_ranges(self):
    # load_digits has 1,797 images; a stratified 25% test split of each class
    # (sklearn rounds the total test size up: ceil(0.25 * 1797) = 450).
    x_test, y_test, info = datasets.load_arrays("digits", split="test")
    self.assertEqual(info.num_train + info.num_test, 1797)
    self.assertEqual(info.num_test, 450)
    self.assertEqual(x_test.shape, (450, 8, 8, 1))
    self.assertEqual(x_test.dtype, np.float32)
    self.assertEqual(y_test.dtype, np.int32)
    self.assertEqual(info.input_shape, (8, 8, 1))
    self.assertEqual(info.input_range, (0.0, 1.0))
    self.assertEqual(info.num_classes, 10)
    # Pixels are the raw grey levels 0..16 divided by 16.
    self.assertEqual(x_test.min(), 0.0)
    self.assertEqual(x_test.max(), 1.0)
    np.testing.assert_array_equal(x_test * 16, np.round(x_test * 16))

  def test_split_is_deterministic_and_disjoint(self):
    a, ya, _ = datasets.load_arrays("digits", split="train", seed=3)
    b, yb, _ = datasets.load_arrays("digits", split="train", seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    c, _, _ = datasets.load_arrays("digits", split="train", seed=4)
    self.assertFalse(np.array_equal(a, c))
    # Train and test together are exactly the 1,797 sklearn images.
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    t, _, _ = datasets.load_arrays("digits", split="test", seed=3)
    together = np.concatenate([a, t]).reshape(-1, 64) * 16
    expected = load_digits().data
    key = lambda m: sorted(map(bytes, m.astype(np.uint8)))
    self.assertEqual(key(together), key(expected))

  def test_split_is_stratified(self):
    _, y_train, _ = datasets.load_arrays("digits", split="train")
    _, y_test, _ = datasets.load_arrays("digits", split="test")
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    totals = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    # Each class contributes 25% of its images to the test set, up to rounding.
    np.testing.assert_array_less(np.abs(test_counts - 0.25 * totals), 1.0 + 1e-9)
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10) + test_counts, totals)

  def test_flatten_and_range(self):
    x, _, info = datasets.load_arrays(
        "digits", max_examples=7, flatten=True, input_range=(-1, 1))
    self.assertEqual(x.shape, (7, 64))
    self.assertEqual(info.input_shape, (64,))
    self.assertEqual(info.input_range, (-1.0, 1.0))
    self.assertGreaterEqual(x.min(), -1.0)
    self.assertLessEqual(x.max(), 1.0)
    # raw 0 -> -1, raw 16 -> 1.
    self.assertEqual(x.min(), -1.0)
    self.assertEqual(x.max(), 1.0)

  def test_tf_data_pipeline(self):
    train_ds, test_ds, info = datasets.load("digits", batch_size=100, flatten=True)
    self.assertEqual(info.num_train, 1347)
    self.assertEqual(train_ds.element_spec[0].shape.as_list(), [None, 64])
    self.assertEqual(train_ds.element_spec[0].dtype, tf.float32)
    # The test pipeline is ordered and equals the arrays of `load_arrays`.
    x_test, y_test, _ = datasets.load_arrays("digits", flatten=True)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in test_ds])
    np.testing.assert_array_equal(np.concatenate(xs), x_test)
    np.testing.assert_array_equal(np.concatenate(ys), y_test)
    # Training batches are shuffled (seeded) and reshuffled every epoch.
    first = [y.numpy() for _, y in train_ds]
    second = [y.numpy() for _, y in train_ds]
    self.assertEqual(sum(len(b) for b in first), 1347)
    self.assertFalse(np.array_equal(np.concatenate(first), np.concatenate(second)))
    again = datasets.load("digits", batch_size=100, flatten=True)[0]
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in again]),
                                  np.concatenate(first))

  def test_info_to_dict(self):
    _, _, info = datasets.load_arrays("digits", max_examples=1)
    d = info.to_dict()
    self.assertEqual(d["input_shape"], [8, 8, 1])
    self.assertEqual(d["name"], "digits")

  def test_missing_sklearn_names_the_extra(self):
    with unittest.mock.patch.dict("sys.modules", {"sklearn": None}):
      with self.assertRaisesRegex(ImportError, "experiments"):
        datasets.load_arrays("digits")

  @parameterized.named_parameters(
      ("unknown_name", dict(name="imagenet"), ValueError, "digits, mnist"),
      ("bad_split", dict(split="valid"), ValueError, "split"),
      ("bad_fraction", dict(test_fraction=1.5), ValueError, "test_fraction"),
      ("zero_examples", dict(max_examples=0), ValueError, "max_examples"),
      ("bad_range", dict(input_range=(1, 0)), ValueError, "input_range"),
  )
  def test_bad_arguments(self, kwargs, error, regex):
    with self.assertRaisesRegex(error, regex):
      datasets.load_arrays(**kwargs)

  def test_load_rejects_unknown_name_and_batch_size(self):
    with self.assertRaisesRegex(ValueError, "cifar10"):
      datasets.load("svhn")
    with self.assertRaisesRegex(ValueError, "batch_size"):
      datasets.load("digits", batch_size=0)


class TfdsTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(
      ("mnist", "mnist", (28, 28, 1), (0.0, 1.0)),
      ("fashion_mnist", "fashion_mnist", (28, 28, 1), (0.0, 1.0)),
      ("cifar10", "cifar10", (32, 32, 3), (-1.0, 1.0)),
  )
  def test_mock_data(self, name, shape, input_range):
    data_dir = self.get_temp_dir()
    with tfds.testing.mock_data(num_examples=6):
      train_ds, test_ds, info = datasets.load(name, data_dir=data_dir, batch_size=4)
      x, y, info2 = datasets.load_arrays(name, data_dir=data_dir, max_examples=3,
                                         flatten=True)
    self.assertEqual(info.input_shape, shape)
    self.assertEqual(info.input_range, input_range)
    self.assertEqual((info.num_train, info.num_test), (6, 6))
    batches = [(xb.numpy(), yb.numpy()) for xb, yb in train_ds]
    self.assertEqual([len(b[1]) for b in batches], [4, 2])
    xb = batches[0][0]
    self.assertEqual(xb.shape[1:], shape)
    self.assertEqual(xb.dtype, np.float32)
    self.assertGreaterEqual(xb.min(), input_range[0])
    self.assertLessEqual(xb.max(), input_range[1])
    self.assertEqual(batches[0][1].dtype, np.int32)
    self.assertEqual(sum(len(yb) for _, yb in test_ds), 6)
    self.assertEqual(x.shape, (3, int(np.prod(shape))))
    self.assertEqual(info2.input_shape, (int(np.prod(shape)),))
    self.assertEqual(info2.num_test, 6)
    self.assertTrue(np.all((y >= 0) & (y < 10)))

  def test_not_prepared_says_what_to_download_and_where(self):
    data_dir = os.path.join(self.get_temp_dir(), "empty")
    with self.assertRaises(FileNotFoundError) as cm:
      datasets.load("cifar10", data_dir=data_dir)
    message = str(cm.exception)
    self.assertIn("cifar10 is not prepared under " + data_dir, message)
    self.assertIn(f"tfds build cifar10 --data_dir={data_dir}", message)
    self.assertIn("download=True", message)

  def test_empty_split_names_the_argument(self):
    data_dir = self.get_temp_dir()
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 28, 28, 1), np.uint8), np.zeros((0,), np.int64)))
    with unittest.mock.patch.object(tfds, "load", return_value=empty):
      with self.assertRaisesRegex(
          ValueError, r"`split` must name a non-empty split of the tensorflow-datasets set "
          rf"'mnist'\. Received: split='test', which holds no examples under "
          rf"data_dir='{re.escape(data_dir)}'"):
        datasets.load_arrays("mnist", split="test", data_dir=data_dir)

  def test_download_failure_is_explained(self):
    data_dir = self.get_temp_dir()

    def fail(*args, **kwargs):
      raise ConnectionError("no network")

    with unittest.mock.patch.object(tfds, "load", fail):
      with self.assertRaisesRegex(FileNotFoundError, "Could not download .*mnist"):
        datasets.load_arrays("mnist", data_dir=data_dir, download=True)
