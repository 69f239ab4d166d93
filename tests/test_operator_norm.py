"""Tests for keras_opnorm.operator_norm against closed forms and numpy.

Reference values come from numpy: the exact Jacobian of a network is taken
with ``tf.GradientTape.batch_jacobian`` (independent of the library's own
products) and reduced with ``np.linalg.svd`` / ``np.linalg.norm``; for a
linear map ``f(x) = x W^T + b`` the Jacobian is ``W`` at every ``x``.
"""

import itertools
import math

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import keras_opnorm
from keras_opnorm import _jacobian_matrix
from keras_opnorm.operator_norm import closed_form
from keras_opnorm.operator_norm import operator_norm
from opnorm_testlib import exact_jacobian
from opnorm_testlib import linear
from opnorm_testlib import np_dual
from opnorm_testlib import relu_mlp
from opnorm_testlib import with_singular_values

INF = float("inf")


def np_lp_norm(a, p, axis=-1):
  a = np.abs(np.asarray(a, np.float64))
  if math.isinf(p):
    return a.max(axis=axis)
  return (a ** p).sum(axis=axis) ** (1.0 / p)


def small_convnet(seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((6, 6, 2)),
      keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
      keras.layers.Flatten(),
      keras.layers.Dense(5),
  ])


def dead_relu_net():
  """Every hidden ReLU is off for every input: J = 0 everywhere."""
  return keras.Sequential([
      keras.Input((4,)),
      keras.layers.Dense(6, activation="relu", kernel_initializer="zeros",
                         bias_initializer=keras.initializers.Constant(-1.0)),
      keras.layers.Dense(3),
  ])


def constant_model():
  """f(x) = 0 x + b: a constant model (zero kernel), J = 0."""
  return keras.Sequential([
      keras.Input((4,)),
      keras.layers.Dense(3, kernel_initializer="zeros", bias_initializer="ones"),
  ])


