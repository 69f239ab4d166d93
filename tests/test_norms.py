"""Tests for keras_opnorm.norms against numpy, closed forms and optimality.

Every expected value is derived independently of the code under test: numpy
norms, Hoelder's equality, a numpy implementation of Duchi et al.'s l1
projection, the KKT conditions of the lp projection and brute-force search.
"""

import math

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from keras_opnorm import norms

INF = float("inf")
P_VALUES = (1.0, 1.5, 2.0, 3.0, INF)


def np_lp_norm(x, p):
  """Per-example lp norm over all non-batch axes, in float64 numpy."""
  flat = np.asarray(x, np.float64).reshape(len(x), -1)
  return np.linalg.norm(flat, ord=p, axis=1)


def np_project_l1(v, eps):
  """Duchi, Shalev-Shwartz, Singer & Chandra (ICML 2008), Fig. 1, in numpy.

  theta is the soft threshold for which sum(max(|v| - theta, 0)) = eps:
  mu = sort(|v|) descending, rho = the largest j (1-based) with
  mu_j - (sum_{r<=j} mu_r - eps) / j > 0, theta = (sum_{r<=rho} mu_r - eps) / rho.
  """
  v = np.asarray(v, np.float64)
  if np.abs(v).sum() <= eps:
    return v.copy()
  mu = np.sort(np.abs(v).ravel())[::-1]
  cs = np.cumsum(mu)
  j = np.arange(1, mu.size + 1)
  rho = np.nonzero(mu - (cs - eps) / j > 0)[0][-1] + 1
  theta = (cs[rho - 1] - eps) / rho
  return np.sign(v) * np.maximum(np.abs(v) - theta, 0.0)


def rank4(rng, batch=3, dtype=np.float32):
  return rng.normal(size=(batch, 2, 3, 2)).astype(dtype)


class DualExponentTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      (1, INF), (INF, 1.0), ("inf", 1.0), (2, 2.0), (3, 1.5), (1.5, 3.0),
      (4, 4.0 / 3.0), (np.float32(2.0), 2.0))
  def test_values(self, p, expected):
    self.assertEqual(norms.dual_exponent(p), expected)

  @parameterized.parameters(1.1, 1.5, 2.0, 3.0, 7.5)
  def test_hoelder_conjugate_and_involution(self, p):
    ps = norms.dual_exponent(p)
    self.assertAllClose(1.0 / p + 1.0 / ps, 1.0)
    self.assertAllClose(norms.dual_exponent(ps), p)


class LpNormTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*P_VALUES)
  def test_rank2_matches_numpy(self, p):
    x = np.random.default_rng(1).normal(size=(5, 7)).astype(np.float32)
    self.assertAllClose(norms.lp_norm(x, p), np_lp_norm(x, p), rtol=1e-5)

  @parameterized.parameters(*P_VALUES)
  def test_rank4_matches_numpy_over_all_non_batch_axes(self, p):
    x = rank4(np.random.default_rng(2))
    out = norms.lp_norm(x, p)
    self.assertEqual(out.shape, (3,))
    self.assertAllClose(out, np_lp_norm(x, p), rtol=1e-5)
    kept = norms.lp_norm(x, p, keepdims=True)
    self.assertEqual(kept.shape, (3, 1, 1, 1))
    self.assertAllClose(tf.reshape(kept, [-1]), out)

  def test_large_p_and_large_values_are_stable(self):
    # (sum |x|^p)^(1/p) overflows float32 for 1e3^50; factoring out the max
    # keeps it finite: ||(1e3, 2e3)||_50 = 2e3 * (1 + 2^-50)^(1/50).
    x = np.array([[1e3, -2e3]], np.float32)
    self.assertAllClose(norms.lp_norm(x, 50.0), np_lp_norm(x, 50.0), rtol=1e-6)

  def test_zero_examples(self):
    x = np.zeros((2, 3), np.float32)
    for p in P_VALUES:
      self.assertAllEqual(norms.lp_norm(x, p), [0.0, 0.0])

  @parameterized.parameters(*P_VALUES)
  def test_gradient_at_zero_is_finite(self, p):
    # A zero logit difference (PGD without random start) must not give NaN.
    x = tf.constant([[0.0, 0.0, 0.0], [0.0, 1.0, -2.0]])
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = tf.reduce_sum(norms.lp_norm(x, p))
    g = tape.gradient(y, x)
    self.assertAllEqual(tf.math.is_finite(g), tf.ones_like(g, tf.bool))
    self.assertAllEqual(g[0], [0.0, 0.0, 0.0])

  def test_float64_stays_float64(self):
    x = np.ones((2, 3), np.float64)
    self.assertEqual(norms.lp_norm(x, 3).dtype, tf.float64)


class NormalizeTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*P_VALUES)
  def test_unit_norm_and_direction(self, p):
    x = rank4(np.random.default_rng(3))
    y = norms.normalize(x, p).numpy()
    self.assertAllClose(np_lp_norm(y, p), np.ones(3), rtol=1e-5)
    # Same direction: y = x / ||x||_p.
    self.assertAllClose(y, x / np_lp_norm(x, p)[:, None, None, None], rtol=1e-5)

  @parameterized.parameters(*P_VALUES)
  def test_zero_stays_zero(self, p):
    y = norms.normalize(np.zeros((2, 4), np.float32), p)
    self.assertAllEqual(y, np.zeros((2, 4)))


class SteepestAscentTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(p=P_VALUES, rank=(2, 4))
  def test_unit_norm_and_hoelder_equality(self, p, rank):
    # Hoelder: <v, g> <= ||v||_p ||g||_{p*}, with equality at v = s_p(g).
    rng = np.random.default_rng(4)
    g = rng.normal(size=(4, 6)) if rank == 2 else rng.normal(size=(4, 2, 3, 2))
    g = g.astype(np.float32)
    s = norms.steepest_ascent(g, p).numpy()
    self.assertEqual(s.shape, g.shape)
    self.assertAllClose(np_lp_norm(s, p), np.ones(4), rtol=1e-5)
    inner = (s.reshape(4, -1) * g.reshape(4, -1)).sum(axis=1)
    self.assertAllClose(inner, np_lp_norm(g, norms.dual_exponent(p)), rtol=1e-5)

  @parameterized.parameters(1.0, 1.5, 3.0, INF)
  def test_beats_random_feasible_directions(self, p):
    # s_p(g) is the maximiser of <v, g> on the unit ball: no random unit v
    # does better.
    rng = np.random.default_rng(5)
    g = rng.normal(size=(1, 5)).astype(np.float32)
    best = float(np.sum(norms.steepest_ascent(g, p).numpy() * g))
    v = rng.normal(size=(2000, 5))
    v /= np_lp_norm(v, p)[:, None]
    self.assertLessEqual(float(np.max(v @ g[0])), best + 1e-5)

  def test_p1_is_signed_one_hot_at_argmax(self):
    g = np.array([[0.5, -3.0, 2.0], [1.0, 0.0, -0.25]], np.float32)
    self.assertAllEqual(norms.steepest_ascent(g, 1), [[0, -1, 0], [1, 0, 0]])
    g4 = rank4(np.random.default_rng(6))
    s = norms.steepest_ascent(g4, 1).numpy().reshape(3, -1)
    flat = g4.reshape(3, -1)
    idx = np.argmax(np.abs(flat), axis=1)
    expected = np.zeros_like(flat)
    expected[np.arange(3), idx] = np.sign(flat[np.arange(3), idx])
    self.assertAllEqual(s, expected)

  def test_closed_forms(self):
    g = np.array([[3.0, -4.0]], np.float32)
    self.assertAllClose(norms.steepest_ascent(g, 2), [[0.6, -0.8]])
    self.assertAllEqual(norms.steepest_ascent(g, INF), [[1.0, -1.0]])
    # p = 3, p* = 3/2: s = sign(g)|g|^(1/2) / || |g|^(1/2) ||_3.
    w = np.sqrt([3.0, 4.0])
    self.assertAllClose(norms.steepest_ascent(g, 3),
                        [np.array([1.0, -1.0]) * w / np.sum(w**3) ** (1 / 3)])

  @parameterized.parameters(*P_VALUES)
  def test_zero_gradient_gives_zero(self, p):
    s = norms.steepest_ascent(np.zeros((2, 2, 2, 1), np.float32), p)
    self.assertAllEqual(s, np.zeros((2, 2, 2, 1)))

  @parameterized.parameters(1.0, 1.5, 2.0, 3.0, INF)
  def test_gradient_of_lq_norm_is_s_q_star(self, q):
    # d/dz ||z||_q = s_{q*}(z) for z != 0 without ties (PAPER.md, Notation).
    z = tf.constant(np.random.default_rng(7).normal(size=(3, 5)), tf.float32)
    with tf.GradientTape() as tape:
      tape.watch(z)
      n = tf.reduce_sum(norms.lp_norm(z, q))
    grad = tape.gradient(n, z)
    self.assertAllClose(grad, norms.steepest_ascent(z, norms.dual_exponent(q)),
                        atol=1e-5)


class ProjectionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*P_VALUES)
  def test_points_inside_are_unchanged(self, p):
    d = rank4(np.random.default_rng(8))
    d *= (0.9 / np_lp_norm(d, p))[:, None, None, None]  # ||d||_p = 0.9 < 1
    self.assertAllEqual(norms.project_lp_ball(d, 1.0, p), d)
    self.assertAllEqual(norms.project_lp_ball(np.zeros((2, 3), np.float32), 1.0, p),
                        np.zeros((2, 3)))

  @parameterized.product(p=P_VALUES, rank=(2, 4))
  def test_outside_lands_on_the_sphere(self, p, rank):
    rng = np.random.default_rng(9)
    d = 3.0 * (rng.normal(size=(4, 6)) if rank == 2 else rng.normal(size=(4, 2, 3, 2)))
    d = d.astype(np.float32)
    d *= (2.0 / np_lp_norm(d, p)).astype(np.float32).reshape((4,) + (1,) * (rank - 1))
    out = norms.project_lp_ball(d, 0.5, p).numpy()
    self.assertEqual(out.shape, d.shape)
    n = np_lp_norm(out, p)
    self.assertAllLessEqual(n, 0.5 * (1 + 1e-5))
    self.assertAllClose(n, np.full(4, 0.5), rtol=1e-4)

  def test_p2_is_rescaling(self):
    d = np.array([[3.0, 4.0], [0.3, 0.4]], np.float32)
    # ||d_0|| = 5 > 1: d_0 / 5; ||d_1|| = 0.5 <= 1: unchanged.
    self.assertAllClose(norms.project_lp_ball(d, 1.0, 2), [[0.6, 0.8], [0.3, 0.4]])

  def test_pinf_is_clipping(self):
    d = np.array([[3.0, -0.2, -4.0]], np.float32)
    self.assertAllClose(norms.project_lp_ball(d, 0.5, INF), [[0.5, -0.2, -0.5]])

  def test_p1_matches_numpy_duchi(self):
    rng = np.random.default_rng(10)
    d = rng.normal(size=(6, 2, 2, 3)).astype(np.float32)
    eps = 0.7
    out = norms.project_lp_ball(d, eps, 1).numpy()
    expected = np.stack([np_project_l1(di, eps) for di in d])
    self.assertAllClose(out, expected, atol=1e-6)
    self.assertAllClose(norms.project_l1_ball(d, eps), expected, atol=1e-6)
    # Not a rescale: the soft threshold zeroes small coordinates.
    self.assertGreater(int(np.sum(out == 0)), 0)

  def test_p1_hand_example(self):
    # d = (3, 1, -0.5), eps = 2: mu = (3, 1, 0.5), cumsum = (3, 4, 4.5);
    # j=1: 3 - (3-2)/1 = 2 > 0; j=2: 1 - (4-2)/2 = 0, not > 0; j=3: < 0.
    # rho = 1, theta = 3 - 2 = 1, proj = (3-1, max(1-1, 0), -max(0.5-1, 0)).
    out = norms.project_lp_ball(np.array([[3.0, 1.0, -0.5]], np.float32), 2.0, 1)
    self.assertAllClose(out, [[2.0, 0.0, 0.0]])

  @parameterized.parameters(1.0, 1.5, 3.0)
  def test_no_feasible_point_is_closer(self, p):
    # Brute force: random feasible points, far (uniform in the ball) and near
    # the answer (perturbed, then scaled into the ball), are never closer to d.
    rng = np.random.default_rng(11)
    d = (2.0 * rng.normal(size=(3, 4))).astype(np.float64)
    eps = 1.0
    x = norms.project_lp_ball(d, eps, p).numpy()
    best = np.linalg.norm(d - x, axis=1)
    for b in range(3):
      far = norms.random_lp_ball([3000, 4], eps, p, dtype=tf.float64).numpy()
      near = x[b] + 0.05 * rng.normal(size=(3000, 4))
      near *= np.minimum(1.0, eps / np_lp_norm(near, p))[:, None]
      for cand in (far, near):
        self.assertAllLessEqual(np_lp_norm(cand, p), eps * (1 + 1e-9))
        dist = np.linalg.norm(cand - d[b], axis=1)
        self.assertGreaterEqual(dist.min(), best[b] - 1e-7)

  @parameterized.parameters(1.5, 3.0, 1.2, 6.0)
  def test_general_p_satisfies_kkt(self, p):
    # min ||x - d||^2/2 s.t. ||x||_p^p <= eps^p. For ||d||_p > eps the
    # constraint is active and stationarity reads d - x = lam * p *
    # sign(x)|x|^(p-1) with lam >= 0: d - x is a non-negative multiple of
    # the outer normal sign(x)|x|^(p-1), and sign(x) = sign(d), |x| <= |d|.
    rng = np.random.default_rng(12)
    d = (3.0 * rng.normal(size=(4, 2, 3))).astype(np.float64)
    eps = np.array([0.5, 1.0, 2.0, 0.25])
    x = norms.project_lp_ball(d, eps, p).numpy()
    self.assertAllClose(np_lp_norm(x, p), eps, rtol=1e-9)
    r = (d - x).reshape(4, -1)
    normal = (np.sign(x) * np.abs(x) ** (p - 1)).reshape(4, -1)
    cos = (r * normal).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(normal, axis=1))
    self.assertAllClose(cos, np.ones(4), atol=1e-9)
    self.assertAllEqual(np.sign(x), np.sign(d))
    self.assertAllLessEqual(np.abs(x) - np.abs(d), 1e-12)

  @parameterized.parameters(*P_VALUES)
  def test_per_example_epsilon(self, p):
    rng = np.random.default_rng(13)
    d = (4.0 * rng.normal(size=(3, 2, 2, 1))).astype(np.float32)
    eps = np.array([0.5, 1.0, 100.0], np.float32)
    out = norms.project_lp_ball(d, tf.constant(eps), p).numpy()

    @tf.function  # one trace for the three single examples (eager is slow for 1 < p < inf)
    def project_one(d, e):
      return norms.project_lp_ball(d, e, p)

    for b in range(3):
      self.assertAllClose(out[b:b + 1], project_one(d[b:b + 1], tf.constant(eps[b])), atol=1e-6)
    self.assertAllLessEqual(np_lp_norm(out, p) / eps, 1 + 1e-5)
    self.assertAllEqual(out[2], d[2])  # inside the radius-100 ball


class RandomTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(p=P_VALUES, rank=(2, 4))
  def test_random_lp_ball_inside(self, p, rank):
    shape = [50, 6] if rank == 2 else [50, 2, 3, 1]
    eps = np.linspace(0.1, 5.0, 50).astype(np.float32)
    x = norms.random_lp_ball(shape, tf.constant(eps), p).numpy()
    self.assertEqual(list(x.shape), shape)
    self.assertAllLessEqual(np_lp_norm(x, p) / eps, 1 + 1e-5)
    x = norms.random_lp_ball(shape, 0.3, p).numpy()
    self.assertAllLessEqual(np_lp_norm(x, p), 0.3 * (1 + 1e-5))

  @parameterized.parameters(*P_VALUES)
  def test_random_lp_ball_is_uniform(self, p):
    # Uniform in the unit ball of R^n: P(||x||_p <= r) = vol(rB)/vol(B) = r^n.
    # n = 2, r = 0.5 -> 0.25 and n = 3, r = 0.8 -> 0.512; N = 20000 draws, so
    # the binomial standard deviation is < 0.0036: allow 5 sigma = 0.018.
    # Also each coordinate is symmetric: its mean is 0 (sd 1/sqrt(N)).
    for n, r, expected in ((2, 0.5, 0.25), (3, 0.8, 0.512)):
      x = norms.random_lp_ball([20000, n], 1.0, p, dtype=tf.float64).numpy()
      frac = np.mean(np_lp_norm(x, p) <= r)
      self.assertAllClose(frac, expected, atol=0.018)
      self.assertAllLessEqual(np.abs(x.mean(axis=0)), 5 / math.sqrt(20000))

  def test_seeded_draws_are_not_correlated_inside_a_graph(self):
    # Inside tf.function, ops sharing one op seed draw the same stream; the
    # magnitude and the sign of the l1 sampler must still be independent:
    # E|x_i| is the same for positive and negative coordinates.
    x = tf.function(lambda: norms.random_lp_ball([20000, 2], 1.0, 1, seed=3))().numpy()
    pos = np.abs(x[x > 0]).mean()
    neg = np.abs(x[x < 0]).mean()
    self.assertAllClose(pos, neg, atol=0.02)

  @parameterized.product(p=P_VALUES, rank=(2, 4))
  def test_random_direction_unit_norm(self, p, rank):
    shape = [7, 5] if rank == 2 else [7, 2, 2, 3]
    v = norms.random_direction(shape, p).numpy()
    self.assertEqual(list(v.shape), shape)
    self.assertAllClose(np_lp_norm(v, p), np.ones(7), rtol=1e-5)


