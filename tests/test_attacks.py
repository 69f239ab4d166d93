"""Tests for keras_opnorm.attacks: lp PGD and the attack losses.

Expected values come from numpy, closed forms and hand derivations (written
next to each test), never from the attack's own earlier output:

* the constraints (ball and box) are checked with numpy norms;
* for a linear classifier the exact robust accuracy under an lp attack is a
  closed form (a margin against the dual norm of a weight difference), a
  lower bound that no attack can beat and that PGD should reach;
* one large PGD step on the lq logit loss of a linear model is derived by
  hand: x + Proj(delta0 + alpha * s_p(W^T s_{q*}(W delta0))).
"""

import math

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import attacks
from opnorm_testlib import np_dual
from opnorm_testlib import np_lp_norm
from opnorm_testlib import np_steepest

INF = float("inf")
P_VALUES = (1.0, 1.5, 2.0, 3.0, INF)


# ----------------------------------------------------------------------------
# numpy references.
# ----------------------------------------------------------------------------


def linear_fn(w, b):
  """f(x) = x W^T + b: logits [batch, d] of a linear model, W of shape [d, n]."""
  wt = tf.constant(np.asarray(w).T)
  bt = tf.constant(np.asarray(b))
  return lambda x: tf.matmul(x, tf.cast(wt, x.dtype)) + tf.cast(bt, x.dtype)


def nearest_mean_classifier(rng, n=8, d=3, per_class=40, spread=1.0):
  """A linear classifier estimated from Gaussian blobs (Bayes rule, equal priors).

  Class c has mean m_c; the estimated means give logits
  z_c = <m_c, x> - ||m_c||^2 / 2 (nearest mean), i.e. W = M, b = -||m||^2/2.
  """
  means = rng.normal(size=(d, n)) * 2.0
  x = np.concatenate([m + spread * rng.normal(size=(per_class, n)) for m in means])
  y = np.repeat(np.arange(d), per_class)
  est = np.stack([x[y == c].mean(axis=0) for c in range(d)])
  w, b = est, -0.5 * (est ** 2).sum(axis=1)
  return x, y, w, b


def exact_linear_robust_accuracy(x, y, w, b, eps, p):
  """Exact lp robust accuracy of the linear classifier z = x W^T + b.

  Example (x, y) survives every ||delta||_p <= eps iff it is correct and for
  every c != y the margin (w_y - w_c).x + b_y - b_c exceeds the largest
  decrease eps * ||w_y - w_c||_{p*} (Hoelder, attained by delta =
  -eps s_p(w_y - w_c)).
  """
  z = x @ w.T + b
  ok = z.argmax(axis=1) == y
  for c in range(w.shape[0]):
    diff = w[y] - w[c]
    margin = z[np.arange(len(y)), y] - z[:, c]
    need = eps * np.linalg.norm(diff, ord=np_dual(p), axis=1)
    ok &= (y == c) | (margin > need)
  return ok.mean()


def small_mlp(n=6, d=4, seed=0, batch_norm=False):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((n,))
  h = keras.layers.Dense(16, activation="relu")(inputs)
  if batch_norm:
    h = keras.layers.BatchNormalization()(h)
  return keras.Model(inputs, keras.layers.Dense(d)(h))


def rng_x(seed=0, shape=(4, 6), lo=0.0, hi=1.0):
  return np.random.default_rng(seed).uniform(lo, hi, size=shape).astype(np.float32)


# ----------------------------------------------------------------------------
# Losses.
# ----------------------------------------------------------------------------


class LossTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.za = rng.normal(size=(5, 4)).astype(np.float32)
    self.zc = rng.normal(size=(5, 4)).astype(np.float32)
    self.y = np.array([0, 3, 1, 2, 0])

  def test_crossentropy_matches_numpy(self):
    # CE(y, z) = logsumexp(z) - z_y.
    expected = np.log(np.exp(self.za).sum(1)) - self.za[np.arange(5), self.y]
    self.assertAllClose(attacks.crossentropy_loss(self.za, self.zc, self.y), expected,
                        rtol=1e-5)
    onehot = np.eye(4, dtype=np.float32)[self.y]
    self.assertAllClose(attacks.crossentropy_loss(self.za, None, onehot), expected, rtol=1e-5)
    self.assertAllClose(attacks.crossentropy_loss(self.za, None, self.y[:, None]), expected,
                        rtol=1e-5)

  def test_crossentropy_without_labels_uses_clean_prediction(self):
    pred = self.zc.argmax(1)
    expected = np.log(np.exp(self.za).sum(1)) - self.za[np.arange(5), pred]
    self.assertAllClose(attacks.crossentropy_loss(self.za, self.zc), expected, rtol=1e-5)
    with self.assertRaisesRegex(ValueError, "needs `y` or `logits_clean`"):
      attacks.crossentropy_loss(self.za)

  @parameterized.parameters(1.0, 2.0, 3.0, INF)
  def test_logit_distance_matches_numpy(self, q):
    expected = np_lp_norm(self.za - self.zc, q)
    self.assertAllClose(attacks.logit_distance_loss(self.za, self.zc, q=q), expected,
                        rtol=1e-5)
    self.assertAllClose(attacks.attack_loss("logit", q=q)(self.za, self.zc, None), expected,
                        rtol=1e-5)

  @parameterized.parameters(1.0, 2.0, 3.0, INF)
  def test_logit_distance_gradient(self, q):
    # d/dz ||z - z_c||_q = s_{q*}(z - z_c) (for distinct |entries|); 0 at z = z_c.
    za = tf.constant(np.concatenate([self.za[:4], self.zc[4:]]))
    with tf.GradientTape() as tape:
      tape.watch(za)
      loss = tf.reduce_sum(attacks.logit_distance_loss(za, self.zc, q=q))
    g = tape.gradient(loss, za).numpy()
    self.assertAllClose(g[:4], np_steepest(self.za[:4] - self.zc[:4], np_dual(q)), atol=1e-5)
    self.assertAllEqual(g[4], np.zeros(4))

  def test_clean_logits_are_a_constant(self):
    zc = tf.constant(self.zc)
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(zc)
      l1 = tf.reduce_sum(attacks.logit_distance_loss(self.za, zc))
      l2 = tf.reduce_sum(attacks.kl_loss(self.za, zc))
    self.assertIsNone(tape.gradient(l1, zc))
    self.assertIsNone(tape.gradient(l2, zc))

  def test_kl_matches_numpy(self):
    # KL(P || Q) = sum P (log P - log Q) with P = softmax(z_clean).
    def log_softmax(z):
      z = z - z.max(1, keepdims=True)
      return z - np.log(np.exp(z).sum(1, keepdims=True))
    lp, lq = log_softmax(self.zc.astype(np.float64)), log_softmax(self.za.astype(np.float64))
    expected = (np.exp(lp) * (lp - lq)).sum(1)
    self.assertAllClose(attacks.kl_loss(self.za, self.zc), expected, rtol=1e-4)
    self.assertAllClose(attacks.kl_loss(self.zc, self.zc), np.zeros(5), atol=1e-6)

  def test_attack_loss_lookup(self):
    self.assertIs(attacks.attack_loss("crossentropy"), attacks.crossentropy_loss)
    self.assertIs(attacks.attack_loss("kl"), attacks.kl_loss)
    custom = lambda a, c, y: a[:, 0]
    self.assertIs(attacks.attack_loss(custom), custom)
    with self.assertRaisesRegex(ValueError, "Received: loss='hinge'"):
      attacks.attack_loss("hinge")
    with self.assertRaisesRegex(TypeError, "Received: loss=3"):
      attacks.attack_loss(3)
    with self.assertRaisesRegex(ValueError, "`q`"):
      attacks.attack_loss("logit", q=0.5)


# ----------------------------------------------------------------------------
# The sparse l1 step.
# ----------------------------------------------------------------------------