class ClosedFormTest(tf.test.TestCase, parameterized.TestCase):
  """Linear maps: every closed form against numpy."""

  def test_closed_form_names(self):
    self.assertEqual(closed_form(2, 2), "svd")
    self.assertEqual(closed_form(1, 3), "cols")
    self.assertEqual(closed_form(1.5, "inf"), "rows")
    self.assertEqual(closed_form(1, "inf"), "cols")
    self.assertEqual(closed_form(INF, 1), "vertices")
    self.assertEqual(closed_form(2, 1), "vertices")
    for pair in ((INF, 2), (3, 3), (2, 1.5)):
      self.assertIsNone(closed_form(*pair))

  def test_22_is_the_largest_singular_value(self):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 8))
    x = rng.normal(size=(3, 8)).astype(np.float32)
    result = operator_norm(linear(w), x)
    _, s, vt = np.linalg.svd(w)
    self.assertTrue(result.exact)
    self.assertAllClose(result.norm, np.full(3, s[0]), rtol=1e-4)
    self.assertAllClose(np_lp_norm(result.v, 2), np.ones(3), rtol=1e-5)
    self.assertAllGreater(np.abs(result.v.numpy() @ vt[0]), 0.999)
    # u = s_2(J v) = J v / ||J v||_2, the top left singular vector.
    jv = result.v.numpy() @ w.T
    self.assertAllClose(result.u, jv / np_lp_norm(jv, 2)[:, None], atol=1e-5)

  def test_22_power_method_with_default_iterations(self):
    # sigma = (3, 2, 1, 0.5): the power method's error decays like
    # (sigma_2/sigma_1)^(2K) = (4/9)^20 ~ 1e-7 for the default K = 20.
    rng = np.random.default_rng(1)
    w = with_singular_values(rng, [3.0, 2.0, 1.0, 0.5], 5, 8)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    result = operator_norm(linear(w), x, method="power")
    self.assertFalse(result.exact)
    self.assertAllClose(result.norm, np.full(4, 3.0), rtol=1e-4)

  @parameterized.parameters(1.0, 1.5, 2.0, 3.0, INF)
  def test_1q_is_the_largest_column_norm(self, q):
    # ||J||_{1,q} = max_j ||J e_j||_q: the l1 ball is the hull of the +-e_j.
    rng = np.random.default_rng(2)
    w = rng.normal(size=(4, 7))
    x = rng.normal(size=(2, 7)).astype(np.float32)
    result = operator_norm(linear(w), x, p=1, q=q)
    self.assertTrue(result.exact)
    expected = np_lp_norm(w, q, axis=0).max()
    self.assertAllClose(result.norm, np.full(2, expected), rtol=1e-5)
    best = np_lp_norm(w, q, axis=0).argmax()
    self.assertAllClose(result.v, np.tile(np.eye(7)[best], (2, 1)))

  @parameterized.parameters(1.0, 1.5, 2.0, 4.0, INF)
  def test_p_inf_is_the_largest_row_dual_norm(self, p):
    # ||J||_{p,inf} = max_i max_{||v||_p<=1} <J_i, v> = max_i ||J_i||_{p*}.
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 7))
    x = rng.normal(size=(2, 7)).astype(np.float32)
    result = operator_norm(linear(w), x, p=p, q=INF)
    self.assertTrue(result.exact)
    expected = np_lp_norm(w, np_dual(p), axis=1).max()
    self.assertAllClose(result.norm, np.full(2, expected), rtol=1e-5)
    self.assertAllClose(np_lp_norm(result.v, p), np.ones(2), rtol=1e-5)
    self.assertAllClose(np_lp_norm(result.v.numpy() @ w.T, INF), np.full(2, expected), rtol=1e-5)
    # u = s_1(J v): the signed one-hot of the best row.
    self.assertAllClose(np.abs(result.u).sum(1), np.ones(2))

  def test_columns_path_when_inputs_are_fewer_than_logits(self):
    # n = 3 < d = 8: J is built from 3 forward-mode columns.
    rng = np.random.default_rng(4)
    w = rng.normal(size=(8, 3))
    x = rng.normal(size=(2, 3)).astype(np.float32)
    s = np.linalg.svd(w, compute_uv=False)
    self.assertAllClose(operator_norm(linear(w), x).norm, np.full(2, s[0]), rtol=1e-5)
    self.assertAllClose(operator_norm(linear(w), x, p=2, q=INF).norm,
                        np.full(2, np_lp_norm(w, 2, axis=1).max()), rtol=1e-5)

  @parameterized.parameters(False, True)
  def test_jacobian_in_several_passes(self, jit_compile):
    # d = 70 > MAX_COPIES_PER_PASS: rows in 3 passes of 24 (last one padded);
    # then n = 70 < d = 80: columns, the same way.
    rng = np.random.default_rng(5)
    w = rng.normal(size=(70, 80)).astype(np.float32)
    x = tf.constant(rng.normal(size=(2, 80)).astype(np.float32))
    full = tf.function(_jacobian_matrix.full_jacobian, jit_compile=jit_compile, autograph=False)
    jac = full(linear(w), x, 70, 80)
    self.assertAllClose(jac, np.broadcast_to(w, (2, 70, 80)), atol=1e-5)
    jac = full(linear(w.T), tf.ones([2, 70]), 80, 70)
    self.assertAllClose(jac, np.broadcast_to(w.T, (2, 80, 70)), atol=1e-5)

  def test_inf_1_is_exact_and_the_power_method_a_lower_bound(self):
    # ||J||_{inf,1} = max over the 2^n vertices s of the cube of ||J s||_1
    # (a convex function is maximised at a vertex): brute force for n = 6.
    rng = np.random.default_rng(6)
    w = rng.normal(size=(3, 6))
    x = rng.normal(size=(4, 6)).astype(np.float32)
    vertices = np.array(list(itertools.product([-1.0, 1.0], repeat=6)))
    brute_1 = np_lp_norm(vertices @ w.T, 1).max()
    brute_2 = np_lp_norm(vertices @ w.T, 2).max()
    exact = operator_norm(linear(w), x, p=INF, q=1)  # d = 3: sign-vector enumeration.
    self.assertTrue(exact.exact)
    self.assertAllClose(exact.norm, np.full(4, brute_1), rtol=1e-5)
    single = operator_norm(linear(w), x, p=INF, q=1, method="power")
    self.assertFalse(single.exact)
    self.assertAllLessEqual(single.norm, brute_1 * (1 + 1e-6))
    self.assertAllClose(np.abs(single.v), np.ones((4, 6)))  # A vertex.
    # norm = ||J v||_q at the returned v.
    self.assertAllClose(single.norm, np_lp_norm(single.v.numpy() @ w.T, 1), rtol=1e-5)
    best = operator_norm(linear(w), x, p=INF, q=1, num_restarts=16, method="power")
    self.assertAllClose(best.norm, np.full(4, brute_1), rtol=1e-5)
    self.assertAllLessEqual(operator_norm(linear(w), x, p=INF, q=2).norm, brute_2 * (1 + 1e-6))

  def test_pp_is_a_feasible_lower_bound(self):
    # p = q = 3: NP-hard. The result is ||J v||_3 at a unit v, below the
    # Riesz-Thorin bound ||J||_{1,1}^(1/3) ||J||_{inf,inf}^(2/3), and at
    # least the best of 2000 random unit directions (numpy).
    rng = np.random.default_rng(7)
    w = rng.normal(size=(4, 5))
    x = rng.normal(size=(2, 5)).astype(np.float32)
    result = operator_norm(linear(w), x, p=3, q=3, num_restarts=4)
    v = result.v.numpy()
    self.assertAllClose(np_lp_norm(v, 3), np.ones(2), rtol=1e-5)
    self.assertAllClose(result.norm, np_lp_norm(v @ w.T, 3), rtol=1e-5)
    upper = np_lp_norm(w, 1, axis=0).max() ** (1 / 3) * np_lp_norm(w, 1, axis=1).max() ** (2 / 3)
    self.assertAllLessEqual(result.norm, upper)
    z = rng.normal(size=(2000, 5))
    z /= np_lp_norm(z, 3)[:, None]
    self.assertAllGreaterEqual(result.norm, np_lp_norm(z @ w.T, 3).max() * (1 - 1e-4))

  @parameterized.parameters((2.0, 2.0), (INF, 2.0), (2.0, 1.0), (INF, INF), (1.5, 3.0))
  def test_one_power_iteration_by_hand(self, p, q):
    # v_1 = s_p(W^T s_{q*}(W v_0)), s_p written out in numpy (PAPER.md).
    def s(g, r):
      if math.isinf(r):
        return np.sign(g)
      if r == 1.0:
        out = np.zeros_like(g)
        i = np.abs(g).argmax(1)
        out[np.arange(len(g)), i] = np.sign(g[np.arange(len(g)), i])
        return out
      h = np.sign(g) * np.abs(g) ** (np_dual(r) - 1)
      return h / np_lp_norm(h, r)[:, None]

    rng = np.random.default_rng(8)
    w = rng.normal(size=(4, 6))
    x = rng.normal(size=(3, 6)).astype(np.float32)
    v0 = rng.normal(size=(3, 6))
    v0 /= np_lp_norm(v0, p)[:, None]  # The start is normalised, not s_p(v0).
    v1 = s(s(v0 @ w.T, np_dual(q)) @ w, p)
    result = operator_norm(linear(w), x, p, q, method="power", num_iters=1,
                           v0=v0.astype(np.float32))
    self.assertAllClose(result.v, v1, atol=1e-5)
    self.assertAllClose(result.norm, np_lp_norm(v1 @ w.T, q), rtol=1e-5)


