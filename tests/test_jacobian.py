"""Tests for keras_opnorm.jacobian against the exact Jacobian.

The reference is ``tf.GradientTape.batch_jacobian`` (the full per-example
Jacobian J of shape [batch, d, *x.shape[1:]]) contracted with numpy, and, for
a linear map f(x) = x W + b, the closed forms J v = v W and J^T u = u W^T.
"""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import jacobian

MODES = ("forward", "double_backward")


def dense_relu_net():
  return keras.Sequential([
      keras.Input((5,)),
      keras.layers.Dense(7, activation="relu"),
      keras.layers.Dense(6, activation="relu"),
      keras.layers.Dense(3),
  ])


def conv_net():
  return keras.Sequential([
      keras.Input((6, 6, 2)),  # NHWC
      keras.layers.Conv2D(3, 3, activation="relu"),
      keras.layers.MaxPooling2D(2),
      keras.layers.Flatten(),
      keras.layers.Dense(4),
  ])


def exact_jacobian(model, x):
  """J[b, i, ...] = d f(x)_{b,i} / d x_{b,...} (GradientTape.batch_jacobian)."""
  x = tf.convert_to_tensor(x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = model(x, training=False)
  return y.numpy(), tape.batch_jacobian(y, x).numpy()


def inputs_for(model, batch, seed):
  rng = np.random.default_rng(seed)
  shape = (batch,) + tuple(model.input_shape[1:])
  return rng.normal(size=shape).astype(np.float32), rng


class JacobianProductsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(net=("dense", "conv"), mode=MODES)
  def test_jvp_matches_exact_jacobian(self, net, mode):
    model = dense_relu_net() if net == "dense" else conv_net()
    x, rng = inputs_for(model, 4, seed=1)
    v = rng.normal(size=x.shape).astype(np.float32)
    y_ref, jac = exact_jacobian(model, x)
    # (J v)_b = sum over input axes of J[b, i, ...] * v[b, ...].
    expected = np.einsum("bin,bn->bi", jac.reshape(4, jac.shape[1], -1), v.reshape(4, -1))
    fn = jacobian.as_logits_fn(model)
    y, jv = jacobian.jvp(fn, tf.constant(x), tf.constant(v), mode=mode)
    self.assertAllClose(y, y_ref, atol=1e-6)
    self.assertEqual(jv.shape, (4, y_ref.shape[1]))
    self.assertAllClose(jv, expected, atol=1e-5, rtol=1e-5)

  @parameterized.parameters("dense", "conv")
  def test_vjp_matches_exact_jacobian(self, net):
    model = dense_relu_net() if net == "dense" else conv_net()
    x, rng = inputs_for(model, 3, seed=2)
    y_ref, jac = exact_jacobian(model, x)
    u = rng.normal(size=y_ref.shape).astype(np.float32)
    # (J^T u)_b = sum_i u[b, i] J[b, i, ...], shaped like x.
    expected = np.einsum("bi,bi...->b...", u, jac)
    y, jtu = jacobian.vjp(jacobian.as_logits_fn(model), tf.constant(x), tf.constant(u))
    self.assertAllClose(y, y_ref, atol=1e-6)
    self.assertEqual(jtu.shape, x.shape)
    self.assertAllClose(jtu, expected, atol=1e-5, rtol=1e-5)

  @parameterized.parameters(*MODES)
  def test_linear_map_closed_form(self, mode):
    # f(x) = x W + b row-wise, so J_b = W^T: J v = v W and J^T u = u W^T.
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    fn = jacobian.as_logits_fn(lambda x: tf.matmul(x, w) + b)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    v = rng.normal(size=(5, 4)).astype(np.float32)
    u = rng.normal(size=(5, 3)).astype(np.float32)
    _, jv = jacobian.jvp(fn, tf.constant(x), tf.constant(v), mode=mode)
    self.assertAllClose(jv, v @ w, atol=1e-5)
    _, jtu = jacobian.vjp(fn, tf.constant(x), tf.constant(u))
    self.assertAllClose(jtu, u @ w.T, atol=1e-5)

  @parameterized.parameters(*MODES)
  def test_products_are_differentiable_by_an_outer_tape(self, mode):
    # L(W) = sum_b ||v_b W||^2 for f(x) = x W: dL/dW = 2 V^T (V W).
    rng = np.random.default_rng(4)
    w = tf.Variable(rng.normal(size=(4, 3)).astype(np.float32))
    x = tf.constant(rng.normal(size=(5, 4)).astype(np.float32))
    v = rng.normal(size=(5, 4)).astype(np.float32)
    fn = jacobian.as_logits_fn(lambda x: tf.matmul(x, w))
    with tf.GradientTape() as tape:
      _, jv = jacobian.jvp(fn, x, tf.constant(v), mode=mode)
      loss = tf.reduce_sum(tf.square(jv))
    grad = tape.gradient(loss, w)
    self.assertIsNotNone(grad)
    self.assertAllClose(grad, 2.0 * v.T @ (v @ w.numpy()), rtol=1e-5)

  def test_under_xla(self):
    model = dense_relu_net()
    x, rng = inputs_for(model, 4, seed=5)
    v = rng.normal(size=x.shape).astype(np.float32)
    u = rng.normal(size=(4, 3)).astype(np.float32)
    _, jac = exact_jacobian(model, x)
    fn = jacobian.as_logits_fn(model)

    @tf.function(jit_compile=True)
    def products(x, v, u):
      _, jv_f = jacobian.jvp(fn, x, v, mode="forward")
      _, jv_b = jacobian.jvp(fn, x, v, mode="double_backward")
      _, jtu = jacobian.vjp(fn, x, u)
      return jv_f, jv_b, jtu

    jv_f, jv_b, jtu = products(tf.constant(x), tf.constant(v), tf.constant(u))
    self.assertAllClose(jv_f, np.einsum("bin,bn->bi", jac, v), atol=1e-5)
    self.assertAllClose(jv_b, np.einsum("bin,bn->bi", jac, v), atol=1e-5)
    self.assertAllClose(jtu, np.einsum("bi,bin->bn", u, jac), atol=1e-5)


class TrainingFlagTest(tf.test.TestCase):

  def test_keras_models_get_the_training_flag(self):

    class Doubler(keras.layers.Layer):

      def call(self, x, training=None):
        return x * 2.0 if training else x

    model = keras.Sequential([keras.Input((3,)), Doubler()])
    x = tf.ones((2, 3))
    self.assertAllEqual(jacobian.as_logits_fn(model)(x), x)
    self.assertAllEqual(jacobian.as_logits_fn(model, training=True)(x), 2.0 * x)

  def test_half_precision_output_is_float32(self):
    fn = jacobian.as_logits_fn(lambda x: tf.cast(x, tf.float16))
    self.assertEqual(fn(tf.ones((2, 3))).dtype, tf.float32)


class BadInputTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("stop_gradient", lambda x: tf.stop_gradient(x) * 2.0),
      ("integer_cast", lambda x: tf.cast(tf.cast(x, tf.int32), tf.float32)),
      ("constant", lambda x: tf.ones_like(x)),
  )
  def test_not_differentiable_raises(self, f):
    fn = jacobian.as_logits_fn(f)
    x = tf.constant([[0.5, 1.5, 2.5]])
    for mode in MODES:
      with self.assertRaisesRegex(ValueError, "not differentiable with respect to its input"):
        jacobian.jvp(fn, x, tf.ones_like(x), mode=mode)
    with self.assertRaisesRegex(ValueError, "not differentiable with respect to its input"):
      jacobian.vjp(fn, x, tf.ones((1, 3)))

  def test_error_names_the_users_function(self):
    # The message names the user's f, not the wrapper built by as_logits_fn.
    def frozen_net(x):
      return tf.stop_gradient(x)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(tf.stop_gradient)],
                             name="frozen_model")
    x = tf.constant([[0.5, 1.5, 2.5]])
    for f, name in ((frozen_net, "frozen_net"), (model, "frozen_model")):
      with self.assertRaisesRegex(ValueError, f"Received: f='{name}'"):
        jacobian.vjp(jacobian.as_logits_fn(f), x, tf.ones((1, 3)))

  def test_unknown_mode(self):
    fn = jacobian.as_logits_fn(lambda x: x)
    x = tf.ones((1, 2))
    with self.assertRaisesRegex(ValueError, "`jvp_mode` must be one of .* Received: jvp_mode='reverse'"):
      jacobian.jvp(fn, x, x, mode="reverse")

  def test_not_callable(self):
    with self.assertRaisesRegex(TypeError, "`f` must be a Keras model or a callable"):
      jacobian.as_logits_fn(3)

  @parameterized.named_parameters(
      ("rank3", lambda x: tf.reshape(x, [-1, 2, 2]), ValueError, "shape"),
      ("dict", lambda x: {"logits": x}, TypeError, "single logits tensor"),
      ("integer", lambda x: tf.cast(x, tf.int32), TypeError, "floating-point logits"),
  )
  def test_bad_output(self, f, error, message):
    with self.assertRaisesRegex(error, message):
      jacobian.as_logits_fn(f)(tf.ones((2, 4)))


if __name__ == "__main__":
  tf.test.main()