class SparseL1DirectionTest(tf.test.TestCase, parameterized.TestCase):

  def test_top_k_signs_with_unit_l1_norm(self):
    g = np.array([[0.1, -3.0, 2.0, 0.5, -0.2, 4.0, 0.0, -1.0]], np.float32)
    # n = 8, sparsity 0.5: k = 8 - floor(4) = 4 -> |g| top-4 = {4, -3, 2, -1}.
    e = attacks._sparse_l1_direction(tf.constant(g), 0.5).numpy()
    self.assertAllClose(e, [[0, -0.25, 0.25, 0, 0, 0.25, 0, -0.25]])

  def test_sparsity_one_is_the_one_hot_steepest_ascent(self):
    g = np.random.default_rng(0).normal(size=(3, 2, 5)).astype(np.float32)
    e = attacks._sparse_l1_direction(tf.constant(g), 1.0).numpy().reshape(3, -1)
    self.assertAllClose(e, np_steepest(g.reshape(3, -1), 1.0))

  def test_sparsity_zero_is_dense_sign(self):
    g = np.random.default_rng(1).normal(size=(2, 6)).astype(np.float32)
    e = attacks._sparse_l1_direction(tf.constant(g), 0.0).numpy()
    self.assertAllClose(e, np.sign(g) / 6.0)

  def test_zero_gradient_gives_zero(self):
    e = attacks._sparse_l1_direction(tf.zeros([2, 5]), 0.5)
    self.assertAllEqual(e, np.zeros((2, 5)))

  def test_box_rule_skips_coordinates_stuck_on_the_box(self):
    # f(x) = <w, x>, maximised by loss = logit 0 (custom loss). The largest
    # |w_i| is w_0 = 5 > 0, but x_0 = 1 = hi: the one-hot step must move the
    # next coordinate, w_1 = -3 (x_1 decreases), instead of stalling.
    w = np.array([[5.0, -3.0, 1.0]], np.float32)
    f = linear_fn(w, np.zeros(1, np.float32))
    x = np.array([[1.0, 0.5, 0.5]], np.float32)
    x_adv = attacks.pgd_attack(
        f, x, epsilon=0.2, p=1, num_steps=3, random_start=False, clip=(0.0, 1.0),
        loss=lambda za, zc, y: za[:, 0], l1_sparsity=1.0)
    self.assertAllClose(x_adv, [[1.0, 0.3, 0.5]], atol=1e-6)


# ----------------------------------------------------------------------------
# Constraints.
# ----------------------------------------------------------------------------


class ConstraintTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(p=P_VALUES, clip=(None, (0.0, 1.0)),
                         loss=("crossentropy", "logit"))
  def test_in_ball_and_box(self, p, clip, loss):
    model = small_mlp()
    x = rng_x(seed=7, shape=(5, 6))
    eps = 0.3
    # A step of 2 eps leaves the ball every step: the projection is exercised.
    attack = tf.function(lambda x: attacks.pgd_attack(
        model, x, epsilon=eps, p=p, num_steps=3, step_size=2 * eps, clip=clip, loss=loss))
    x_adv = attack(tf.constant(x)).numpy()
    self.assertEqual(x_adv.shape, x.shape)
    self.assertTrue(np.all(np_lp_norm(x_adv - x, p) <= eps * (1 + 1e-5) + 1e-6),
                    np_lp_norm(x_adv - x, p))
    if clip is not None:
      self.assertGreaterEqual(x_adv.min(), 0.0)
      self.assertLessEqual(x_adv.max(), 1.0)
    # The attack uses the budget: not stuck at x.
    self.assertTrue(np.all(np_lp_norm(x_adv - x, p) > 0.05 * eps))

  @parameterized.parameters(1.0, 2.0, INF)
  def test_per_example_epsilon(self, p):
    # Linear model, huge step: each example ends on its own sphere
    # ||x_adv - x||_p = eps_i (no clip; the loss grows along the sphere).
    rng = np.random.default_rng(2)
    f = linear_fn(rng.normal(size=(3, 5)), rng.normal(size=3))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    eps = np.array([0.1, 0.5, 1.0, 2.0], np.float32)
    x_adv = attacks.pgd_attack(f, x, epsilon=tf.constant(eps), p=p, num_steps=2,
                               step_size=tf.constant(100 * eps), loss="logit")
    self.assertAllClose(np_lp_norm(x_adv.numpy() - x, p), eps, rtol=1e-4)

  def test_random_start_is_uniform_in_ball_and_box(self):
    # A model with zero gradient does not move: the result is the random
    # start (clipped). Uniform in the unit lp ball of R^n means
    # P(||z||_p <= r) = r^n, so E||z||_p = n / (n + 1) (no clip here).
    f = lambda x: tf.zeros([tf.shape(x)[0], 3]) + 0.0 * tf.reduce_sum(x, 1, keepdims=True)
    x = rng_x(shape=(2000, 5))
    for p in (1.0, 3.0, INF):
      x_adv = attacks.pgd_attack(f, x, epsilon=0.4, p=p, num_steps=1, loss="logit").numpy()
      r = np_lp_norm(x_adv - x, p) / 0.4
      self.assertTrue(np.all(r <= 1 + 1e-5))
      self.assertAllClose(r.mean(), 5.0 / 6.0, atol=0.02)
      x_adv = attacks.pgd_attack(f, x[:50], epsilon=0.4, p=p, num_steps=1, clip=(0.0, 1.0),
                                 loss="logit").numpy()
      self.assertTrue(np.all((x_adv >= 0) & (x_adv <= 1)))


# ----------------------------------------------------------------------------
# Strength and exact steps.
# ----------------------------------------------------------------------------


class StrengthTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((2.0, 3.0), (INF, 1.0), (1.0, 5.0))
  def test_reaches_exact_linear_robust_accuracy_and_beats_noise(self, p, eps):
    rng = np.random.default_rng(0)
    x, y, w, b = nearest_mean_classifier(rng)
    f = linear_fn(w.astype(np.float32), b.astype(np.float32))
    xt = x.astype(np.float32)
    clean = np.mean((x @ w.T + b).argmax(1) == y)
    exact = exact_linear_robust_accuracy(x, y, w, b, eps, p)
    x_adv = attacks.pgd_attack(f, xt, y, epsilon=eps, p=p, num_steps=20).numpy()
    pgd = np.mean((x_adv @ w.T + b).argmax(1) == y)
    # Random noise of the same norm: a random direction scaled onto the sphere.
    d = rng.normal(size=xt.shape)
    d = eps * d / np_lp_norm(d, p)[:, None] if not math.isinf(p) else eps * np.sign(d)
    noisy = np.mean(((xt + d) @ w.T + b).argmax(1) == y)
    # No attack beats the exact bound; with 3 classes CE is only a surrogate
    # of the smallest margin (it may climb toward the wrong rival), so PGD
    # gets close (measured gap <= 0.06) but not always to it.
    self.assertGreater(clean, 0.95)
    self.assertGreaterEqual(pgd, exact - 1e-9)
    self.assertLessEqual(pgd, exact + 0.1)
    # l_inf noise of norm eps is a corner of the cube (l2 norm eps sqrt(n)):
    # strong noise, hence the smaller margin there (measured 0.71 vs 0.78).
    self.assertLess(pgd, noisy - (0.05 if math.isinf(p) else 0.3))

  @parameterized.parameters((2.0, 3.0), (INF, 1.0), (1.0, 5.0), (3.0, 3.0))
  def test_binary_linear_attack_is_optimal(self, p, eps):
    # Two classes: CE = log(1 + exp(-m)) with the margin m = (w_y - w_c).x +
    # b_y - b_c, so the CE gradient is a positive multiple of -(w_y - w_c)
    # and s_p of it is the optimal direction: from x, PGD walks straight along
    # it onto the sphere (4 steps of 2.5 eps / 10) and reaches the exact bound.
    rng = np.random.default_rng(1)
    x, y, w, b = nearest_mean_classifier(rng, d=2)
    f = linear_fn(w, b)
    exact = exact_linear_robust_accuracy(x, y, w, b, eps, p)
    attack = lambda x: attacks.pgd_attack(
        f, x, y, epsilon=eps, p=p, num_steps=10, random_start=False, l1_sparsity=1.0)
    if p == 3.0:
      attack = tf.function(attack)  # Graph: the bisection projection is slow eagerly.
    x_adv = attack(tf.constant(x)).numpy()
    self.assertAllClose(np.mean((x_adv @ w.T + b).argmax(1) == y), exact)
    self.assertBetween(exact, 0.05, 0.9)

  @parameterized.parameters((2.0, 2.0), (INF, 2.0), (2.0, 1.0), (INF, INF), (2.0, 3.0),
                            (INF, 1.0))
  def test_one_logit_step_matches_hand_derivation(self, p, q):
    # f(x) = W x + b, loss ||f(x*) - f(x)||_q, start x* = x + delta0:
    #   grad = W^T s_{q*}(W delta0)               (gradient of the lq norm)
    #   x_1  = x + Proj_{B_p}(delta0 + alpha * s_p(grad))
    # Proj for p = inf clips to [-eps, eps], for p = 2 rescales to norm eps.
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 6))
    f = linear_fn(w, rng.normal(size=4))
    x = rng.normal(size=(3, 6))
    eps, alpha = 0.5, 3.0
    delta0 = 0.2 * rng.normal(size=(3, 6))
    x_adv = attacks.pgd_attack(f, x, epsilon=eps, p=p, q=q, num_steps=1, step_size=alpha,
                               random_start=False, delta0=delta0, loss="logit").numpy()
    if math.isinf(p):
      d0 = np.clip(delta0, -eps, eps)
    else:
      d0 = delta0 * np.minimum(1.0, eps / np_lp_norm(delta0, 2))[:, None]
    grad = np_steepest(d0 @ w.T, np_dual(q)) @ w
    d1 = d0 + alpha * np_steepest(grad, p)
    if math.isinf(p):
      d1 = np.clip(d1, -eps, eps)
    else:
      d1 = d1 * np.minimum(1.0, eps / np_lp_norm(d1, 2))[:, None]
    self.assertAllClose(x_adv, x + d1, atol=1e-10)
    self.assertEqual(x_adv.dtype, np.float64)
    # With a huge step the point is x + eps * s_p(grad): on the sphere.
    x_big = attacks.pgd_attack(f, x, epsilon=eps, p=p, q=q, num_steps=1, step_size=1e8,
                               random_start=False, delta0=delta0, loss="logit").numpy()
    self.assertAllClose(x_big, x + eps * np_steepest(grad, p), atol=1e-7)

  def test_targeted_reaches_the_target(self):
    rng = np.random.default_rng(1)
    x, y, w, b = nearest_mean_classifier(rng, per_class=20)
    f = linear_fn(w.astype(np.float32), b.astype(np.float32))
    target = (y + 1) % 3
    x_adv = attacks.pgd_attack(f, x.astype(np.float32), target, epsilon=20.0, p=2,
                               num_steps=20, targeted=True).numpy()
    hit = np.mean((x_adv @ w.T + b).argmax(1) == target)
    self.assertGreater(hit, 0.95)
    # A small targeted budget lowers the target's cross-entropy.
    xs = attacks.pgd_attack(f, x.astype(np.float32), target, epsilon=0.5, p=2, num_steps=5,
                            targeted=True, random_start=False)
    ce = lambda z: attacks.crossentropy_loss(z, None, target).numpy()
    self.assertTrue(np.all(ce(f(xs)) < ce(f(tf.constant(x, tf.float32)))))

  def test_restarts_keep_the_best_run(self):
    # Deterministic runs: restart 0 starts at delta0, restart 1 at x
    # (random_start=False; CE has a non-zero gradient at x). Per example the
    # result must be one of the two single runs: a misclassified one if
    # either is, else the one with the larger CE.
    model = small_mlp(seed=3)
    x = rng_x(seed=4, shape=(8, 6))
    delta0 = np.random.default_rng(5).normal(size=x.shape).astype(np.float32)
    kw = dict(epsilon=0.5, p=2, num_steps=3, random_start=False)
    a = attacks.pgd_attack(model, x, delta0=delta0, **kw).numpy()
    b = attacks.pgd_attack(model, x, **kw).numpy()
    best = attacks.pgd_attack(model, x, delta0=delta0, num_restarts=2, **kw).numpy()
    pred = np.argmax(model(x), 1)
    ce = lambda t: attacks.crossentropy_loss(model(t), None, pred).numpy()
    wrong = lambda t: np.argmax(model(t), 1) != pred
    self.assertAllEqual(wrong(best), wrong(a) | wrong(b))
    for i in range(len(x)):
      expect = a[i] if (wrong(a)[i], ce(a)[i]) >= (wrong(b)[i], ce(b)[i]) else b[i]
      self.assertAllClose(best[i], expect)

  def test_restarts_never_worse_than_one_run(self):
    # 'logit' from x starts at a zero gradient and takes a random first step,
    # so only restart 0 (from delta0) is reproducible: the best of 3 has at
    # least its loss, per example, and differs from it only by a larger loss.
    model = small_mlp(seed=3)
    x = rng_x(seed=4, shape=(8, 6))
    delta0 = np.random.default_rng(5).normal(size=x.shape).astype(np.float32)
    kw = dict(epsilon=0.5, p=2, num_steps=3, random_start=False, loss="logit")
    a = attacks.pgd_attack(model, x, delta0=delta0, **kw).numpy()
    best = attacks.pgd_attack(model, x, delta0=delta0, num_restarts=3, **kw).numpy()
    loss = lambda t: attacks.logit_distance_loss(model(t), model(x)).numpy()
    self.assertTrue(np.all(loss(best) >= loss(a) - 1e-6))
    same = np.all(np.isclose(best, a), axis=1)
    self.assertTrue(np.all(same | (loss(best) > loss(a))))

  def test_restarts_prefer_misclassified_points(self):
    # Logits z = (0, x_0, x_1), label 0, CE = log(1 + e^x_0 + e^x_1).
    # Restart 0 starts at x + delta0 = (0.1, -10): class 1 wins (misclassified)
    # with CE ~ log(1 + e^0.1) = 0.744. Restart 1 starts at x = (-0.05, -0.05):
    # correct, with the larger CE log(1 + 2 e^-0.05) = 1.065. One tiny l_inf
    # step (sign of the gradient = (+1, +1)) changes neither fact, so the
    # misclassified run must win despite its lower loss:
    # (0.1, -10) + 1e-3 * (1, 1) = (0.101, -9.999).
    f = lambda x: tf.concat([tf.zeros_like(x[:, :1]), x], axis=1)
    x = np.array([[-0.05, -0.05]], np.float32)
    delta0 = np.array([[0.15, -9.95]], np.float32)
    kw = dict(epsilon=10.0, p=INF, num_steps=1, step_size=1e-3, random_start=False,
              delta0=delta0, num_restarts=2)
    best = attacks.pgd_attack(f, x, np.array([0]), **kw).numpy()
    self.assertAllClose(best, [[0.101, -9.999]], atol=1e-5)
    # The 'logit' loss has no such preference: the larger distance wins,
    # ||(0, 0.15, -9.95)||_2 > ||(0, 0, 0)||, i.e. again restart 0.
    # (gradient sign of the distance: (+1, -1), so x_1 = -10 - 1e-3).
    best = attacks.pgd_attack(f, x, loss="logit", **kw).numpy()
    self.assertAllClose(best, [[0.101, -10.001]], atol=1e-5)

  def test_custom_loss(self):
    # loss = -z_0 with z = W x: gradient -w_0, so the l_inf attack is
    # x - eps * sign(w_0) after one step of size >= eps.
    rng = np.random.default_rng(6)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    f = linear_fn(w, np.zeros(3, np.float32))
    x = rng.normal(size=(2, 4)).astype(np.float32)
    x_adv = attacks.pgd_attack(f, x, epsilon=0.1, p=INF, num_steps=1, step_size=0.2,
                               random_start=False, loss=lambda za, zc, y: -za[:, 0])
    self.assertAllClose(x_adv, x - 0.1 * np.sign(w[0]), atol=1e-7)

  def test_labels_none_attacks_the_prediction(self):
    model = small_mlp(seed=1)
    x = rng_x(seed=1)
    pred = np.argmax(model(x), 1)
    kw = dict(epsilon=0.2, p=2, num_steps=3, random_start=False)
    a = attacks.pgd_attack(model, x, None, **kw)
    b = attacks.pgd_attack(model, x, pred, **kw)
    c = attacks.pgd_attack(model, x, np.eye(4, dtype=np.float32)[pred], **kw)
    self.assertAllClose(a, b)
    self.assertAllClose(a, c)

  @parameterized.parameters("logit", "kl")
  def test_zero_gradient_start_still_moves(self, loss):
    # At x* = x the 'logit' and 'kl' losses have gradient 0; without a random
    # start the attack starts next to x (power method's random v0) and must
    # reach the sphere, not stall at x or give NaN.
    rng = np.random.default_rng(7)
    f = linear_fn(rng.normal(size=(3, 5)).astype(np.float32), np.zeros(3, np.float32))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    for q in (2.0, 3.0):
      x_adv = attacks.pgd_attack(f, x, epsilon=0.5, p=2, num_steps=5, random_start=False,
                                 loss=loss, q=q).numpy()
      self.assertTrue(np.all(np.isfinite(x_adv)))
      self.assertAllClose(np_lp_norm(x_adv - x, 2), np.full(4, 0.5), rtol=1e-4)


