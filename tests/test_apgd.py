"""Tests for keras_opnorm.attacks.apgd: APGD, l1-APGD, APGD-T and their pieces.

Expected values come from hand derivations, closed forms and numpy (written
next to each test), never from the attack's own earlier output:

* the checkpoint schedule is derived by hand from the rule of the paper;
* the box-aware l1 projection is compared with a numpy bisection on the
  multiplier of its KKT conditions, and the KKT conditions are checked;
* for a linear model the exact minimal lp distance of each example to the
  decision boundary is a closed form: no attack breaks an example farther
  than eps, and APGD / APGD-T must break those closer than 0.9 eps;
* the constraints (ball and box) are checked with numpy norms.

Attacks run inside ``tf.function`` (a fresh one per call) where they take
many steps: eager ``tf.while_loop`` bodies run op by op.
"""

import math

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import norms
from keras_opnorm.attacks import pgd_attack
from keras_opnorm.attacks.apgd import apgd_attack
from keras_opnorm.attacks.apgd import apgd_schedule_checkpoints
from keras_opnorm.attacks.apgd import apgd_targeted_attack
from keras_opnorm.attacks.apgd import project_l1_box
from keras_opnorm.attacks.losses import dlr_loss
from opnorm_testlib import np_dual
from opnorm_testlib import np_lp_norm

INF = float("inf")
P_NAMES = {INF: "inf", 2.0: "l2", 1.0: "l1"}


# ----------------------------------------------------------------------------
# numpy references and small models.
# ----------------------------------------------------------------------------


def np_project_l1_box(delta, x, eps, lo, hi, iters=200):
  """argmin ||d - delta||_2 s.t. ||d||_1 <= eps, lo <= x + d <= hi (float64).

  KKT: for a multiplier lam >= 0 of the l1 constraint the problem separates
  into 1-d problems min (d_i - delta_i)^2/2 + lam |d_i| over d_i in
  [lo - x_i, hi - x_i], solved by soft thresholding then clipping:
  d_i(lam) = sign(delta_i) min(max(|delta_i| - lam, 0), c_i) with c_i the room
  of the box in the direction of delta_i. phi(lam) = ||d(lam)||_1 is
  continuous and non-increasing: lam = 0 if phi(0) <= eps, else bisection on
  phi(lam) = eps in [0, max |delta_i|].
  """
  delta = np.asarray(delta, np.float64).reshape(len(delta), -1)
  x = np.asarray(x, np.float64).reshape(len(delta), -1)
  eps = np.broadcast_to(np.asarray(eps, np.float64), (len(delta),))
  lo = -np.inf if lo is None else lo
  hi = np.inf if hi is None else hi
  out = np.zeros_like(delta)
  lams = np.zeros(len(delta))
  for r in range(len(delta)):
    a = np.abs(delta[r])
    c = np.maximum(np.where(delta[r] >= 0, hi - x[r], x[r] - lo), 0.0)

    def d_of(lam, a=a, c=c):
      return np.minimum(np.maximum(a - lam, 0.0), c)

    lam = 0.0
    if d_of(0.0).sum() > eps[r]:
      lo_l, hi_l = 0.0, a.max()
      for _ in range(iters):
        mid = 0.5 * (lo_l + hi_l)
        lo_l, hi_l = (mid, hi_l) if d_of(mid).sum() > eps[r] else (lo_l, mid)
      lam = 0.5 * (lo_l + hi_l)
    out[r] = np.sign(delta[r]) * d_of(lam)
    lams[r] = lam
  return out, lams, c


def linear_model(rng, n=6, d=5):
  w = rng.normal(size=(d, n))
  b = 0.5 * rng.normal(size=d)
  wt, bt = tf.constant(w.T, tf.float32), tf.constant(b, tf.float32)
  return w, b, (lambda x: tf.matmul(x, wt) + bt)


