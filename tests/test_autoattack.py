"""Tests for evaluation.autoattack: the cascade against closed forms on linear models.

Closed form (linear model ``f(x) = x W + b``, column ``w_j`` of ``W``): the
minimal lp distance from ``x`` (correctly classified as ``y``) to the region
where class ``j`` beats ``y`` is the distance to the hyperplane
``(w_y - w_j) . x' + b_y - b_j = 0``, i.e. (Hoelder, with the dual exponent
``p* = p / (p - 1)``)::

  dist_j(x) = ((w_y - w_j) . x + b_y - b_j) / ||w_y - w_j||_{p*},
  dist(x)   = min_{j != y} dist_j(x),

and without clipping the exact robust accuracy at eps is the share of
correctly classified points with ``dist(x) > eps``. The data below leave out
points whose distance is within 20% of eps, where a finite-step attack could
stop just short of the boundary: on the others the cascade must be exact.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from keras_opnorm.evaluation import autoattack
from keras_opnorm.evaluation.autoattack import auto_attack

_INF = float("inf")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HAS_SQUARE = importlib.util.find_spec("keras_opnorm.attacks.square") is not None


def _dual(p):
  return 1.0 if math.isinf(p) else (_INF if p == 1.0 else p / (p - 1.0))


def _exact_distances(w, b, x, y, p):
  """The closed form above, in float64: [n] distances (0 where misclassified)."""
  z = x.astype(np.float64) @ w + b
  q = _dual(p)
  out = np.empty(len(x))
  for i, (zi, yi) in enumerate(zip(z, y)):
    if np.argmax(zi) != yi:
      out[i] = 0.0
      continue
    dists = [(zi[yi] - zi[j]) / np.linalg.norm(w[:, yi] - w[:, j], ord=q)
             for j in range(w.shape[1]) if j != yi]
    out[i] = min(dists)
  return out


def _linear_problem(p, eps, n=40, dim=6, classes=4, seed=0, num_flipped=3):
  """A linear model and points none of which lies within 20% of eps of the boundary."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(dim, classes))
  b = rng.normal(size=classes)
  x, kept = [], 0
  while kept < n:
    xi = rng.normal(size=(1, dim))
    yi = np.argmax(xi @ w + b, axis=1)
    d = _exact_distances(w, b, xi, yi, p)[0]
    if 0.8 * eps < d < 1.25 * eps:
      continue
    x.append(xi[0])
    kept += 1
  x = np.asarray(x, np.float32)
  y = np.argmax(x.astype(np.float64) @ w + b, axis=1).astype(np.int32)
  y[:num_flipped] = (y[:num_flipped] + 1) % classes  # misclassified clean
  wt, bt = tf.constant(w, tf.float32), tf.constant(b, tf.float32)
  f = lambda t: tf.matmul(t, wt) + bt
  return f, x, y, w, b


class LinearExactnessTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(_INF, 2.0, 1.0)
  def test_fast_cascade_equals_closed_form(self, p):
    eps = {2.0: 0.5, _INF: 0.25, 1.0: 0.8}[p]
    f, x, y, w, b = _linear_problem(p, eps)
    dist = _exact_distances(w, b, x, y, p)
    correct = np.argmax(x.astype(np.float64) @ w + b, axis=1) == y
    exact_robust = correct & (dist > eps)
    self.assertTrue(0 < exact_robust.sum() < correct.sum())  # a non-trivial case
    r = auto_attack(f, x, y, epsilon=eps, p=p, version="fast", batch_size=16, verbose=0)
    self.assertEqual(r.attacks, ["apgd-ce", "apgd-t"])
    self.assertAllClose(r.clean_accuracy, correct.mean())
    self.assertAllClose(r.robust_accuracy, exact_robust.mean())
    broken_by = np.asarray(r.broken_by)
    self.assertAllEqual(broken_by == "clean", ~correct)
    self.assertAllEqual(broken_by == "", exact_robust)
    self.assertAllEqual(np.isin(broken_by, ["apgd-ce", "apgd-t"]), correct & ~exact_robust)
    # Non-increasing by stage, ending at the robust accuracy.
    acc = r.robust_accuracy_by_attack
    self.assertLessEqual(acc[1], acc[0])
    self.assertLessEqual(acc[0], r.clean_accuracy)
    self.assertEqual(acc[-1], r.robust_accuracy)

  @parameterized.parameters(_INF, 2.0)
  def test_fab_t_alone_equals_closed_form(self, p):
    # FAB-T is a minimum-norm attack: on a linear model its target runs reach
    # each boundary exactly, so the closest one (dist <= eps) is found.
    eps = {2.0: 0.5, _INF: 0.25}[p]
    f, x, y, w, b = _linear_problem(p, eps, n=24)
    dist = _exact_distances(w, b, x, y, p)
    correct = np.argmax(x.astype(np.float64) @ w + b, axis=1) == y
    r = auto_attack(f, x, y, epsilon=eps, p=p, version="custom",
                    attacks=[("fab-t", {"num_targets": 3, "num_steps": 20})], verbose=0)
    self.assertAllClose(r.robust_accuracy, (correct & (dist > eps)).mean())

  def test_pgd_and_fmn_registry_attacks_are_sound(self):
    # Upper bounds: never below the exact robust accuracy (verification), and
    # on a linear l2 problem both find every point within 0.8 eps.
    eps, p = 0.5, 2.0
    f, x, y, w, b = _linear_problem(p, eps, n=24)
    dist = _exact_distances(w, b, x, y, p)
    correct = np.argmax(x.astype(np.float64) @ w + b, axis=1) == y
    r = auto_attack(f, x, y, epsilon=eps, p=p, version="custom", attacks=["pgd", "fmn"],
                    verbose=0)
    self.assertAllClose(r.robust_accuracy, (correct & (dist > eps)).mean())
    self.assertEqual(r.budgets, [{"num_steps": 20}, {"num_steps": 100}])


