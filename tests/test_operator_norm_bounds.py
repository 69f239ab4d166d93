"""How close `operator_norm`'s default gets to the NP-hard (p,q) norms.

For ``p = inf`` the norm is convex in ``v``, so its maximum over the cube
``||v||_inf <= 1`` is attained at one of the ``2^n`` vertices::

    ||J||_{inf,q} = max_{s in {-1,+1}^n} ||J s||_q

which numpy enumerates for ``n <= 12`` (the reference value: exact, and
independent of the library). Any ``||J v||_q`` with ``||v||_p <= 1`` is a
lower bound, so the estimate must never exceed it either.
"""

import itertools
import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from keras_opnorm.operator_norm import operator_norm
from opnorm_testlib import exact_jacobian
from opnorm_testlib import linear
from opnorm_testlib import relu_mlp

INF = float("inf")


def np_norm(a, q):
  a = np.abs(np.asarray(a, np.float64))
  return a.max(-1) if math.isinf(q) else (a ** q).sum(-1) ** (1.0 / q)


def brute_force_inf_q(jac, q):
  """``[batch]``: ``max_s ||J_b s||_q`` over all ``2^n`` sign vectors ``s``."""
  n = jac.shape[-1]
  vertices = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))  # [2^n, n]
  return np_norm(np.einsum("bdn,sn->bsd", jac, vertices), q).max(axis=1)


def brute_force_p_1(jac, p):
  """``[batch]``: ``||J||_{p,1} = max_u ||J^T u||_{p*}`` over all ``2^d`` sign vectors ``u``.

  By duality ``||J v||_1 = max_{||u||_inf <= 1} <u, J v>``, so the (p, 1)
  norm is ``max_{||u||_inf <= 1} max_{||v||_p <= 1} <J^T u, v>``, and the
  inner maximum is the dual norm ``||J^T u||_{p*}``, convex in ``u``.
  """
  d = jac.shape[-2]
  signs = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))  # [2^d, d]
  dual = 1.0 if math.isinf(p) else p / (p - 1.0)
  return np_norm(np.einsum("bdn,sd->bsn", jac, signs), dual).max(axis=1)


class PNormToL1Test(tf.test.TestCase, parameterized.TestCase):
  """(p, 1) with few logits: exact by enumerating the output sign vectors."""

  @parameterized.product(p=(INF, 2.0, 3.0, 1.5), shape=((1, 6), (4, 30), (10, 64), (12, 5)))
  def test_equals_numpy_enumeration(self, p, shape):
    d, n = shape
    rng = np.random.default_rng(d * 100 + n)
    w = rng.normal(size=(d, n))
    x = rng.normal(size=(3, n)).astype(np.float32)
    result = operator_norm(linear(w), x, p, 1.0)
    self.assertTrue(result.exact)
    exact = brute_force_p_1(np.broadcast_to(w, (3, d, n)), p)
    self.assertAllClose(result.norm, exact, rtol=1e-5)
    # v is feasible and attains it: ||v||_p = 1, ||W v||_1 = norm.
    self.assertAllClose(np_norm(result.v.numpy(), p), np.ones(3), rtol=1e-5)
    self.assertAllClose(np_norm(result.v.numpy() @ w.T, 1.0), exact, rtol=1e-5)

  def test_many_logits_fall_back_to_the_ascent(self):
    w = np.random.default_rng(0).normal(size=(13, 6))
    x = np.zeros((2, 6), np.float32)
    result = operator_norm(linear(w), x, INF, 1.0)
    self.assertFalse(result.exact)
    self.assertAllLessEqual(result.norm / brute_force_inf_q(w[None], 1.0), 1 + 1e-5)
    with self.assertRaisesRegex(ValueError, r"d = 13 logits"):
      operator_norm(linear(w), x, INF, 1.0, method="exact")

  def test_gradient_through_the_jacobian(self):
    # d/dW ||W v*||_1 = sign(W v*) v*^T at the maximiser (envelope theorem).
    w = tf.Variable(np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32))
    x = np.ones((1, 5), np.float32)
    with tf.GradientTape() as tape:
      result = operator_norm(lambda z: tf.matmul(z, w, transpose_b=True), x, INF, 1.0)
      norm = tf.reduce_sum(result.norm)
    v = result.v.numpy()[0]
    expected = np.outer(np.sign(w.numpy() @ v), v)
    self.assertAllClose(tape.gradient(norm, w), expected, atol=1e-5)