def exact_linear_distance(x, w, b, p):
  """Minimal lp distance of each x to the decision boundary of z = W x + b.

  Moving from class y to class j needs (w_y - w_j) delta <= -(margin_j),
  margin_j = (w_y - w_j) x + b_y - b_j; by Hoelder the smallest ||delta||_p
  doing so is margin_j / ||w_y - w_j||_{p*}; the distance is the min over j.
  """
  z = x @ w.T + b
  y = z.argmax(axis=1)
  rows = np.arange(len(x))
  out = np.full(len(x), np.inf)
  for j in range(w.shape[0]):
    diff = w[y] - w[j]
    margin = z[rows, y] - z[:, j]
    dual = np.linalg.norm(diff, ord=np_dual(p), axis=1)
    out = np.minimum(out, np.where(y == j, np.inf, margin / np.maximum(dual, 1e-300)))
  return out, y


def relu_mlp_fn(seed, n=10, width=32, d=5):
  """A 2-hidden-layer ReLU MLP R^n -> R^d with fixed random weights."""
  r = np.random.default_rng(seed)
  ws = [r.normal(size=(n, width)) / math.sqrt(n), r.normal(size=(width, width)) / math.sqrt(width),
        r.normal(size=(width, d)) / math.sqrt(width)]
  bs = [0.1 * r.normal(size=width), 0.1 * r.normal(size=width), np.zeros(d)]
  ws = [tf.constant(v, tf.float32) for v in ws]
  bs = [tf.constant(v, tf.float32) for v in bs]

  def f(x):
    h = tf.nn.relu(tf.matmul(x, ws[0]) + bs[0])
    h = tf.nn.relu(tf.matmul(h, ws[1]) + bs[1])
    return tf.matmul(h, ws[2]) + bs[2]

  return f


def compiled(attack, f, **kwargs):
  """The attack in a fresh tf.function (fast: the loops run as one graph)."""
  return tf.function(lambda x: attack(f, x, **kwargs))


def predictions(f, x):
  return np.argmax(f(tf.constant(x, tf.float32)).numpy(), axis=1)


# ----------------------------------------------------------------------------
# The checkpoint schedule.
# ----------------------------------------------------------------------------


class ScheduleTest(tf.test.TestCase, parameterized.TestCase):

  # The rule p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
  # by hand: gaps 0.22, 0.22-0.03 = 0.19, 0.16, 0.13, 0.10, 0.07, then
  # max(0.04, 0.06) = 0.06 for ever, so
  #   p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99   (next 1.05 > 1).
  # w_j = ceil(p_j N), duplicates listed once:
  #   N = 100: 0, 22, 41, 57, 70, 80, 87, 93, 99
  #   N = 1000: ten times those
  #   N = 50:  0, 11, ceil(20.5) = 21, ceil(28.5) = 29, 35, 40, ceil(43.5) = 44,
  #            ceil(46.5) = 47, ceil(49.5) = 50
  #   N = 10:  0, ceil(2.2) = 3, ceil(4.1) = 5, ceil(5.7) = 6, 7, 8, ceil(8.7) = 9,
  #            ceil(9.3) = 10, ceil(9.9) = 10 (once)
  #   N = 5:   0, ceil(1.1) = 2, ceil(2.05) = 3, ceil(2.85) = 3, ceil(3.5) = 4, 4,
  #            ceil(4.35) = 5, 5, 5
  #   N = 1:   0, then ceil(p_j) = 1 for every p_j > 0
  @parameterized.parameters(
      (100, [0, 22, 41, 57, 70, 80, 87, 93, 99]),
      (1000, [0, 220, 410, 570, 700, 800, 870, 930, 990]),
      (50, [0, 11, 21, 29, 35, 40, 44, 47, 50]),
      (10, [0, 3, 5, 6, 7, 8, 9, 10]),
      (5, [0, 2, 3, 4, 5]),
      (1, [0, 1]),
  )
  def test_hand_derived(self, num_steps, expected):
    self.assertEqual(apgd_schedule_checkpoints(num_steps), expected)

  def test_exact_arithmetic(self):
    # In floats p_3 = 0.22 + 0.19 + 0.16 = 0.5700000000000001 and
    # ceil(100 p_3) = 58; the rule in exact arithmetic gives 57.
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
      p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    self.assertEqual(math.ceil(100 * p[3]), 58)
    self.assertEqual(apgd_schedule_checkpoints(100)[3], 57)

  @parameterized.parameters(0, -3)
  def test_bad_num_steps(self, num_steps):
    with self.assertRaisesRegex(ValueError, f"num_steps={num_steps}"):
      apgd_schedule_checkpoints(num_steps)