# ----------------------------------------------------------------------------
# Keras integration, dtypes, compilation.
# ----------------------------------------------------------------------------


class IntegrationTest(tf.test.TestCase, parameterized.TestCase):

  def test_batch_norm_statistics_are_not_updated(self):
    model = small_mlp(batch_norm=True)
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)][0]
    before = [v.numpy().copy() for v in bn.non_trainable_variables]
    x = rng_x(shape=(8, 6))
    attacks.pgd_attack(model, x, epsilon=0.3, num_steps=3)
    for b, v in zip(before, bn.non_trainable_variables):
      self.assertAllEqual(b, v.numpy())
    # training=True reaches the model (batch statistics, updated averages).
    attacks.pgd_attack(model, x, epsilon=0.3, num_steps=2, training=True)
    self.assertNotAllClose(before[0], bn.non_trainable_variables[0].numpy())

  @parameterized.parameters("float16", "bfloat16", "float64")
  def test_dtype_round_trip(self, dtype):
    model = small_mlp()
    x = tf.cast(rng_x(shape=(3, 6)), dtype)
    x_adv = attacks.pgd_attack(model, x, epsilon=0.25, p=INF, num_steps=2, clip=(0.0, 1.0))
    self.assertEqual(x_adv.dtype, x.dtype)
    gap = np.abs(tf.cast(x_adv, tf.float64).numpy() - tf.cast(x, tf.float64).numpy())
    # Up to the rounding of x_adv to the input dtype (bfloat16: 2^-8 relative).
    self.assertLessEqual(gap.max(), 0.25 + 2.0 ** -7)

  def test_image_input_and_sequential_model(self):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(5)])
    x = rng_x(shape=(2, 4, 4, 2))
    for p in (1.0, 2.0, INF):
      x_adv = attacks.pgd_attack(model, x, epsilon=0.5, p=p, num_steps=2).numpy()
      self.assertEqual(x_adv.shape, x.shape)
      self.assertTrue(np.all(np_lp_norm(x_adv - x, p) <= 0.5 * (1 + 1e-5)))

  @parameterized.product(p=(1.0, 2.0, 3.0, INF), jit_compile=(False, True))
  def test_compiled_no_retracing(self, p, jit_compile):
    model = small_mlp()
    traces = []
    # p = 3 under XLA: the bisection projection makes a large program; keep
    # it to one restart there (restarts are a while loop: same program size).
    restarts = 1 if (p == 3.0 and jit_compile) else 2

    @tf.function(jit_compile=jit_compile)
    def attack(x, y, eps):
      traces.append(1)
      return attacks.pgd_attack(model, x, y, epsilon=eps, p=p, num_steps=3,
                                clip=(0.0, 1.0), num_restarts=restarts)

    for seed in range(3):
      x = rng_x(seed=seed, shape=(4, 6))
      y = np.arange(4) % 4
      eps = tf.constant(0.1 * (seed + 1))
      x_adv = attack(tf.constant(x), tf.constant(y), eps).numpy()
      self.assertTrue(np.all(np_lp_norm(x_adv - x, p) <= float(eps) * (1 + 1e-5)))
    self.assertLen(traces, 1)

  @parameterized.parameters(("crossentropy", True, 1), ("crossentropy", False, 2),
                            ("logit", True, 2), ("kl", False, 2))
  def test_one_forward_per_step_and_one_clean_pass(self, loss, with_labels, expected):
    # Counting the calls of f while the graph is traced: the while loop's
    # body calls it once (forward + its backward every step), and the clean
    # logits cost one more call only when the loss or y=None needs them.
    calls = []
    w = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    linear = linear_fn(w, np.zeros(3, np.float32))

    def f(x):
      calls.append(1)
      return linear(x)

    y = tf.constant([0, 1]) if with_labels else None
    tf.function(lambda x: attacks.pgd_attack(f, x, y, epsilon=0.1, num_steps=7, loss=loss))(
        tf.zeros([2, 4]))
    self.assertLen(calls, expected)

  def test_keras_variable_epsilon(self):
    # Schedules change epsilon through a Keras variable: no retracing, and the
    # new value is used.
    model = small_mlp()
    eps = keras.Variable(0.1)
    attack = tf.function(lambda x: attacks.pgd_attack(model, x, epsilon=eps, p=INF,
                                                      num_steps=2, step_size=1.0))
    x = rng_x()
    for value in (0.1, 0.3):
      eps.assign(value)
      gap = np.abs(attack(tf.constant(x)).numpy() - x).max()
      self.assertAllClose(gap, value, rtol=1e-5)
    self.assertEqual(attack.experimental_get_tracing_count(), 1)

  @parameterized.parameters(*P_VALUES)
  def test_float64_in_graph(self, p):
    rng = np.random.default_rng(8)
    f = linear_fn(rng.normal(size=(3, 4)), np.zeros(3))
    x = rng.normal(size=(2, 4))
    x_adv = tf.function(lambda x: attacks.pgd_attack(f, x, epsilon=0.5, p=p, num_steps=2))(
        tf.constant(x))
    self.assertEqual(x_adv.dtype, tf.float64)
    self.assertTrue(np.all(np_lp_norm(x_adv.numpy() - x, p) <= 0.5 * (1 + 1e-9)))

  @parameterized.parameters("logit", "kl")
  def test_compiled_losses(self, loss):
    model = small_mlp()
    fn = tf.function(lambda x: attacks.pgd_attack(model, x, epsilon=0.2, p=2.0, loss=loss,
                                                  num_steps=2), jit_compile=True)
    x = rng_x()
    self.assertTrue(np.all(np_lp_norm(fn(tf.constant(x)).numpy() - x, 2) <= 0.2 * 1.00001))