class CascadeTest(tf.test.TestCase, parameterized.TestCase):

  def test_only_still_robust_points_are_attacked(self):
    eps, p = 0.25, _INF
    f, x, y, w, b = _linear_problem(p, eps, n=30)
    received = {"first": [], "second": []}

    def recorder(name, breaks):
      def attack(fn, xb, yb, *, epsilon, p, clip, seed):
        del clip, seed, p
        def record(a):
          received[name].append(np.array(a))
          return np.int32(0)
        dep = tf.numpy_function(record, [xb], tf.int32)
        with tf.control_dependencies([dep]):
          xb = tf.identity(xb)
        if not breaks:
          return xb
        # l-inf step of eps against the closest boundary's normal: breaks
        # exactly the points with dist <= eps (the closed form).
        logits = fn(xb)
        onehot = tf.one_hot(yb, tf.shape(logits)[1])
        margins = tf.reduce_sum(logits * onehot, 1, keepdims=True) - logits
        wt = tf.constant(w, tf.float32)
        normals = tf.reduce_sum(tf.transpose(wt)[None] * onehot[:, :, None], 1)[:, None] - (
            tf.transpose(wt)[None])  # [b, d, n]: w_y - w_j
        dist = margins / (tf.reduce_sum(tf.abs(normals), -1) + 1e-30) + 1e9 * onehot
        j = tf.argmin(dist, axis=1)
        step = tf.gather(normals, j, batch_dims=1)
        return xb - epsilon * tf.sign(step)
      return attack

    r = auto_attack(f, x, y, epsilon=eps, p=p, version="custom", batch_size=4, verbose=0,
                    attacks=[("first", recorder("first", True)),
                             ("second", recorder("second", False))])
    dist = _exact_distances(w, b, x, y, p)
    correct = np.argmax(x.astype(np.float64) @ w + b, axis=1) == y
    after_first = correct & (dist > eps)
    for name, expected in (("first", correct), ("second", after_first)):
      batches = received[name]
      self.assertLen(batches, -(-int(expected.sum()) // 4))  # ceil(n_robust / 4) batches
      for a in batches:
        self.assertEqual(a.shape, (4, x.shape[1]))  # fixed shape (last one padded)
      rows = np.concatenate(batches)
      got = {tuple(row) for row in rows}
      self.assertEqual(got, {tuple(row) for row in x[expected]})
    self.assertAllClose(r.robust_accuracy, after_first.mean())
    self.assertEqual(set(r.broken_by), {"clean", "first", ""})

  def test_broken_points_are_verified_in_ball_and_clip(self):
    # An attack that returns points outside the ball or the box that would
    # flip the label: none of them may count. The other attack stays inside.
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 0.9, size=(12, 3)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32)
    f = lambda t: tf.stack([0.5 - t[:, 0], t[:, 0] - 0.5], axis=1)  # class 1 iff x_0 > 0.5
    eps = 0.2

    def too_far(fn, xb, yb, *, epsilon, p, clip, seed):
      del fn, p, clip, seed
      direction = tf.cast(1 - 2 * yb, tf.float32)[:, None] * tf.constant([[1.0, 0.0, 0.0]])
      return xb + 1.5 * epsilon * direction  # flips every point, out of the ball

    def out_of_box(fn, xb, yb, *, epsilon, p, clip, seed):
      del fn, epsilon, p, clip, seed
      # Flips every point within eps only through coordinates far outside [0, 1].
      shift = tf.constant([[0.0, 5.0, 0.0]])
      x0 = tf.where(yb[:, None] > 0, tf.zeros_like(xb[:, :1]), tf.ones_like(xb[:, :1]))
      return tf.concat([x0, xb[:, 1:2] + shift[:, 1:2], xb[:, 2:]], axis=1)

    r = auto_attack(f, x, y, epsilon=eps, p=_INF, version="custom", clip=(0.0, 1.0),
                    verbose=0, attacks=[("too_far", too_far), ("out_of_box", out_of_box),
                                        "apgd-ce"])
    self.assertEqual(r.robust_accuracy_by_attack[:2], [1.0, 1.0])
    # apgd-ce breaks exactly the points with |x_0 - 0.5| <= eps (l-inf, 1-d boundary).
    self.assertAllClose(r.robust_accuracy, np.mean(np.abs(x[:, 0] - 0.5) > eps))
    x_adv = r.x_adv
    for i, who in enumerate(r.broken_by):
      if who:
        self.assertEqual(who, "apgd-ce")
        self.assertLessEqual(np.max(np.abs(x_adv[i] - x[i])), eps * (1 + 1e-5))
        self.assertTrue(np.all((x_adv[i] >= 0) & (x_adv[i] <= 1)))
        self.assertNotEqual(int(np.argmax(f(x_adv[i:i + 1]).numpy())), y[i])
    # margins: f_y - f_other = +-(2 x_0 - 1) at the kept point, <= 0 where broken.
    expected = np.where(y == 1, 2 * x_adv[:, 0] - 1, 1 - 2 * x_adv[:, 0])
    self.assertAllClose(r.margins, expected, atol=1e-6)
    self.assertTrue(all(m <= 0 for m, who in zip(r.margins, r.broken_by) if who))

  def test_one_trace_per_stage_across_batches(self):
    traces = []

    def noise(fn, xb, yb, *, epsilon, p, clip, seed):
      del fn, yb, p, clip
      traces.append(1)  # Python side effect: runs once per trace
      return xb + epsilon * tf.sign(tf.random.stateless_uniform(tf.shape(xb), seed, -1, 1))

    f, x, y, _, _ = _linear_problem(_INF, 0.1, n=10)
    auto_attack(f, x, y, epsilon=0.1, version="custom", attacks=[("noise", noise)],
                batch_size=3, verbose=0)  # 3 + 3 + 3 + 1 (padded): 4 batches
    self.assertLen(traces, 1)

  def test_seed_reproducibility(self):
    f, x, y, _, _ = _linear_problem(2.0, 0.5, n=16)
    kw = dict(epsilon=0.5, p=2.0, version="fast", batch_size=8, verbose=0)
    a = auto_attack(f, x, y, seed=3, **kw)
    b = auto_attack(f, x, y, seed=3, **kw)
    self.assertAllEqual(a.x_adv, b.x_adv)
    self.assertEqual(a.margins, b.margins)
    self.assertEqual(a.broken_by, b.broken_by)
    # A random attack differs with the seed: the draws are per seed.
    def noise(fn, xb, yb, *, epsilon, p, clip, seed):
      del fn, yb, p, clip
      return xb + 0.01 * epsilon * tf.random.stateless_uniform(tf.shape(xb), seed, -1, 1)
    kw = dict(epsilon=0.5, version="custom", attacks=[("noise", noise)], verbose=0)
    c1 = auto_attack(f, x, y, seed=1, **kw)
    self.assertAllEqual(c1.x_adv, auto_attack(f, x, y, seed=1, **kw).x_adv)
    self.assertNotAllClose(c1.x_adv, auto_attack(f, x, y, seed=2, **kw).x_adv)

  def test_dataset_and_arrays_give_the_same_result(self):
    f, x, y, _, _ = _linear_problem(_INF, 0.25, n=22)
    kw = dict(epsilon=0.25, version="fast", batch_size=8, verbose=0)
    a = auto_attack(f, x, y, **kw)
    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, 4))).batch(5)
    d = auto_attack(f, ds, **kw)
    self.assertAllEqual(a.x_adv, d.x_adv)
    self.assertEqual(a.broken_by, d.broken_by)
    self.assertEqual(a.margins, d.margins)
    self.assertEqual(a.robust_accuracy_by_attack, d.robust_accuracy_by_attack)

  def test_result_to_dict(self):
    f, x, y, _, _ = _linear_problem(_INF, 0.25, n=6)
    r = auto_attack(f, x, y, epsilon=0.25, version="fast", verbose=0)
    d = r.to_dict()
    self.assertNotIn("x_adv", d)
    self.assertLen(d["broken_by"], 6)
    json.dumps(d)
    self.assertNotIn("margins", r.to_dict(per_example=False))
    full = r.to_dict(include_x_adv=True)
    self.assertAllClose(np.asarray(full["x_adv"]), r.x_adv)
    back = autoattack.AutoAttackResult.from_dict(json.loads(json.dumps(full)))
    self.assertAllClose(back.x_adv, r.x_adv)
    self.assertEqual(back.robust_accuracy, r.robust_accuracy)
    self.assertEqual(back.p, _INF)
    self.assertEqual(r.accuracy_after("apgd-t"), r.robust_accuracy)
    self.assertEqual(r.seed, 0)
    self.assertGreater(r.run_time_s, 0)


class BadInputTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.f, self.x, self.y, _, _ = _linear_problem(_INF, 0.25, n=4)

  def test_unknown_version(self):
    with self.assertRaisesRegex(ValueError, r"`version`.*version='strong'"):
      auto_attack(self.f, self.x, self.y, epsilon=0.1, version="strong", verbose=0)

  def test_unknown_attack_name(self):
    with self.assertRaisesRegex(ValueError, r"Unknown attack name.*'apgd-xx'"):
      auto_attack(self.f, self.x, self.y, epsilon=0.1, version="custom",
                  attacks=["apgd-ce", "apgd-xx"], verbose=0)

  def test_unknown_attack_option(self):
    with self.assertRaisesRegex(ValueError, r"'apgd-ce'.*num_queries"):
      auto_attack(self.f, self.x, self.y, epsilon=0.1, version="custom",
                  attacks=[("apgd-ce", {"num_queries": 3})], verbose=0)

  def test_attacks_with_standard_version(self):
    with self.assertRaisesRegex(ValueError, r"`attacks`.*version='custom'.*version='standard'"):
      auto_attack(self.f, self.x, self.y, epsilon=0.1, attacks=["apgd-ce"], verbose=0)

  def test_custom_without_attacks(self):
    with self.assertRaisesRegex(ValueError, r"`attacks` must be a non-empty list"):
      auto_attack(self.f, self.x, self.y, epsilon=0.1, version="custom", verbose=0)

  def test_dataset_without_labels(self):
    ds = tf.data.Dataset.from_tensor_slices(self.x).batch(2)
    with self.assertRaisesRegex(ValueError, "Labels are needed"):
      auto_attack(self.f, ds, epsilon=0.1, version="fast", verbose=0)

  @parameterized.parameters(0.0, -0.1, float("nan"))
  def test_bad_epsilon(self, eps):
    with self.assertRaisesRegex(ValueError, "`epsilon`"):
      auto_attack(self.f, self.x, self.y, epsilon=eps, version="fast", verbose=0)

  def test_num_targets_not_below_classes(self):
    with self.assertRaisesRegex(ValueError, r"`num_targets` of attack 'apgd-t'.*num_targets=4"):
      auto_attack(self.f, self.x, self.y, epsilon=0.1, version="custom",
                  attacks=[("apgd-t", {"num_targets": 4})], verbose=0)

  def test_targeted_attack_needs_four_classes(self):
    f3 = lambda t: t[:, :3]
    with self.assertRaisesRegex(ValueError, r"'apgd-t' needs at least 4 classes"):
      auto_attack(f3, self.x, np.zeros(4, np.int32), epsilon=0.1, version="custom",
                  attacks=["apgd-t"], verbose=0)

  def test_preset_on_three_classes_leaves_apgd_t_out(self):
    f3 = lambda t: t[:, :3]
    result = auto_attack(f3, self.x, np.zeros(4, np.int32), epsilon=0.1, version="fast",
                         verbose=0)
    self.assertEqual(result.attacks, ["apgd-ce"])

  def test_square_has_no_l1(self):
    with self.assertRaisesRegex(ValueError, r"'square' supports p.*p=1.0"):
      auto_attack(self.f, self.x, self.y, epsilon=0.1, p=1, version="custom",
                  attacks=["square"], verbose=0)

  def test_attack_returning_wrong_shape(self):
    bad = lambda fn, xb, yb, **kw: xb[:, :2]
    with self.assertRaisesRegex(ValueError, r"'bad' must return x_adv shaped like x"):
      auto_attack(self.f, self.x, self.y, epsilon=0.1, version="custom",
                  attacks=[("bad", bad)], verbose=0)