# ----------------------------------------------------------------------------
# The box-aware l1 projection.
# ----------------------------------------------------------------------------


class ProjectL1BoxTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("both_bind", 8.0, 0.6, (0.0, 1.0)),       # large delta: ball and box active
      ("box_binds_only", 0.4, 50.0, (0.0, 1.0)),  # ||clip(delta)||_1 <= eps
      ("inside", 0.02, 5.0, (0.0, 1.0)),          # small delta, may still hit the box
      ("no_box", 3.0, 1.5, None),
      ("lower_only", 3.0, 1.5, (0.0, None)),
  )
  def test_against_numpy_bisection(self, scale, eps, box):
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(7, 12))
    delta = scale * rng.normal(size=(7, 12))
    lo, hi = (None, None) if box is None else box
    got = project_l1_box(tf.constant(delta), tf.constant(x), eps, lo, hi).numpy()
    want, _, _ = np_project_l1_box(delta, x, eps, lo, hi)
    self.assertAllClose(got, want, atol=1e-9, rtol=0)

  def test_kkt_conditions(self):
    # float32, rank-4 images and per-example radii. With lam the multiplier
    # (from the numpy reference) and c_i the room of the box towards delta_i:
    # free coordinates (0 < |d_i| < c_i) have |delta_i| - |d_i| = lam, zero
    # ones |delta_i| <= lam, saturated ones (|d_i| = c_i) |delta_i| - c_i >= lam,
    # and signs agree; ||d||_1 = eps where the l1 constraint is active.
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(5, 3, 3, 2)).astype(np.float32)
    delta = (2.0 * rng.normal(size=x.shape)).astype(np.float32)
    eps = np.array([0.5, 1.0, 2.0, 4.0, 100.0], np.float32)
    d = project_l1_box(tf.constant(delta), tf.constant(x), tf.constant(eps), 0.0, 1.0).numpy()
    self.assertAllGreaterEqual(x + d, -1e-6)
    self.assertAllLessEqual(x + d, 1.0 + 1e-6)
    self.assertAllLessEqual(np_lp_norm(d, 1.0) - eps * (1 + 1e-5), 0.0)
    _, lams, _ = np_project_l1_box(delta, x, eps, 0.0, 1.0)
    df, xf, af = d.reshape(5, -1), x.reshape(5, -1), np.abs(delta.reshape(5, -1))
    self.assertAllGreaterEqual(df * delta.reshape(5, -1), -1e-7)
    for r in range(5):
      c = np.where(delta.reshape(5, -1)[r] >= 0, 1.0 - xf[r], xf[r])
      ad = np.abs(df[r])
      free = (ad > 1e-6) & (ad < c - 1e-6)
      self.assertAllClose(af[r][free] - ad[free], np.full(free.sum(), lams[r]), atol=1e-5)
      zero, sat = ad <= 1e-6, ad >= c - 1e-6
      self.assertTrue(np.all(af[r][zero] <= lams[r] + 1e-5))
      self.assertTrue(np.all(af[r][sat] - c[sat] >= lams[r] - 1e-5))
      self.assertGreater(free.sum() + zero.sum() + sat.sum(), 0)
      if lams[r] > 0:
        self.assertAllClose(ad.sum(), eps[r], rtol=1e-5)
    # The last radius is large: only the box acts, d = clip(delta).
    self.assertAllClose(d[4], np.clip(x[4] + delta[4], 0, 1) - x[4], atol=1e-6)

  def test_no_box_is_the_l1_ball_projection(self):
    # Without a box the problem is the Euclidean projection onto the l1 ball
    # (Duchi et al. 2008, `norms.project_l1_ball`).
    rng = np.random.default_rng(3)
    delta = tf.constant(rng.normal(size=(6, 9)))
    self.assertAllClose(project_l1_box(delta, tf.zeros_like(delta), 1.3),
                        norms.project_l1_ball(delta, 1.3), atol=1e-12)

  def test_closest_feasible_point(self):
    # Optimality: no random feasible point (in the ball and the box) is closer.
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(1, 8))
    delta = 2.0 * rng.normal(size=(1, 8))
    d = project_l1_box(tf.constant(delta), tf.constant(x), 1.0, 0.0, 1.0).numpy()
    best = np.linalg.norm(d - delta)
    for _ in range(200):
      q = rng.uniform(size=(1, 8)) - x                    # in the box
      q = q * min(1.0, 1.0 / np.abs(q).sum()) * rng.uniform()  # into the ball, still in the box
      self.assertGreaterEqual(np.linalg.norm(q - delta), best - 1e-12)