class NetworkTest(tf.test.TestCase, parameterized.TestCase):
  """ReLU networks against their exact Jacobian (batch_jacobian + numpy)."""

  def test_relu_mlp_22_default_settings(self):
    model = relu_mlp()
    x = np.random.default_rng(9).normal(size=(5, 6)).astype(np.float32)
    s = np.linalg.svd(exact_jacobian(model, x), compute_uv=False)
    self.assertAllClose(operator_norm(model, x).norm, s[:, 0], rtol=1e-4)

  def test_convnet_nhwc(self):
    model = small_convnet()
    x = np.random.default_rng(10).normal(size=(3, 6, 6, 2)).astype(np.float32)
    jac = exact_jacobian(model, x)  # [3, 5, 72]
    _, s, vt = np.linalg.svd(jac)
    result = operator_norm(model, x)
    self.assertEqual(result.v.shape, x.shape)
    self.assertEqual(result.u.shape, (3, 5))
    self.assertAllClose(result.norm, s[:, 0], rtol=1e-4)
    cos = np.abs(np.einsum("bn,bn->b", result.v.numpy().reshape(3, -1), vt[:, 0]))
    self.assertAllGreater(cos, 0.999)
    self.assertAllClose(operator_norm(model, x, p=1, q=2).norm,
                        np_lp_norm(jac, 2, axis=1).max(1), rtol=1e-5)
    self.assertAllClose(operator_norm(model, x, p=INF, q=INF).norm,
                        np_lp_norm(jac, 1, axis=2).max(1), rtol=1e-5)

  def test_float16_input_is_computed_in_float32(self):
    model = relu_mlp()
    x = np.random.default_rng(11).normal(size=(3, 6)).astype(np.float16)
    result = operator_norm(model, x)
    self.assertEqual(result.norm.dtype, tf.float32)
    self.assertEqual(result.v.dtype, tf.float32)
    s = np.linalg.svd(exact_jacobian(model, x.astype(np.float32)), compute_uv=False)
    self.assertAllClose(result.norm, s[:, 0], rtol=1e-4)

  def test_training_flag_reaches_the_model(self):
    # Dropout 0.9 is off in inference mode: the norm is the dropout-free one.
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(3)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dropout(0.9), dense])
    x = np.ones((2, 5), np.float32)
    s = np.linalg.svd(dense.kernel.numpy().T, compute_uv=False)[0]
    self.assertAllClose(operator_norm(model, x).norm, [s, s], rtol=1e-5)
    self.assertNotAllClose(operator_norm(model, x, training=True).norm, [s, s], rtol=1e-3)

  @parameterized.parameters("auto", "power")
  def test_double_backward_products(self, method):
    model = relu_mlp()
    x = np.random.default_rng(12).normal(size=(3, 6)).astype(np.float32)
    v0 = np.random.default_rng(13).normal(size=(3, 6)).astype(np.float32)
    a = operator_norm(model, x, method=method, v0=v0, jvp_mode="forward")
    b = operator_norm(model, x, method=method, v0=v0, jvp_mode="double_backward")
    self.assertAllClose(a.norm, b.norm, rtol=1e-5)


class GradientTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("auto", 20), ("power", 60))
  def test_norm_gradient_is_the_envelope_gradient(self, method, num_iters):
    # d sigma_max(J(x)) / dx by central differences of numpy's SVD of the
    # exact Jacobian of a smooth float64 network f(x) = tanh(x A^T) B^T.
    rng = np.random.default_rng(22)
    a = tf.constant(rng.normal(size=(8, 5)))
    b = tf.constant(with_singular_values(rng, [2.0, 0.5, 0.2], 3, 8))
    f = lambda x: tf.matmul(tf.tanh(tf.matmul(x, a, transpose_b=True)), b, transpose_b=True)
    x = rng.normal(size=(2, 5)) * 0.3

    @tf.function
    def grad_of_norm(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(operator_norm(f, x, method=method, num_iters=num_iters).norm)
      return tape.gradient(total, x)

    grad = grad_of_norm(tf.constant(x)).numpy()
    # All 2 * 10 perturbed examples in one batch (examples are independent).
    h = 1e-6
    steps = h * np.eye(5)
    shifted = np.concatenate([x[:, None] + steps, x[:, None] - steps], axis=1)  # [2, 10, 5]
    sigma = np.linalg.svd(exact_jacobian(f, shifted.reshape(-1, 5)), compute_uv=False)[:, 0]
    sigma = sigma.reshape(2, 2, 5)
    numeric = (sigma[:, 0] - sigma[:, 1]) / (2 * h)
    self.assertAllClose(grad, numeric, rtol=1e-4, atol=1e-6)


class ZeroJacobianTest(tf.test.TestCase, parameterized.TestCase):
  """J = 0: norm 0, u = 0, v a finite unit vector, a finite gradient."""

  @parameterized.product(
      model=("dead_relu", "constant"), method=("auto", "power"),
      pair=((2.0, 2.0), (1.0, 2.0), (2.0, INF), (INF, 1.0), (3.0, 1.5)))
  def test_zero_jacobian(self, model, method, pair):
    f = dead_relu_net() if model == "dead_relu" else constant_model()
    p, q = pair
    x = tf.constant(np.random.default_rng(14).normal(size=(2, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
      tape.watch(x)
      result = operator_norm(f, x, p, q, method=method, num_iters=3)
      total = tf.reduce_sum(result.norm)
    # Through the linear exact path the norm does not depend on x at all
    # (None); either way the gradient is finite and zero.
    grad = tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    self.assertAllEqual(result.norm, [0.0, 0.0])
    self.assertAllEqual(result.u, np.zeros((2, 3)))
    self.assertAllClose(np_lp_norm(result.v, p), [1.0, 1.0], rtol=1e-5)
    self.assertAllEqual(grad, np.zeros((2, 4)))


class StartsTest(tf.test.TestCase):

  def test_warm_start_at_the_singular_vector(self):
    rng = np.random.default_rng(15)
    w = with_singular_values(rng, [2.0, 1.9, 1.0], 4, 6)
    x = rng.normal(size=(2, 6)).astype(np.float32)
    vt = np.linalg.svd(w)[2]
    v0 = np.tile(3.0 * vt[0], (2, 1)).astype(np.float32)  # Not unit: normalised.
    result = operator_norm(linear(w), x, method="power", num_iters=1, v0=v0)
    self.assertAllClose(result.norm, [2.0, 2.0], rtol=1e-5)
    self.assertAllClose(np.abs(result.v.numpy() @ vt[0]), [1.0, 1.0], rtol=1e-5)

  def test_restarts_never_lose_to_the_first_start(self):
    rng = np.random.default_rng(16)
    w = rng.normal(size=(3, 6))
    x = rng.normal(size=(5, 6)).astype(np.float32)
    v0 = rng.normal(size=(5, 6)).astype(np.float32)
    one = operator_norm(linear(w), x, INF, 2, num_iters=5, v0=v0)
    many = operator_norm(linear(w), x, INF, 2, num_iters=5, v0=v0, num_restarts=5)
    self.assertAllGreaterEqual(many.norm - one.norm, -1e-6)
    self.assertEqual(many.v.shape, x.shape)
    self.assertAllClose(many.norm, np_lp_norm(many.v.numpy() @ w.T, 2), rtol=1e-5)

  def test_zero_start_rows_are_replaced(self):
    rng = np.random.default_rng(17)
    w = with_singular_values(rng, [3.0, 1.0], 3, 5)
    v0 = np.zeros((2, 5), np.float32)
    result = operator_norm(linear(w), np.ones((2, 5), np.float32), method="power", v0=v0)
    self.assertAllClose(result.norm, [3.0, 3.0], rtol=1e-4)

  def test_tolerance_stops_early_at_the_same_answer(self):
    rng = np.random.default_rng(18)
    w = with_singular_values(rng, [3.0, 2.0, 1.0], 4, 6)
    x = rng.normal(size=(2, 6)).astype(np.float32)
    result = operator_norm(linear(w), x, method="power", num_iters=500, tol=1e-7)
    self.assertAllClose(result.norm, [3.0, 3.0], rtol=1e-4)


class CompiledTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(jit_compile=(False, True),
                         setting=(("power", 2.0, 2.0), ("auto", 2.0, 2.0),
                                  ("auto", 2.0, INF), ("power", INF, 1.0)))
  def test_compiled_matches_numpy(self, jit_compile, setting):
    method, p, q = setting
    rng = np.random.default_rng(19)
    w = with_singular_values(rng, [3.0, 1.0, 0.5], 3, 5)
    f = linear(w)
    # The (2,2) power case also runs the early-stopping loop.
    extra = dict(tol=1e-7, num_iters=100) if (method, p) == ("power", 2.0) else {}
    fn = tf.function(lambda x: operator_norm(f, x, p, q, method=method, num_restarts=2, **extra),
                     jit_compile=jit_compile)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    result = fn(x)
    if (p, q) == (2.0, 2.0):
      expected = 3.0
    elif p == 1.0:
      expected = np_lp_norm(w, q, axis=0).max()
    elif math.isinf(q):
      expected = np_lp_norm(w, np_dual(p), axis=1).max()
    else:  # (inf, 1): the vertex maximum is an upper bound.
      vertices = np.array(list(itertools.product([-1.0, 1.0], repeat=5)))
      expected = None
      self.assertAllLessEqual(result.norm, np_lp_norm(vertices @ w.T, 1).max() * (1 + 1e-6))
    if expected is not None:
      self.assertAllClose(result.norm, [expected, expected], rtol=1e-4)
    self.assertEqual(result.exact, method == "auto")

  @parameterized.parameters("power", "auto")
  def test_no_retracing(self, method):
    model = relu_mlp()
    traces = []

    @tf.function
    def norm(x, v0):
      traces.append(1)
      return operator_norm(model, x, method=method, num_iters=3, v0=v0).norm

    rng = np.random.default_rng(20)
    for _ in range(3):
      x = tf.constant(rng.normal(size=(4, 6)).astype(np.float32))
      norm(x, tf.constant(rng.normal(size=(4, 6)).astype(np.float32)))
    self.assertLen(traces, 1)

  def test_keras_functional_and_subclassed_models(self):
    rng = np.random.default_rng(21)
    w = rng.normal(size=(3, 4)).astype(np.float32)

    class Linear(keras.Model):

      def call(self, x):
        return tf.matmul(x, tf.constant(w.T))

    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, use_bias=False)
    functional = keras.Model(inputs, dense(inputs))
    dense.kernel.assign(w.T)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    s = np.linalg.svd(w, compute_uv=False)[0]
    for model in (Linear(), functional):
      self.assertAllClose(operator_norm(model, x).norm, [s, s], rtol=1e-5)


class BadInputTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.f = linear(np.ones((3, 4)))
    self.x = np.ones((2, 4), np.float32)

  @parameterized.named_parameters(
      ("p_below_1", dict(p=0.5), ValueError, "`p`"),
      ("q_string", dict(q="x"), TypeError, "`q`"),
      ("q_nan", dict(q=float("nan")), ValueError, "`q`"),
      ("num_iters_0", dict(num_iters=0), ValueError, "num_iters=0"),
      ("num_iters_float", dict(num_iters=2.5), TypeError, "num_iters=2.5"),
      ("num_restarts_0", dict(num_restarts=0), ValueError, "num_restarts=0"),
      ("method", dict(method="svd"), ValueError, "method='svd'"),
      ("jvp_mode", dict(jvp_mode="reverse"), ValueError, "jvp_mode='reverse'"),
      ("tol", dict(tol=0.0), ValueError, "tol=0.0"),
      ("exact_max_dim", dict(exact_max_dim=0), ValueError, "exact_max_dim=0"),
      ("v0_shape", dict(v0=np.ones((2, 5), np.float32)), ValueError, "`v0`"),
      ("v0_int", dict(v0=np.ones((2, 4), np.int32)), TypeError, "`v0`"),
      ("exact_np_hard", dict(p=INF, q=2, method="exact"), ValueError, "closed form"),
      ("exact_too_big", dict(method="exact", exact_max_dim=2), ValueError, "exact_max_dim=2"),
  )
  def test_bad_arguments(self, kwargs, error, message):
    with self.assertRaisesRegex(error, message):
      operator_norm(self.f, self.x, **kwargs)

  def test_integer_x(self):
    with self.assertRaisesRegex(TypeError, "`x`"):
      operator_norm(self.f, np.ones((2, 4), np.int32))

  def test_not_callable(self):
    with self.assertRaisesRegex(TypeError, "`f`"):
      operator_norm("model", self.x)

  @parameterized.parameters("auto", "power")
  def test_f_returning_rank_3(self, method):
    f = lambda x: tf.reshape(x, [-1, 2, 2])
    with self.assertRaisesRegex(ValueError, "shape"):
      operator_norm(f, self.x, method=method)

  @parameterized.product(method=("auto", "power"), jvp_mode=("forward", "double_backward"))
  def test_not_differentiable(self, method, jvp_mode):
    f = lambda x: tf.stop_gradient(self.f(x))
    with self.assertRaisesRegex(ValueError, "not differentiable"):
      operator_norm(f, self.x, method=method, jvp_mode=jvp_mode)


class DynamicBatchTest(tf.test.TestCase, parameterized.TestCase):
  """A batch axis unknown at trace time (input_signature [None, n])."""

  @parameterized.product(jit=(False, True), method=("auto", "power"))
  def test_unknown_batch(self, jit, method):
    w = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    f = linear(w)
    fn = tf.function(lambda x: operator_norm(f, x, method=method).norm,
                     input_signature=[tf.TensorSpec([None, 6])], jit_compile=jit)
    norm = fn(tf.ones([5, 6]))
    # Linear map: ||J||_{2,2} = sigma_max(W) for every example.
    self.assertAllClose(norm, [np.linalg.svd(w, compute_uv=False)[0]] * 5, rtol=1e-4)


class PublicApiTest(tf.test.TestCase):

  def test_exports(self):
    self.assertIs(keras_opnorm.operator_norm, operator_norm)
    self.assertIs(keras_opnorm.OperatorNormResult,
                  operator_norm(linear(np.eye(2)), np.ones((1, 2), np.float32)).__class__)


if __name__ == "__main__":
  tf.test.main()