class VertexMaximumTest(tf.test.TestCase, parameterized.TestCase):
  """The default estimate is within 2% of the exact (inf, q) norm (exact for q = 1), never above it."""

  @parameterized.product(q=(2.0, 1.0, 3.0), shape=((3, 10), (5, 12), (10, 8)), seed=(0,))
  def test_random_matrices(self, q, shape, seed):
    # (inf, 1) with d <= 12 logits enumerates the output sign vectors: exact.
    factor = 1 - 1e-5 if q == 1.0 else 0.98
    rng = np.random.default_rng(100 + seed)
    d, n = shape
    for _ in range(2):
      w = rng.normal(size=(d, n))
      x = rng.normal(size=(2, n)).astype(np.float32)
      result = operator_norm(linear(w), x, INF, q, seed=seed)
      exact = brute_force_inf_q(w[None], q)
      self.assertEqual(result.exact, q == 1.0)
      self.assertAllGreaterEqual(result.norm / exact, factor)
      self.assertAllLessEqual(result.norm / exact, 1 + 1e-5)
      # norm = ||W v||_q at the returned v, a vertex of the cube.
      self.assertAllClose(np.abs(result.v), np.ones((2, n)))
      self.assertAllClose(result.norm, np_norm(result.v.numpy() @ w.T, q), rtol=1e-5)

  @parameterized.parameters(2.0, 1.0)
  def test_relu_network(self, q):
    # The exact Jacobian of every example from batch_jacobian, then brute force.
    model = relu_mlp(n=10, d=4, width=16, seed=3)
    x = np.random.default_rng(4).normal(size=(6, 10)).astype(np.float32)
    exact = brute_force_inf_q(exact_jacobian(model, x), q)
    norm = operator_norm(model, x, INF, q).norm.numpy()
    self.assertAllGreaterEqual(norm / exact, 0.98)
    self.assertAllLessEqual(norm / exact, 1 + 1e-5)

  def test_compiled_with_xla(self):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(4, 9))
    x = rng.normal(size=(3, 9)).astype(np.float32)
    fn = tf.function(lambda x: operator_norm(linear(w), x, INF, 2).norm, jit_compile=True)
    exact = brute_force_inf_q(np.broadcast_to(w, (3, 4, 9)), 2.0)
    self.assertAllGreaterEqual(fn(x) / exact, 0.98)
    self.assertAllLessEqual(fn(x) / exact, 1 + 1e-5)


class PoorFixedPointTest(tf.test.TestCase, parameterized.TestCase):
  """A start from which the power method stays at 60% of the norm."""

  # J = [[2, 2, 0, 0], [0, 0, 1.5, 1.5]]: ||J s||_2^2 = 4 (s1 + s2)^2 + 2.25 (s3 + s4)^2,
  # maximal at s = (1, 1, 1, 1): ||J||_{inf,2} = sqrt(16 + 9) = 5, and
  # ||J s||_1 = 2 |s1 + s2| + 1.5 |s3 + s4|: ||J||_{inf,1} = 4 + 3 = 7.
  # From v0 = (1, -1, 1, 1): J v0 = (0, 3), u = s_{q*}(J v0) = (0, 1) (q = 1
  # or 2), J^T u = (0, 0, 1.5, 1.5), v1 = sign(.) = (0, 0, 1, 1), and
  # J v1 = (0, 3) again: a fixed point worth 3.
  # The top right singular vector (1, 1, 0, 0) / sqrt(2) (sigma = 2 sqrt(2)
  # > 1.5 sqrt(2)) maps to (1, 1, 0, 0), J v = (4, 0), another fixed point
  # worth 4; only the coordinate moves v3 -> 1, v4 -> 1 (J v = (4, 1.5),
  # then (4, 3)) reach the maximum.
  W = np.array([[2.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.5, 1.5]])
  V0 = np.array([[1.0, -1.0, 1.0, 1.0]], np.float32)

  @parameterized.parameters((2.0, 5.0), (1.0, 7.0))
  def test_default_finds_the_maximum(self, q, expected):
    x = np.zeros((1, 4), np.float32)
    power = operator_norm(linear(self.W), x, INF, q, method="power", v0=self.V0)
    self.assertAllClose(power.norm, [3.0], rtol=1e-6)  # Stuck at the fixed point.
    result = operator_norm(linear(self.W), x, INF, q, v0=self.V0)
    self.assertAllClose(result.norm, [expected], rtol=1e-6)
    v = result.v.numpy()[0]  # A maximiser: s1 = s2, s3 = s4 (four of them).
    self.assertAllClose(np.abs(v), np.ones(4))
    self.assertEqual((v[0], v[2]), (v[1], v[3]))
    self.assertAllClose(brute_force_inf_q(self.W[None], q), [expected])