# ----------------------------------------------------------------------------
# The attacks on linear models: closed-form distances.
# ----------------------------------------------------------------------------


class LinearModelTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(p=(INF, 2.0), targeted=(False, True))
  def test_breaks_exactly_what_is_breakable(self, p, targeted):
    rng = np.random.default_rng(0)
    w, b, f = linear_model(rng)
    x = rng.normal(size=(40, 6))
    dist, y = exact_linear_distance(x, w, b, p)
    eps = float(np.median(dist))  # about half the examples are breakable
    if targeted:
      attack = compiled(apgd_targeted_attack, f, epsilon=eps, p=p, num_targets=4, seed=0)
    else:
      attack = compiled(apgd_attack, f, epsilon=eps, p=p, seed=0)
    x_adv = attack(tf.constant(x, tf.float32)).numpy()
    broken = predictions(f, x_adv) != y
    must, cannot = dist < 0.9 * eps, dist > eps
    self.assertGreater(must.sum(), 10)
    self.assertGreater(cannot.sum(), 10)
    self.assertTrue(broken[must].all(), f"missed {np.where(must & ~broken)[0]}")
    self.assertFalse(broken[cannot].any())
    self.assertAllLessEqual(np_lp_norm(x_adv - x, p), eps * (1 + 1e-5))

  def test_targets_are_the_next_highest_classes(self):
    # n = 20, eps = 0.1 (l_inf), logits z = (1, 0.5 + x_1, 20 mean(x), -5) at
    # class 0 = y. Class 1 (the 2nd highest at x = 0, the first target) needs
    # x_1 > 0.5: out of reach. Class 2 (the 3rd highest, the second target)
    # needs mean(x) > 0.05, reachable (max 0.1). Ascending DLR_T towards
    # class 1, -(0.5 - x_1) / (1 - (z_2 + z_3) / 2), raises x_1 and lowers z_2
    # (a larger denominator raises the negative ratio), moving away from class 2;
    # the random start (mean of 20 uniforms on [-0.1, 0.1], sd 0.013) does not
    # reach mean 0.05. So one target breaks nothing, two targets break x.
    n = 20
    w = np.zeros((4, n), np.float32)
    w[1, 0] = 1.0
    w[2] = 20.0 / n
    b = np.array([1.0, 0.5, 0.0, -5.0], np.float32)
    f = lambda x: tf.matmul(x, tf.constant(w.T)) + tf.constant(b)  # noqa: E731
    x = tf.zeros([1, n])
    one = apgd_targeted_attack(f, x, epsilon=0.1, num_targets=1, num_steps=20, seed=0)
    two = apgd_targeted_attack(f, x, epsilon=0.1, num_targets=2, num_steps=20, seed=0)
    self.assertEqual(predictions(f, one.numpy())[0], 0)
    self.assertEqual(predictions(f, two.numpy())[0], 2)
    self.assertAllLessEqual(np.abs(two.numpy()), 0.1 * (1 + 1e-6))

  @parameterized.parameters(INF, 2.0)
  def test_dlr_is_scale_invariant_ce_is_masked(self, p):
    # Logits scaled by 1e5: softmax saturates, the float32 cross-entropy
    # gradient is exactly 0 (softmax - onehot = 0) and CE-APGD never leaves its
    # random start, which lies on the sphere (||delta||_p = eps). DLR is
    # invariant to the scale (the 1e-12 aside), so it breaks the same
    # examples on the scaled model as on the original, and more than CE.
    rng = np.random.default_rng(0)
    w, b, f = linear_model(rng)
    big = lambda x: 1e5 * f(x)  # noqa: E731
    x = rng.normal(size=(40, 6)).astype(np.float32)
    dist, y = exact_linear_distance(x, w, b, p)
    eps = float(np.median(dist))
    dlr = compiled(apgd_attack, f, epsilon=eps, p=p, loss="dlr", seed=3)(x).numpy()
    dlr_big = compiled(apgd_attack, big, epsilon=eps, p=p, loss="dlr", seed=3)(x).numpy()
    ce_big = compiled(apgd_attack, big, epsilon=eps, p=p, seed=3)(x).numpy()
    broken = lambda xa: predictions(f, xa) != y  # noqa: E731
    self.assertAllEqual(broken(dlr), broken(dlr_big))
    self.assertAllClose(dlr, dlr_big, atol=1e-3)
    self.assertFalse(broken(dlr)[dist > eps].any())
    self.assertGreater(broken(dlr).sum(), broken(ce_big).sum() + 5)
    self.assertAllClose(np_lp_norm(ce_big - x, p), np.full(40, eps), rtol=1e-5)

  def test_callable_loss_is_used(self):
    # A callable (logits_adv, logits_clean, y) -> [batch] computing the DLR
    # gives the same attack as loss='dlr' (same seed: same random starts).
    rng = np.random.default_rng(5)
    _, _, f = linear_model(rng)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    calls = []

    def my_dlr(logits_adv, logits_clean, y):
      calls.append(1)
      self.assertEqual(logits_clean.shape, logits_adv.shape)
      return dlr_loss(logits_adv, y=y)

    got = apgd_attack(f, x, epsilon=0.3, loss=my_dlr, num_steps=5, seed=1)
    want = apgd_attack(f, x, epsilon=0.3, loss="dlr", num_steps=5, seed=1)
    self.assertTrue(calls)
    self.assertAllClose(got, want, atol=0)