# ----------------------------------------------------------------------------
# Bad input.
# ----------------------------------------------------------------------------


class BadInputTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.f = linear_fn(np.ones((3, 4), np.float32), np.zeros(3, np.float32))
    self.x = np.zeros((2, 4), np.float32)

  @parameterized.parameters(0.0, -1.0, float("nan"), float("inf"))
  def test_epsilon(self, eps):
    with self.assertRaisesRegex(ValueError, "`epsilon`.*Received: epsilon="):
      attacks.pgd_attack(self.f, self.x, epsilon=eps)
    with self.assertRaisesRegex(ValueError, "`epsilon`.*Received: epsilon="):
      attacks.pgd_attack(self.f, self.x, epsilon=tf.constant([0.1, eps]))

  def test_epsilon_types_and_shapes(self):
    with self.assertRaisesRegex(TypeError, "Received: epsilon=True"):
      attacks.pgd_attack(self.f, self.x, epsilon=True)
    with self.assertRaisesRegex(TypeError, "Received: epsilon='big'"):
      attacks.pgd_attack(self.f, self.x, epsilon="big")
    with self.assertRaisesRegex(ValueError, "shape=\\(3,\\)"):
      attacks.pgd_attack(self.f, self.x, epsilon=tf.constant([0.1, 0.2, 0.3]))
    with self.assertRaisesRegex(ValueError, "`step_size`.*Received: step_size=0"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, step_size=0.0)

  def test_epsilon_checked_in_graph_mode(self):
    fn = tf.function(lambda e: attacks.pgd_attack(self.f, self.x, epsilon=e, num_steps=1))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "`epsilon` must be positive"):
      fn(tf.constant(-0.1))

  def test_steps_restarts_exponents(self):
    with self.assertRaisesRegex(ValueError, "Received: num_steps=0"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, num_steps=0)
    with self.assertRaisesRegex(TypeError, "Received: num_steps=2.5"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, num_steps=2.5)
    with self.assertRaisesRegex(ValueError, "Received: num_restarts=0"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, num_restarts=0)
    with self.assertRaisesRegex(ValueError, "`p`.*Received: p=0.5"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, p=0.5)
    with self.assertRaisesRegex(ValueError, "`q`.*Received: q=0.0"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, loss="logit", q=0)
    with self.assertRaisesRegex(ValueError, "Received: l1_sparsity=1.5"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, p=1, l1_sparsity=1.5)

  def test_inputs(self):
    with self.assertRaisesRegex(TypeError, "`x`.*dtype=int32"):
      attacks.pgd_attack(self.f, np.zeros((2, 4), np.int32), epsilon=0.1)
    with self.assertRaisesRegex(ValueError, "`y` must have the batch size of `x` \\(2\\)"):
      attacks.pgd_attack(self.f, self.x, np.array([0, 1, 2]), epsilon=0.1)
    for loss in ("crossentropy", "logit"):
      with self.assertRaisesRegex(ValueError, "as many classes as `f` has logits"):
        attacks.pgd_attack(self.f, self.x, np.eye(5, dtype=np.float32)[:2], epsilon=0.1,
                           loss=loss)
    with self.assertRaisesRegex(ValueError, "needs the target labels"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, targeted=True)
    with self.assertRaisesRegex(ValueError, "Received: clip=\\(1.0, 0.0\\)"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, clip=(1.0, 0.0))
    with self.assertRaisesRegex(ValueError, "`delta0` must have the shape"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, delta0=np.zeros((2, 3), np.float32))

  def test_model_output(self):
    with self.assertRaisesRegex(ValueError, "logits of shape \\[batch, d\\]"):
      attacks.pgd_attack(lambda x: tf.reduce_sum(x, 1), self.x, epsilon=0.1)
    with self.assertRaisesRegex(ValueError, "logits of shape \\[batch, d\\]"):
      attacks.pgd_attack(lambda x: x[:, :, None], self.x, epsilon=0.1)
    with self.assertRaisesRegex(TypeError, "`f` must be a Keras model or a callable"):
      attacks.pgd_attack(3, self.x, epsilon=0.1)

  @parameterized.parameters(False, True)
  def test_not_differentiable(self, compiled):
    f = lambda x: tf.stop_gradient(self.f(x))
    call = lambda x: attacks.pgd_attack(f, x, epsilon=0.1, num_steps=2)
    if compiled:
      call = tf.function(call)
    with self.assertRaisesRegex(ValueError, "not differentiable"):
      call(tf.constant(self.x))

  def test_unknown_loss(self):
    with self.assertRaisesRegex(ValueError, "Received: loss='mse'"):
      attacks.pgd_attack(self.f, self.x, epsilon=0.1, loss="mse")