class CompiledTest(tf.test.TestCase, parameterized.TestCase):
  """Every function runs inside tf.function with jit_compile=True (XLA)."""

  @parameterized.parameters(*P_VALUES)
  def test_deterministic_functions_under_xla(self, p):
    x = rank4(np.random.default_rng(14), batch=4)
    eps = tf.constant([0.1, 0.5, 1.0, 2.0])

    @tf.function(jit_compile=True)
    def run(x):
      return (norms.lp_norm(x, p), norms.normalize(x, p),
              norms.steepest_ascent(x, p), norms.project_lp_ball(x, eps, p),
              norms.project_lp_ball(x, 0.3, p))

    got = run(tf.constant(x))
    eager = (norms.lp_norm(x, p), norms.normalize(x, p), norms.steepest_ascent(x, p),
             norms.project_lp_ball(x, eps, p), norms.project_lp_ball(x, 0.3, p))
    for a, b in zip(got, eager):
      self.assertAllClose(a, b, atol=1e-5)

  @parameterized.parameters(1.5, 3.0)
  def test_general_p_projection_graph_is_small(self, p):
    # The nested bisections must be loops in the graph: unrolled (40 x 40
    # steps) they made ~27,000 nodes, which XLA took minutes to compile.
    def project(d):
      return norms.project_lp_ball(d, 1.0, p)

    graph = tf.function(project).get_concrete_function(tf.TensorSpec([None, 4])).graph
    self.assertLess(len(graph.as_graph_def().node), 1000)

  def test_project_l1_ball_under_xla(self):
    d = np.random.default_rng(15).normal(size=(3, 8)).astype(np.float32)
    out = tf.function(lambda d: norms.project_l1_ball(d, 0.5), jit_compile=True)(d)
    self.assertAllClose(out, np.stack([np_project_l1(x, 0.5) for x in d]), atol=1e-6)

  @parameterized.parameters(*P_VALUES)
  def test_random_functions_under_xla(self, p):

    @tf.function(jit_compile=True)
    def run():
      return (norms.random_lp_ball([200, 2, 2, 1], 0.5, p),
              norms.random_direction([200, 2, 2, 1], p))

    ball, direction = run()
    self.assertAllLessEqual(np_lp_norm(ball.numpy(), p), 0.5 * (1 + 1e-5))
    self.assertAllClose(np_lp_norm(direction.numpy(), p), np.ones(200), rtol=1e-5)


class BadInputTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("half", 0.5, ValueError), ("zero", 0, ValueError), ("negative_inf", -INF, ValueError),
      ("nan", float("nan"), ValueError), ("string", "x", TypeError),
      ("bool", True, TypeError), ("none", None, TypeError))
  def test_bad_exponent(self, p, error):
    x = tf.ones((2, 3))
    calls = (
        lambda: norms.validate_exponent(p),
        lambda: norms.dual_exponent(p),
        lambda: norms.lp_norm(x, p),
        lambda: norms.normalize(x, p),
        lambda: norms.steepest_ascent(x, p),
        lambda: norms.project_lp_ball(x, 1.0, p),
        lambda: norms.random_lp_ball([2, 3], 1.0, p),
        lambda: norms.random_direction([2, 3], p),
    )
    for call in calls:
      with self.assertRaisesRegex(error, "`p` must be a real number in \\[1, inf\\]. Received: p="):
        call()

  def test_error_names_the_argument(self):
    with self.assertRaisesRegex(ValueError, "Received: q=0.5"):
      norms.validate_exponent(0.5, name="q")


if __name__ == "__main__":
  tf.test.main()