# ----------------------------------------------------------------------------
# Constraints, bookkeeping, reproducibility, graphs.
# ----------------------------------------------------------------------------


class AttackPropertiesTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(p=(INF, 2.0, 1.0), targeted=(False, True))
  def test_in_ball_and_box(self, p, targeted):
    # A Keras model on 4x4x1 images in [0, 1], per-example radii (a [batch]
    # tensor), some pixels exactly on the box.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(5)])
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(6, 4, 4, 1)).astype(np.float32)
    x[:, 0, :, 0] = 0.0
    x[:, 1, :, 0] = 1.0
    scale = {INF: 0.1, 2.0: 0.5, 1.0: 2.0}[p]
    eps = scale * np.linspace(0.5, 1.5, 6).astype(np.float32)
    attack = apgd_targeted_attack if targeted else apgd_attack
    kwargs = dict(num_targets=2) if targeted else dict(num_restarts=2)
    x_adv = compiled(attack, model, epsilon=tf.constant(eps), p=p, num_steps=20,
                     clip=(0.0, 1.0), seed=0, **kwargs)(tf.constant(x))
    self.assertEqual(x_adv.shape, x.shape)
    self.assertEqual(x_adv.dtype, tf.float32)
    x_adv = x_adv.numpy()
    self.assertAllGreaterEqual(x_adv, 0.0)
    self.assertAllLessEqual(x_adv, 1.0)
    self.assertAllLessEqual(np_lp_norm(x_adv - x, p) - eps * (1 + 1e-5), 0.0)

  def test_float64_and_eager(self):
    # Eager, float64, flat inputs: the result keeps the dtype and the ball.
    rng = np.random.default_rng(0)
    _, _, f32 = linear_model(rng)
    f = lambda x: tf.cast(f32(tf.cast(x, tf.float32)), tf.float64)  # noqa: E731
    x = tf.constant(rng.uniform(size=(3, 6)))
    for p in (INF, 2.0, 1.0):
      x_adv = apgd_attack(f, x, epsilon=0.2, p=p, num_steps=3, clip=(0.0, 1.0), seed=0)
      self.assertEqual(x_adv.dtype, tf.float64)
      self.assertAllLessEqual(np_lp_norm(x_adv - x, p), 0.2 * (1 + 1e-7))

  def test_one_hot_labels_and_xla(self):
    # One-hot labels are the integer labels; the l1 attack (sort-based
    # projection, sparse steps) compiles with XLA and keeps ball and box.
    f = relu_mlp_fn(0)
    x = tf.constant(np.random.default_rng(6).uniform(size=(5, 10)), tf.float32)
    y = tf.constant(predictions(f, x.numpy()))
    ints = apgd_attack(f, x, y, epsilon=0.1, num_steps=3, seed=2)
    onehot = apgd_attack(f, x, tf.one_hot(y, 5), epsilon=0.1, num_steps=3, seed=2)
    self.assertAllEqual(ints, onehot)
    xla = tf.function(lambda x: apgd_attack(f, x, epsilon=1.0, p=1.0, num_steps=8,
                                            clip=(0.0, 1.0), seed=2), jit_compile=True)
    x_adv = xla(x).numpy()
    self.assertAllInRange(x_adv, 0.0, 1.0)
    self.assertAllLessEqual(np_lp_norm(x_adv - x.numpy(), 1.0), 1.0 + 1e-5)

  def test_misclassified_examples_are_returned_unchanged(self):
    # Examples whose label y is already wrong at x are adversarial at delta = 0.
    rng = np.random.default_rng(1)
    _, _, f = linear_model(rng)
    x = rng.normal(size=(6, 6)).astype(np.float32)
    pred = predictions(f, x)
    y = pred.copy()
    y[:3] = (pred[:3] + 1) % 5
    for attack in (apgd_attack, apgd_targeted_attack):
      kwargs = dict(num_targets=2) if attack is apgd_targeted_attack else {}
      x_adv = attack(f, x, y, epsilon=0.05, num_steps=3, seed=0, **kwargs).numpy()
      self.assertAllEqual(x_adv[:3], x[:3])
      self.assertNotAllEqual(x_adv[3:], x[3:])

  @parameterized.parameters(INF, 2.0, 1.0)
  def test_seed_reproducibility(self, p):
    rng = np.random.default_rng(2)
    f = relu_mlp_fn(0)
    x = tf.constant(rng.uniform(size=(8, 10)), tf.float32)
    run = lambda seed: apgd_attack(f, x, epsilon=0.05, p=p, num_steps=4, seed=seed)  # noqa: E731
    a, b, c = run(7), run(7), run(8)
    self.assertAllEqual(a, b)
    self.assertNotAllEqual(a, c)

  def test_targeted_seed_reproducibility(self):
    rng = np.random.default_rng(2)
    f = relu_mlp_fn(0)
    x = tf.constant(rng.uniform(size=(8, 10)), tf.float32)
    run = lambda seed: apgd_targeted_attack(  # noqa: E731
        f, x, epsilon=0.02, num_targets=2, num_steps=4, seed=seed)
    self.assertAllEqual(run(3), run(3))
    self.assertNotAllEqual(run(3), run(4))

  def test_no_retracing_and_graph_matches_eager(self):
    rng = np.random.default_rng(3)
    f = relu_mlp_fn(1)
    traces = []

    @tf.function
    def attack(x):
      traces.append(1)
      return (apgd_attack(f, x, epsilon=0.1, num_steps=6, seed=5),
              apgd_targeted_attack(f, x, epsilon=0.1, num_targets=2, num_steps=6, seed=5))

    x1 = tf.constant(rng.uniform(size=(4, 10)), tf.float32)
    x2 = tf.constant(rng.uniform(size=(4, 10)), tf.float32)
    g1, _ = attack(x1)
    attack(x2)
    self.assertLen(traces, 1)
    self.assertEqual(attack.experimental_get_tracing_count(), 1)
    self.assertAllClose(g1, apgd_attack(f, x1, epsilon=0.1, num_steps=6, seed=5), atol=1e-5)

  @parameterized.parameters((INF, 0.05), (INF, 0.1), (2.0, 0.2), (2.0, 0.4))
  def test_at_least_as_strong_as_pgd(self, p, eps):
    # Robust accuracy (own predictions as labels, inputs in [0, 1]) of a random
    # ReLU MLP under APGD (100 steps) is <= under PGD (20 steps), same inputs.
    f = relu_mlp_fn(0)
    x = tf.constant(np.random.default_rng(100).uniform(size=(64, 10)), tf.float32)
    y = predictions(f, x.numpy())
    tf.random.set_seed(0)
    x_pgd = pgd_attack(f, x, epsilon=eps, p=p, num_steps=20, clip=(0.0, 1.0))
    x_apgd = compiled(apgd_attack, f, epsilon=eps, p=p, clip=(0.0, 1.0), seed=0)(x)
    acc_pgd = np.mean(predictions(f, x_pgd.numpy()) == y)
    acc_apgd = np.mean(predictions(f, x_apgd.numpy()) == y)
    self.assertLess(acc_pgd, 0.9)  # the setting is not trivial
    self.assertLessEqual(acc_apgd, acc_pgd)