class CascadeDefinitionTest(tf.test.TestCase, parameterized.TestCase):
  """The preset budgets: fra31/auto-attack, autoattack/autoattack.py, set_version."""

  @parameterized.parameters(_INF, 2.0)
  def test_standard_linf_l2(self, p):
    stages = autoattack._parse_attacks("standard", None, p)  # pylint: disable=protected-access
    self.assertEqual([s.name for s in stages], ["apgd-ce", "apgd-t", "fab-t", "square"])
    self.assertEqual([s.budget for s in stages], [
        {"num_steps": 100, "num_restarts": 1},
        {"num_targets": 9, "num_steps": 100, "num_restarts": 1},
        {"num_targets": 9, "num_steps": 100, "num_restarts": 1},
        {"num_queries": 5000, "p_init": 0.8, "num_restarts": 1}])

  def test_standard_l1(self):
    stages = autoattack._parse_attacks("standard", None, 1.0)  # pylint: disable=protected-access
    self.assertEqual([s.name for s in stages], ["apgd-ce", "apgd-t", "fab-t"])
    self.assertEqual([s.budget for s in stages], [
        {"num_steps": 100, "num_restarts": 5},
        {"num_targets": 5, "num_steps": 100, "num_restarts": 1},
        {"num_targets": 9, "num_steps": 100, "num_restarts": 1}])

  def test_fast(self):
    stages = autoattack._parse_attacks("fast", None, _INF)  # pylint: disable=protected-access
    self.assertEqual([(s.name, s.budget) for s in stages], [
        ("apgd-ce", {"num_steps": 20, "num_restarts": 1}),
        ("apgd-t", {"num_targets": 3, "num_steps": 20, "num_restarts": 1})])

  def test_preset_targets_capped_for_few_classes(self):
    stages = autoattack._parse_attacks("standard", None, 1.0)  # pylint: disable=protected-access
    for s in stages:
      autoattack._resolve(s, 4, "standard")  # pylint: disable=protected-access
    self.assertEqual([s.budget.get("num_targets") for s in stages], [None, 3, 3])