class PropertiesTest(tf.test.TestCase, parameterized.TestCase):

  def test_never_below_the_power_method_from_the_same_start(self):
    rng = np.random.default_rng(6)
    w = rng.normal(size=(3, 7))
    x = rng.normal(size=(5, 7)).astype(np.float32)
    v0 = rng.normal(size=(5, 7)).astype(np.float32)
    for p, q in ((INF, 2.0), (INF, 1.0), (3.0, 3.0), (1.5, 4.0)):
      power = operator_norm(linear(w), x, p, q, method="power", v0=v0)
      auto = operator_norm(linear(w), x, p, q, v0=v0)
      self.assertAllGreaterEqual(auto.norm - power.norm * (1 - 1e-5), 0.0)
      # A feasible direction: ||v||_p = 1 and norm = ||W v||_q.
      self.assertAllClose(np_norm(auto.v, p), np.ones(5), rtol=1e-5)
      self.assertAllClose(auto.norm, np_norm(auto.v.numpy() @ w.T, q), rtol=1e-5)

  def test_pp_within_two_percent_of_many_starts(self):
    # p = q = 3: the best of 2000 random directions, each refined by 200
    # power iterations in float64 (numpy), is a strong lower bound.
    rng = np.random.default_rng(7)
    w = rng.normal(size=(4, 6))
    x = rng.normal(size=(2, 6)).astype(np.float32)
    z = rng.normal(size=(2000, 6))
    for _ in range(200):
      g = np.sign(z @ w.T) * np.abs(z @ w.T) ** 2 @ w  # J^T s_{3/2}(J v), up to scale.
      z = np.sign(g) * np.abs(g) ** 0.5                  # s_3(g), up to scale.
      z /= np_norm(z, 3)[:, None]
    strong = np_norm(z @ w.T, 3).max()
    upper = np.abs(w).sum(0).max() ** (1 / 3) * np.abs(w).sum(1).max() ** (2 / 3)  # Riesz-Thorin.
    norm = operator_norm(linear(w), x, 3, 3).norm.numpy()
    self.assertAllGreaterEqual(norm / strong, 0.98)
    self.assertAllLessEqual(norm, upper)

  def test_gradient_is_the_envelope_gradient(self):
    # ||W v||_2 with v held constant: d/dW = u v^T, u = W v / ||W v||_2.
    rng = np.random.default_rng(8)
    w = tf.Variable(rng.normal(size=(3, 5)).astype(np.float32))
    x = rng.normal(size=(1, 5)).astype(np.float32)
    with tf.GradientTape() as tape:
      result = operator_norm(lambda x: tf.matmul(x, w, transpose_b=True), x, INF, 2)
      total = tf.reduce_sum(result.norm)
    v = result.v.numpy()[0]
    u = w.numpy() @ v / np.linalg.norm(w.numpy() @ v)
    self.assertAllClose(tape.gradient(total, w), np.outer(u, v), rtol=1e-5, atol=1e-6)

  @parameterized.parameters((INF, 2.0), (INF, 1.0), (3.0, 3.0))
  def test_zero_jacobian(self, p, q):
    f = lambda x: tf.zeros([tf.shape(x)[0], 3]) + 0.0 * tf.reduce_sum(x, 1, keepdims=True)
    x = np.ones((2, 4), np.float32)
    result = operator_norm(f, x, p, q)
    self.assertAllEqual(result.norm, [0.0, 0.0])
    self.assertAllEqual(result.u, np.zeros((2, 3)))
    self.assertAllClose(np_norm(result.v, p), [1.0, 1.0], rtol=1e-6)
    self.assertTrue(np.all(np.isfinite(result.v)))


if __name__ == "__main__":
  tf.test.main()
