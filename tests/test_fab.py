"""Tests for keras_opnorm.attacks.fab: the FAB projection and FAB / FAB-T.

Expected values come from closed forms, scipy's LP solver and numpy
enumerations (derivations next to each test), never from the code's own
earlier output:

* without a box the lp projection onto a hyperplane is known in closed form;
* with a box, p in {1, inf} is a linear program (scipy.optimize.linprog) and
  p = 2 a quadratic program solved by enumerating the saturated coordinates;
* for a linear classifier the minimal lp adversarial distance is
  min_{j != y} margin_j / ||w_y - w_j||_{p*}, which FAB and FAB-T must reach.
"""

import itertools

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_opnorm.attacks.fab import fab_attack
from keras_opnorm.attacks.fab import project_halfspace_box
from opnorm_testlib import np_dual
from opnorm_testlib import np_lp_norm
from opnorm_testlib import relu_mlp

INF = float("inf")
P_VALUES = (1.0, 2.0, INF)

try:
  from scipy import optimize  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  optimize = None


# ----------------------------------------------------------------------------
# numpy references.
# ----------------------------------------------------------------------------


def np_linear(w, b):
  """f(x) = x W^T + b in the dtype of x; W of shape [d, n]."""
  return lambda x: tf.matmul(x, tf.constant(w.T, x.dtype)) + tf.constant(b, x.dtype)


def exact_min_distance(x, y, w, b, p):
  """min_{j != y} (z_y - z_j) / ||w_y - w_j||_{p*}: the distance to the boundary.

  Hoelder: moving x by delta changes z_y - z_j by <w_y - w_j, delta>, at most
  ||w_y - w_j||_{p*} ||delta||_p in size, with equality for
  delta = -t s_p(w_y - w_j); so class j wins first at ||delta||_p = that ratio.
  """
  z = x @ w.T + b
  best = np.full(len(x), INF)
  for j in range(w.shape[0]):
    if np.all(y == j):
      continue
    dw = w[y] - w[j]
    norm = np.linalg.norm(dw, ord=np_dual(p), axis=1)
    dist = (z[np.arange(len(x)), y] - z[:, j]) / np.where(y == j, 1.0, norm)
    best = np.where(y == j, best, np.minimum(best, dist))
  return best


def lp_projection_norm(x0, w, b, p, lo, hi):
  """min ||d||_p s.t. <w, x0 + d> + b >= 0, lo <= x0 + d <= hi, by scipy's LP.

  p = inf: variables (d, s), minimise s with -s <= d_i <= s.
  p = 1:   variables (d, u), minimise sum u with -u_i <= d_i <= u_i.
  Returns None when the constraints are infeasible.
  """
  n = len(x0)
  eye = np.eye(n)
  if p == INF:
    cost = np.r_[np.zeros(n), 1.0]
    a_ub = np.r_[np.c_[eye, -np.ones(n)], np.c_[-eye, -np.ones(n)], [np.r_[-w, 0.0]]]
    bounds = [(lo[i] - x0[i], hi[i] - x0[i]) for i in range(n)] + [(0, None)]
  else:
    cost = np.r_[np.zeros(n), np.ones(n)]
    a_ub = np.r_[np.c_[eye, -eye], np.c_[-eye, -eye], [np.r_[-w, np.zeros(n)]]]
    bounds = [(lo[i] - x0[i], hi[i] - x0[i]) for i in range(n)] + [(0, None)] * n
  b_ub = np.r_[np.zeros(2 * n), w @ x0 + b]
  res = optimize.linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
  return res.fun if res.status == 0 else None