# ----------------------------------------------------------------------------
# Bad input.
# ----------------------------------------------------------------------------


class ErrorsTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.f = relu_mlp_fn(0, n=3, width=4, d=4)
    self.x = tf.zeros([2, 3])

  @parameterized.named_parameters(
      ("p", dict(p=3), "p=3"),
      ("num_steps", dict(num_steps=0), "num_steps=0"),
      ("num_restarts", dict(num_restarts=0), "num_restarts=0"),
      ("rho_zero", dict(rho=0.0), "rho=0.0"),
      ("rho_one", dict(rho=1.0), "rho=1.0"),
      ("rho_big", dict(rho=1.5), "rho=1.5"),
      ("momentum", dict(momentum=0.0), "momentum=0.0"),
      ("loss", dict(loss="hinge"), "loss='hinge'"),
      ("epsilon", dict(epsilon=-1.0), "epsilon"),
      ("seed", dict(seed=-1), "seed=-1"),
  )
  def test_apgd_value_errors(self, kwargs, message):
    kwargs = {"epsilon": 0.1, **kwargs}
    with self.assertRaisesRegex(ValueError, message):
      apgd_attack(self.f, self.x, **kwargs)

  def test_apgd_type_errors(self):
    with self.assertRaisesRegex(TypeError, "loss"):
      apgd_attack(self.f, self.x, epsilon=0.1, loss=3)
    with self.assertRaisesRegex(TypeError, "x"):
      apgd_attack(self.f, tf.zeros([2, 3], tf.int32), epsilon=0.1)

  @parameterized.named_parameters(
      ("d", dict(num_targets=4), "num_targets=4"),      # d = 4 classes: at most 3
      ("zero", dict(num_targets=0), "num_targets=0"),
      ("p", dict(p=1.5), "p=1.5"),
      ("rho", dict(rho=2.0), "rho=2.0"),
      ("num_steps", dict(num_steps=0), "num_steps=0"),
  )
  def test_targeted_value_errors(self, kwargs, message):
    kwargs = {"epsilon": 0.1, **kwargs}
    with self.assertRaisesRegex(ValueError, message):
      apgd_targeted_attack(self.f, self.x, **kwargs)

  def test_targeted_needs_four_classes(self):
    f3 = relu_mlp_fn(0, n=3, width=4, d=3)
    with self.assertRaisesRegex(ValueError, "at least 4 classes"):
      apgd_targeted_attack(f3, self.x, epsilon=0.1, num_targets=2)

  def test_dlr_needs_three_classes(self):
    f2 = relu_mlp_fn(0, n=3, width=4, d=2)
    with self.assertRaisesRegex(ValueError, "at least 3 classes"):
      apgd_attack(f2, self.x, epsilon=0.1, loss="dlr")


if __name__ == "__main__":
  tf.test.main()