@pytest.mark.skipif(not _HAS_SQUARE, reason="keras_opnorm.attacks.square is not committed yet")
class StandardCascadeTest(tf.test.TestCase, parameterized.TestCase):

  def test_standard_runs_on_images_with_clip(self):
    # A small standard run on 4x4x1 images in [0, 1] (10 classes) with tiny
    # budgets through the registry: every stage runs and every break verifies.
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(size=(16, 10)), tf.float32)
    f = lambda t: tf.matmul(tf.reshape(t, [-1, 16]), w)
    x = rng.uniform(size=(8, 4, 4, 1)).astype(np.float32)
    y = np.argmax(f(x).numpy(), axis=1)
    r = auto_attack(f, x, y, epsilon=0.02, version="custom", clip=(0.0, 1.0), verbose=0,
                    attacks=[("apgd-ce", {"num_steps": 5}),
                             ("square", {"num_queries": 50})])
    self.assertEqual(r.attacks, ["apgd-ce", "square"])
    self.assertEqual(r.x_adv.shape, x.shape)
    self.assertTrue(np.all((r.x_adv >= 0) & (r.x_adv <= 1)))
    self.assertLessEqual(np.max(np.abs(r.x_adv - x)), 0.02 * (1 + 1e-5))

  @pytest.mark.slow
  @parameterized.parameters(_INF, 2.0)
  def test_standard_budget_equals_closed_form(self, p):
    eps = {2.0: 0.5, _INF: 0.25}[p]
    f, x, y, w, b = _linear_problem(p, eps, n=30, classes=10)
    dist = _exact_distances(w, b, x, y, p)
    correct = np.argmax(x.astype(np.float64) @ w + b, axis=1) == y
    r = auto_attack(f, x, y, epsilon=eps, p=p, verbose=0)
    self.assertEqual(r.attacks, ["apgd-ce", "apgd-t", "fab-t", "square"])
    self.assertAllClose(r.robust_accuracy, (correct & (dist > eps)).mean())


_STRATEGY_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_opnorm.evaluation.autoattack import auto_attack
    rng = np.random.default_rng(0)
    x = rng.normal(size=(18, 6)).astype(np.float32)
    w0 = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.argmax(x @ w0, axis=1).astype(np.int32)
    y[:2] = (y[:2] + 1) % 4

    def model():
      m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
      m.layers[0].set_weights([w0, np.zeros(4, np.float32)])
      return m

    kw = dict(epsilon=0.4, p=2.0, version="fast", batch_size=4, seed=5, verbose=0)
    single = auto_attack(model(), x, y, **kw)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
      m = model()
    dist = auto_attack(m, x, y, strategy=strategy, **kw)
    assert strategy.num_replicas_in_sync == 2
    assert single.broken_by == dist.broken_by, (single.broken_by, dist.broken_by)
    assert single.robust_accuracy_by_attack == dist.robust_accuracy_by_attack
    np.testing.assert_allclose(single.margins, dist.margins, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(single.x_adv, dist.x_adv, rtol=1e-6, atol=1e-6)
    assert 0 < single.robust_accuracy < single.clean_accuracy, single.robust_accuracy_by_attack
    print("OK", single.robust_accuracy_by_attack)
""")


class StrategyTest(tf.test.TestCase):

  def test_mirrored_two_logical_cpus_matches_single_device(self):
    # Logical devices must be set before TensorFlow initialises: a subprocess.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_ROOT] + [
        q for q in env.get("PYTHONPATH", "").split(os.pathsep) if q])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", _STRATEGY_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
    self.assertIn("OK", proc.stdout)