def l2_projection_norm(x0, w, b, lo, hi):
  """min ||d||_2 under the same constraints, by enumerating active sets.

  Each coordinate moves by sign(w_i) t_i, 0 <= t_i <= cap_i (the room to the
  face in that direction) and sum |w_i| t_i = r = -(<w, x0> + b). The KKT
  conditions of the QP give t_i = lam |w_i| off the set S of coordinates at
  their caps. For every subset S: t_S = cap_S, lam from the constraint; keep
  the candidates with 0 <= t <= cap. The optimum is one of them (n <= 4:
  at most 16 subsets). Returns None if even all caps give less than r.
  """
  r = -(w @ x0 + b)
  if r <= 0:
    return 0.0
  cap = np.where(w > 0, hi - x0, x0 - lo)
  aw = np.abs(w)
  if aw @ cap < r:
    return None
  best = INF
  for size in range(len(w) + 1):
    for s in itertools.combinations(range(len(w)), size):
      sat = np.zeros(len(w), bool)
      sat[list(s)] = True
      rest = (~sat) & (aw > 0)
      need = r - aw[sat] @ cap[sat]
      if not rest.any():
        t = np.where(sat, cap, 0.0)
        if abs(need) > 1e-12:
          continue
      else:
        lam = need / (aw[rest] ** 2).sum()
        t = np.where(sat, cap, np.where(rest, lam * aw, 0.0))
        if lam < 0 or np.any(t > cap + 1e-12):
          continue
      best = min(best, np.linalg.norm(t))
  return best


def rng_problem(rng, batch, n, box):
  """Random x0 in [0, 1]^n, normals w and offsets b with r = -(<w,x0>+b) > 0."""
  x0 = rng.uniform(0.1, 0.9, size=(batch, n)) if box else rng.normal(size=(batch, n))
  w = rng.normal(size=(batch, n))
  r = rng.uniform(0.05, 1.5 if box else 2.0, size=batch)
  b = -(w * x0).sum(axis=1) - r
  return x0, w, b, r


# ----------------------------------------------------------------------------
# The projection.
# ----------------------------------------------------------------------------


class ProjectHalfspaceBoxTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*P_VALUES)
  def test_closed_form_without_box(self, p):
    # r = -(<w, x0> + b) > 0 is the missing increase of <w, z> + b. The
    # minimiser of ||d||_p with <w, d> = r (Hoelder's equality case):
    #   inf: d = r sign(w) / ||w||_1       (every coordinate moves equally)
    #   2:   d = r w / ||w||_2^2           (along the normal)
    #   1:   d = r sign(w_i) e_i / |w_i|,  i = argmax |w_i|   (one coordinate)
    # and ||d||_p = r / ||w||_{p*} in each case.
    rng = np.random.default_rng(0)
    x0, w, b, r = rng_problem(rng, batch=6, n=7, box=False)
    d = project_halfspace_box(tf.constant(x0), tf.constant(w), tf.constant(b), p).numpy()
    if p == INF:
      expected = r[:, None] * np.sign(w) / np.abs(w).sum(axis=1, keepdims=True)
    elif p == 2.0:
      expected = r[:, None] * w / (w ** 2).sum(axis=1, keepdims=True)
    else:
      i = np.argmax(np.abs(w), axis=1)
      expected = np.zeros_like(w)
      expected[np.arange(len(w)), i] = r / w[np.arange(len(w)), i]
    self.assertAllClose(d, expected, rtol=1e-12, atol=1e-12)
    self.assertAllClose(np_lp_norm(d, p), r / np.linalg.norm(w, ord=np_dual(p), axis=1),
                        rtol=1e-12)
    self.assertAllClose((w * (x0 + d)).sum(axis=1) + b, np.zeros(len(w)), atol=1e-12)

  @parameterized.parameters(*P_VALUES)
  def test_inside_halfspace_is_zero(self, p):
    # r <= 0: x0 already satisfies <w, x0> + b >= 0, the projection is x0.
    rng = np.random.default_rng(1)
    x0, w, b, r = rng_problem(rng, batch=4, n=5, box=True)
    b_in = b + 2 * r  # <w, x0> + b_in = r > 0
    d = project_halfspace_box(x0, w, b_in, p, 0.0, 1.0).numpy()
    self.assertAllEqual(d, np.zeros_like(d))

  @parameterized.product(p=(1.0, INF), n=(2, 3, 4))
  def test_box_against_linear_program(self, p, n):
    if optimize is None:
      self.skipTest("scipy is not installed")
    rng = np.random.default_rng(10 + n)
    x0, w, b, _ = rng_problem(rng, batch=40, n=n, box=True)
    lo, hi = np.zeros(n), np.ones(n)
    d = project_halfspace_box(x0, w, b, p, 0.0, 1.0).numpy()
    z = x0 + d
    self.assertTrue(np.all(z >= -1e-12) and np.all(z <= 1 + 1e-12))
    feasible = 0
    for k in range(len(x0)):
      best = lp_projection_norm(x0[k], w[k], b[k], p, lo, hi)
      if best is None:
        # Infeasible: the box point that maximises <w, z> (the vertex
        # hi where w > 0, lo where w < 0).
        self.assertAllClose(z[k], np.where(w[k] > 0, 1.0, 0.0), atol=1e-12)
        continue
      feasible += 1
      self.assertAllClose(np_lp_norm(d[k:k + 1], p)[0], best, rtol=1e-7, atol=1e-10)
      self.assertGreaterEqual(w[k] @ z[k] + b[k], -1e-10)
    self.assertGreater(feasible, 10)  # Both cases occur.
    self.assertLess(feasible, len(x0))

  @parameterized.parameters(2, 3, 4)
  def test_box_l2_against_active_set_enumeration(self, n):
    rng = np.random.default_rng(20 + n)
    x0, w, b, _ = rng_problem(rng, batch=40, n=n, box=True)
    lo, hi = np.full(n, 0.0), np.full(n, 1.0)
    d = project_halfspace_box(x0, w, b, 2, lo, hi).numpy()
    z = x0 + d
    self.assertTrue(np.all(z >= -1e-12) and np.all(z <= 1 + 1e-12))
    feasible = 0
    for k in range(len(x0)):
      best = l2_projection_norm(x0[k], w[k], b[k], lo, hi)
      if best is None:
        self.assertAllClose(z[k], np.where(w[k] > 0, 1.0, 0.0), atol=1e-12)
        continue
      feasible += 1
      self.assertAllClose(np.linalg.norm(d[k]), best, rtol=1e-9)
      self.assertAllClose(w[k] @ z[k] + b[k], 0.0, atol=1e-10)
    self.assertGreater(feasible, 10)

  @parameterized.parameters(*P_VALUES)
  def test_images_and_tensor_bounds(self, p):
    # Per-coordinate bounds broadcast to images [b, h, w, c]; the result is the
    # projection of the flattened problem (the geometry ignores the shape).
    rng = np.random.default_rng(3)
    x0, w, b, _ = rng_problem(rng, batch=3, n=8, box=True)
    lo = np.full((1, 2, 2, 2), -0.5)
    hi = rng.uniform(1.0, 2.0, size=(1, 2, 2, 2))
    img = project_halfspace_box(x0.reshape(3, 2, 2, 2), w.reshape(3, 2, 2, 2), b, p,
                                lo, hi).numpy()
    flat = project_halfspace_box(x0, w, b, p, lo.reshape(1, 8), hi.reshape(1, 8)).numpy()
    self.assertEqual(img.shape, (3, 2, 2, 2))
    self.assertAllClose(img.reshape(3, 8), flat, rtol=1e-12, atol=1e-12)

  def test_float32_and_zero_normal_coordinates(self):
    # Coordinates with w_i = 0 cannot help and stay; the rest is the
    # closed form of the reduced problem: r sign(w) / ||w||_1 for p = inf.
    x0 = tf.zeros([1, 3])
    w = tf.constant([[1.0, 0.0, -1.0]])
    d = project_halfspace_box(x0, w, tf.constant([-1.0]), INF).numpy()
    self.assertEqual(d.dtype, np.float32)
    self.assertAllClose(d, [[0.5, 0.0, -0.5]])

  def test_bad_p(self):
    with self.assertRaisesRegex(ValueError, "p=3.0"):
      project_halfspace_box(tf.zeros([1, 2]), tf.ones([1, 2]), tf.ones([1]), 3)


# ----------------------------------------------------------------------------
# The attack.
# ----------------------------------------------------------------------------


def run_fab(f, x, **kwargs):
  return tf.function(lambda z: fab_attack(f, z, **kwargs))(tf.constant(x))


class FabAttackTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(p=P_VALUES, targeted=(False, True), shape=((4, 5), (10, 20)))
  def test_linear_model_minimal_distance(self, p, targeted, shape):
    # Linear f, no box: the exact minimal lp adversarial distance is the
    # closed form of `exact_min_distance`. FAB-T against all d - 1 classes
    # (num_targets = d - 1) must reach it as well as the untargeted FAB.
    d, n = shape
    rng = np.random.default_rng(d + n)
    w, b = rng.normal(size=(d, n)), rng.normal(size=d)
    x = rng.normal(size=(12, n)).astype(np.float32)
    y = (x @ w.T + b).argmax(axis=1)
    f = np_linear(w, b)
    x_adv = run_fab(f, x, p=p, targeted=targeted, num_targets=d - 1).numpy()
    self.assertTrue(np.all(f(tf.constant(x_adv)).numpy().argmax(axis=1) != y))
    exact = exact_min_distance(x.astype(np.float64), y, w, b, p)
    found = np_lp_norm(x_adv - x, p)
    # Measured: max relative error 2e-5 to 1.5e-4 (the final search probes
    # 1e-4 past the boundary); never below the exact distance.
    self.assertAllLessEqual(np.abs(found - exact) / exact, 1e-3)
    self.assertTrue(np.all(found >= exact * (1 - 1e-5)))

  @parameterized.parameters(*P_VALUES)
  def test_linear_model_with_epsilon_stops_within_it(self, p):
    # With epsilon, examples whose exact distance is below epsilon get a
    # point within epsilon (the AutoAttack use), still the minimal one up to
    # 1e-3; the others get their (larger) minimal point anyway.
    rng = np.random.default_rng(5)
    w, b = rng.normal(size=(4, 6)), rng.normal(size=4)
    x = rng.normal(size=(10, 6)).astype(np.float32)
    y = (x @ w.T + b).argmax(axis=1)
    exact = exact_min_distance(x.astype(np.float64), y, w, b, p)
    eps = float(np.median(exact))
    x_adv = run_fab(np_linear(w, b), x, p=p, targeted=True, num_targets=3, epsilon=eps,
                    num_restarts=2, seed=1).numpy()
    found = np_lp_norm(x_adv - x, p)
    self.assertTrue(np.all(found[exact < eps * 0.99] <= eps))
    self.assertAllLessEqual(np.abs(found - exact) / exact, 1e-3)

  def test_epsilon_stops_early(self):
    # Eagerly, tf.while_loop runs its body in Python, so counting the calls
    # of f counts the steps. A linear model with eta = 1.05 is broken at the
    # first step (x + 1.05 d lies past the boundary); with an epsilon that
    # holds every distance the attack stops there: 1 clean pass + 2 passes of
    # the first step + the final search (1 + 10) = 14 calls. Without epsilon
    # all 50 steps run: more than 100 calls.
    rng = np.random.default_rng(11)
    linear = np_linear(rng.normal(size=(3, 4)), rng.normal(size=3))
    calls = []

    def f(x):
      calls.append(1)
      return linear(x)

    x = rng.normal(size=(5, 4)).astype(np.float32)
    tf.config.run_functions_eagerly(True)  # Uncompiled, so each step calls f.
    try:
      fab_attack(f, x, p=2, targeted=False, num_steps=50, epsilon=100.0)
      self.assertLen(calls, 14)
      del calls[:]
      fab_attack(f, x, p=2, targeted=False, num_steps=50)
      self.assertGreater(len(calls), 100)
    finally:
      tf.config.run_functions_eagerly(False)

  def test_already_misclassified_and_labels(self):
    # A wrong label makes the clean point adversarial at distance 0: it is
    # returned unchanged; one-hot labels mean the same as integer labels.
    rng = np.random.default_rng(6)
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    x = rng.normal(size=(4, 4)).astype(np.float32)
    y = (x @ w.T + b).argmax(axis=1)
    y_wrong = y.copy()
    y_wrong[0] = (y[0] + 1) % 3
    f = np_linear(w, b)
    out = fab_attack(f, x, y_wrong, targeted=False, num_steps=5).numpy()
    self.assertAllEqual(out[0], x[0])
    self.assertTrue(np.all(out[1:] != x[1:]))
    hot = fab_attack(f, x, tf.one_hot(y_wrong, 3), targeted=False, num_steps=5).numpy()
    self.assertAllEqual(out, hot)

  @parameterized.product(p=P_VALUES, targeted=(False, True))
  def test_relu_mlp_adversarial_and_in_clip(self, p, targeted):
    model = relu_mlp(n=6, d=4, width=16, seed=2)
    x = np.random.default_rng(7).uniform(0.0, 1.0, size=(8, 6)).astype(np.float32)
    y = model(x).numpy().argmax(axis=1)
    x_adv = run_fab(model, x, p=p, targeted=targeted, num_targets=3, num_steps=30,
                    clip=(0.0, 1.0)).numpy()
    self.assertTrue(np.all(x_adv >= 0.0) and np.all(x_adv <= 1.0))
    moved = np.any(x_adv != x, axis=1)
    self.assertGreaterEqual(moved.sum(), 6)
    pred = model(x_adv).numpy().argmax(axis=1)
    self.assertTrue(np.all(pred[moved] != y[moved]))

  def test_image_input_shape_and_dtype(self):
    # A rank-4 float64 batch through a Keras model: same shape and dtype back.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3, 3, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(4, dtype="float64")])
    x = np.random.default_rng(8).uniform(0, 1, size=(3, 3, 3, 1))
    x_adv = fab_attack(model, x, p=2, targeted=False, num_steps=10, clip=(0.0, 1.0))
    self.assertEqual(x_adv.dtype, tf.float64)
    self.assertEqual(x_adv.shape, (3, 3, 3, 1))
    self.assertTrue(np.all(model(x_adv).numpy().argmax(1) != model(x).numpy().argmax(1)))

  def test_seed_reproducible(self):
    # Random restarts drawn from the seed only: two runs agree exactly, and
    # the compiled and eager runs agree too.
    model = relu_mlp(n=5, d=3, width=8, seed=3)
    x = np.random.default_rng(9).uniform(0, 1, size=(4, 5)).astype(np.float32)
    kwargs = dict(p=2, targeted=False, num_steps=8, num_restarts=3, epsilon=0.5,
                  clip=(0.0, 1.0), seed=123)
    first = run_fab(model, x, **kwargs).numpy()
    self.assertAllEqual(first, run_fab(model, x, **kwargs).numpy())
    self.assertAllClose(first, fab_attack(model, x, **kwargs).numpy(), atol=1e-6)

  def test_compiled_no_retracing(self):
    model = relu_mlp(n=5, d=4, width=8, seed=4)
    traces = []

    @tf.function
    def attack(x, y):
      traces.append(1)
      return fab_attack(model, x, y, p=INF, num_targets=3, num_steps=3, num_restarts=2,
                        epsilon=0.2, clip=(0.0, 1.0), seed=0)

    for k in range(3):
      x = np.random.default_rng(k).uniform(0, 1, size=(4, 5)).astype(np.float32)
      attack(tf.constant(x), tf.constant(np.arange(4) % 4))
    self.assertLen(traces, 1)

  @parameterized.named_parameters(
      ("p", dict(p=3), ValueError, "p=3.0"),
      ("p_zero", dict(p=0.5), ValueError, "p=0.5"),
      ("num_targets_high", dict(num_targets=4), ValueError, "num_targets=4"),
      ("num_targets_zero", dict(num_targets=0), ValueError, "num_targets=0"),
      ("num_steps", dict(num_steps=0), ValueError, "num_steps=0"),
      ("num_restarts", dict(num_restarts=-1), ValueError, "num_restarts=-1"),
      ("alpha_max", dict(alpha_max=1.5), ValueError, "alpha_max=1.5"),
      ("eta", dict(eta=0.5), ValueError, "eta=0.5"),
      ("beta", dict(beta=0.0), ValueError, "beta=0.0"),
      ("epsilon", dict(epsilon=-1.0), ValueError, "epsilon=-1.0"),
      ("clip", dict(clip=(1.0, 0.0)), ValueError, "clip"),
      ("seed", dict(seed=-2), ValueError, "seed=-2"),
      ("search", dict(num_search_steps=-1), ValueError, "num_search_steps=-1"),
  )
  def test_bad_arguments(self, kwargs, error, message):
    f = np_linear(np.eye(4, 3), np.zeros(4))  # d = 4 classes
    with self.assertRaisesRegex(error, message):
      fab_attack(f, tf.zeros([2, 3]), **kwargs)

  def test_bad_inputs(self):
    f = np_linear(np.eye(4, 3), np.zeros(4))
    with self.assertRaisesRegex(TypeError, "floating-point"):
      fab_attack(f, tf.zeros([2, 3], tf.int32))
    with self.assertRaisesRegex(ValueError, "batch size"):
      fab_attack(f, tf.zeros([2, 3]), tf.constant([0, 1, 2]))
    with self.assertRaisesRegex(TypeError, "callable"):
      fab_attack(None, tf.zeros([2, 3]))


if __name__ == "__main__":
  pytest.main([__file__])
