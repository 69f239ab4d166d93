"""Tests for keras_opnorm.singular_values against numpy's SVD.

The reference is ``np.linalg.svd`` of the exact Jacobian, taken with
``tf.GradientTape.batch_jacobian`` (not the library's products); for a
linear map ``f(x) = x W^T`` the Jacobian is ``W``. Singular vectors are
compared up to sign (``|cos|``), and only where the neighbouring singular
values are separated (otherwise the vectors are not unique).
"""

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_opnorm
from keras_opnorm.singular_values import singular_values
from opnorm_testlib import exact_jacobian
from opnorm_testlib import linear
from opnorm_testlib import relu_mlp
from opnorm_testlib import with_singular_values


def small_convnet(seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((6, 6, 2)),
      keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Flatten(),
      keras.layers.Dense(5),
  ])


class SingularValuesTest(tf.test.TestCase, parameterized.TestCase):

  def assert_matches_svd(self, result, jac, k, cos=0.999, min_gap=0.02):
    """values to 1e-4 relative; vectors |cos| > cos where the gap allows."""
    u, s, vt = np.linalg.svd(jac)
    batch = jac.shape[0]
    self.assertAllClose(result.values, s[:, :k], rtol=1e-4, atol=1e-6)
    right = result.vectors.numpy().reshape(batch, k, -1)
    left = result.left.numpy()
    self.assertAllClose(np.linalg.norm(right, axis=2), np.ones((batch, k)), rtol=1e-5)
    self.assertAllClose(np.linalg.norm(left, axis=2), np.ones((batch, k)), rtol=1e-5)
    for b in range(batch):
      for i in range(k):
        neighbours = [s[b, j] for j in (i - 1, i + 1) if 0 <= j < len(s[b])]
        if min(abs(s[b, i] - t) for t in neighbours) < min_gap * s[b, 0]:
          continue  # Nearly repeated: the vector is not well defined.
        self.assertGreater(abs(right[b, i] @ vt[b, i]), cos)
        self.assertGreater(abs(left[b, i] @ u[b, :, i]), cos)
    # J r_i = sigma_i l_i, consistently signed.
    jr = np.einsum("bdn,bkn->bkd", jac, right)
    self.assertAllClose(jr, result.values.numpy()[:, :, None] * left, atol=1e-4)

  def test_linear_map(self):
    rng = np.random.default_rng(0)
    w = with_singular_values(rng, [5.0, 3.0, 2.0, 1.0], 4, 9)
    x = rng.normal(size=(2, 9)).astype(np.float32)
    result = singular_values(linear(w), x, k=3)
    self.assertEqual(result.values.shape, (2, 3))
    self.assertEqual(result.vectors.shape, (2, 3, 9))
    self.assertEqual(result.left.shape, (2, 3, 4))
    self.assert_matches_svd(result, np.broadcast_to(w, (2, 4, 9)), 3)

  def test_more_logits_than_inputs(self):
    # n = 3 < d = 7: rank <= 3, J from 3 forward-mode columns.
    rng = np.random.default_rng(1)
    w = rng.normal(size=(7, 3))
    result = singular_values(linear(w), np.ones((2, 3), np.float32), k=3)
    self.assert_matches_svd(result, np.broadcast_to(w, (2, 7, 3)), 3)

  @parameterized.parameters(1, 2, 4)
  def test_relu_mlp(self, k):
    model = relu_mlp()
    x = np.random.default_rng(2).normal(size=(4, 6)).astype(np.float32)
    self.assert_matches_svd(singular_values(model, x, k=k), exact_jacobian(model, x), k)

  def test_convnet_nhwc(self):
    model = small_convnet()
    x = np.random.default_rng(3).normal(size=(3, 6, 6, 2)).astype(np.float32)
    result = singular_values(model, x, k=3)
    self.assertEqual(result.vectors.shape, (3, 3, 6, 6, 2))
    self.assert_matches_svd(result, exact_jacobian(model, x), 3)

  def test_subspace_iteration_default_iterations(self):
    # m = k + 5 = 7 directions: sigma_3 converges like (sigma_8/sigma_3)^(2K).
    rng = np.random.default_rng(4)
    s = [8.0, 6.0, 4.0, 2.0, 1.5, 1.2, 1.0, 0.5, 0.25, 0.1]
    w = with_singular_values(rng, s, 10, 12)
    x = rng.normal(size=(2, 12)).astype(np.float32)
    result = singular_values(linear(w), x, k=3, method="subspace")
    self.assert_matches_svd(result, np.broadcast_to(w, (2, 10, 12)), 3)

  def test_subspace_when_above_exact_max_dim(self):
    rng = np.random.default_rng(5)
    w = with_singular_values(rng, [3.0, 1.0, 0.5], 6, 8)
    # min(d, n) = 6 > 5: subspace iteration with m = min(2 + 5, 6) = 6 = d
    # directions, whose span is J's whole row space after one iteration.
    result = singular_values(linear(w), np.ones((1, 8), np.float32), k=2, exact_max_dim=5)
    self.assertAllClose(result.values, [[3.0, 1.0]], rtol=1e-4)

  def test_subspace_warm_start(self):
    # Starting at the exact top vectors, one iteration suffices.
    rng = np.random.default_rng(6)
    w = with_singular_values(rng, [3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4, 2.3], 8, 9)
    vt = np.linalg.svd(w)[2]
    v0 = np.stack([vt[:6]] * 2).astype(np.float32)  # [batch, 6, n]
    x = np.ones((2, 9), np.float32)
    result = singular_values(linear(w), x, k=1, method="subspace", num_iters=1, v0=v0)
    self.assertAllClose(result.values, [[3.0], [3.0]], rtol=1e-5)
    one = singular_values(linear(w), x, method="subspace", num_iters=1, v0=v0[:, 0])
    self.assertAllClose(one.values, [[3.0], [3.0]], rtol=1e-5)

  @parameterized.parameters("exact", "subspace")
  def test_zero_jacobian(self, method):
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(6, activation="relu", kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant(-1.0)),
        keras.layers.Dense(3),
    ])
    result = singular_values(model, np.ones((2, 4), np.float32), k=2, method=method)
    self.assertAllEqual(result.values, np.zeros((2, 2)))
    self.assertAllClose(np.linalg.norm(result.vectors, axis=2), np.ones((2, 2)), rtol=1e-5)
    self.assertTrue(np.all(np.isfinite(result.left)))

  def test_float16_input(self):
    model = relu_mlp()
    x = np.random.default_rng(7).normal(size=(2, 6)).astype(np.float16)
    result = singular_values(model, x, k=2)
    self.assertEqual(result.values.dtype, tf.float32)
    self.assert_matches_svd(result, exact_jacobian(model, x.astype(np.float32)), 2)

  @parameterized.parameters((False, "exact"), (True, "exact"), (False, "subspace"))
  def test_compiled(self, jit_compile, method):
    self.check_compiled(jit_compile, method)

  @pytest.mark.slow  # XLA compiles QR inside a while loop: ~3 s on CPU.
  def test_compiled_subspace_xla(self):
    self.check_compiled(True, "subspace")

  def check_compiled(self, jit_compile, method):
    rng = np.random.default_rng(8)
    w = with_singular_values(rng, [4.0, 2.0, 1.0], 5, 6)
    fn = tf.function(lambda x: singular_values(linear(w), x, k=2, method=method),
                     jit_compile=jit_compile)
    result = fn(rng.normal(size=(2, 6)).astype(np.float32))
    self.assertAllClose(result.values, [[4.0, 2.0]] * 2, rtol=1e-4)
    self.assertEqual(result.vectors.shape, (2, 2, 6))

  def test_no_retracing(self):
    model = relu_mlp()
    traces = []

    @tf.function
    def values(x):
      traces.append(1)
      return singular_values(model, x, k=2).values

    rng = np.random.default_rng(9)
    for _ in range(3):
      values(tf.constant(rng.normal(size=(3, 6)).astype(np.float32)))
    self.assertLen(traces, 1)

  @parameterized.named_parameters(
      ("k_0", dict(k=0), ValueError, "k=0"),
      ("k_float", dict(k=1.5), TypeError, "k=1.5"),
      ("k_above_rank", dict(k=4), ValueError, "min\\(d, n\\)"),
      ("num_iters_0", dict(num_iters=0), ValueError, "num_iters=0"),
      ("method", dict(method="power"), ValueError, "method='power'"),
      ("jvp_mode", dict(jvp_mode="x"), ValueError, "jvp_mode='x'"),
      ("v0_shape", dict(v0=np.ones((2, 4), np.float32)), ValueError, "`v0`"),
      ("v0_too_many", dict(v0=np.ones((2, 9, 5), np.float32)), ValueError, "`v0`"),
  )
  def test_bad_arguments(self, kwargs, error, message):
    f = linear(np.ones((3, 5)))  # d = 3, n = 5.
    with self.assertRaisesRegex(error, message):
      singular_values(f, np.ones((2, 5), np.float32), **kwargs)

  def test_bad_models_and_inputs(self):
    f = linear(np.ones((3, 5)))
    with self.assertRaisesRegex(TypeError, "`x`"):
      singular_values(f, np.ones((2, 5), np.int32))
    with self.assertRaisesRegex(ValueError, "shape"):
      singular_values(lambda x: tf.reshape(x, [2, 5, 1]), np.ones((2, 5), np.float32))
    with self.assertRaisesRegex(ValueError, "not differentiable"):
      singular_values(lambda x: tf.stop_gradient(f(x)), np.ones((2, 5), np.float32))

  def test_exports(self):
    self.assertIs(keras_opnorm.singular_values, singular_values)
    self.assertTrue(hasattr(keras_opnorm, "SingularValuesResult"))


class DynamicBatchTest(tf.test.TestCase, parameterized.TestCase):
  """A batch axis unknown at trace time (input_signature [None, n])."""

  @parameterized.product(jit=(False, True), method=("auto", "subspace"))
  def test_unknown_batch(self, jit, method):
    w = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    fn = tf.function(lambda x: singular_values(linear(w), x, k=2, method=method).values,
                     input_signature=[tf.TensorSpec([None, 6])], jit_compile=jit)
    # Linear map: the top-2 singular values of W for every example.
    expected = np.linalg.svd(w, compute_uv=False)[:2]
    self.assertAllClose(fn(tf.ones([4, 6])), [expected] * 4, rtol=1e-4)


if __name__ == "__main__":
  tf.test.main()
