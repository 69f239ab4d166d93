"""Tests for keras_opnorm.evaluation against closed forms on linear models.

For a linear model ``f(x) = W x + b`` the Jacobian is ``W`` at every example,
so spectra, operator norms, alignments and robust accuracies all have closed
forms (derived next to each test).
"""

import json
import math

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import evaluation


def _linear_model(w, b=None):
  """Keras model computing ``x -> W x + b`` (Dense stores the kernel as ``W^T``)."""
  d, n = w.shape
  inputs = keras.Input((n,))
  dense = keras.layers.Dense(d, use_bias=b is not None)
  model = keras.Model(inputs, dense(inputs))
  dense.set_weights([w.T.astype(np.float32)] + ([] if b is None else [b.astype(np.float32)]))
  return model


def _with_spectrum(singular, d, n, seed=0):
  """A ``d x n`` matrix ``U diag(singular) V^T`` with random orthogonal U, V."""
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.standard_normal((d, d)))
  v, _ = np.linalg.qr(rng.standard_normal((n, n)))
  s = np.zeros((d, n))
  s[np.arange(len(singular)), np.arange(len(singular))] = singular
  return (u @ s @ v.T).astype(np.float32)


def _shift_dominated():
  """``W = c 1 a^T + B`` with ``1^T B = 0`` and ``B a = 0`` (d = 3, n = 5).

  W^T W = c^2 d a a^T + B^T B (the cross terms contain 1^T B = 0), so the
  top right singular vector of W is ``a`` with sigma_1 = c sqrt(d), and its
  left singular vector is 1/sqrt(d): a pure shift of all logits. Centering
  removes it: P W = c P 1 a^T + P B = B (P 1 = 0, P B = B since 1^T B = 0).
  With B = s b_out b_in^T (rank one), P W has sigma_1 = s and v_1 = b_in.
  """
  d, n, c, s = 3, 5, 3.0, 1.0
  a = np.eye(n)[0]
  b_in = np.eye(n)[1]
  b_out = np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0)
  w = c * np.outer(np.ones(d), a) + s * np.outer(b_out, b_in)
  return w.astype(np.float32), a, b_in, c * math.sqrt(d), s


class CenterLogitsTest(tf.test.TestCase):

  def test_rows_sum_to_zero_and_jacobian_is_pw(self):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    model = _linear_model(w)
    fn = evaluation.center_logits(model)
    x = tf.constant(rng.standard_normal((2, 3)), tf.float32)
    with tf.GradientTape() as tape:
      tape.watch(x)
      out = fn(x)
    self.assertAllClose(tf.reduce_sum(out, axis=1), [0.0, 0.0], atol=1e-5)
    jac = tape.batch_jacobian(out, x)
    # J_c = P W with P = I - 11^T / d.
    p = np.eye(4) - np.ones((4, 4)) / 4.0
    self.assertAllClose(jac[0], p @ w, atol=1e-5)
    self.assertAllClose(jac[1], p @ w, atol=1e-5)

  def test_rejects_non_callable(self):
    with self.assertRaisesRegex(TypeError, "`f` must be"):
      evaluation.center_logits(3)


class ExpectedRandomAlignmentTest(parameterized.TestCase, tf.test.TestCase):

  def test_small_dimensions(self):
    # n = 2: E|cos(theta)| for theta uniform = 2/pi. n = 3: E|u_1| = 1/2
    # (Archimedes: u_1 is uniform on [-1, 1] on the 2-sphere).
    self.assertAlmostEqual(evaluation.expected_random_alignment(2), 2 / math.pi, places=6)
    self.assertAlmostEqual(evaluation.expected_random_alignment(3), 0.5, places=6)

  @parameterized.parameters(100, 3072)
  def test_large_n_is_sqrt_2_over_pi_n(self, n):
    self.assertAllClose(
        evaluation.expected_random_alignment(n), math.sqrt(2 / (math.pi * n)), rtol=0.01)

  def test_monte_carlo(self):
    # Independent check: the first coordinate of normalised Gaussians.
    z = np.random.default_rng(0).standard_normal((200000, 7))
    mc = np.mean(np.abs(z[:, 0]) / np.linalg.norm(z, axis=1))
    self.assertAllClose(evaluation.expected_random_alignment(7), mc, atol=3e-3)

  def test_rejects_bad_n(self):
    with self.assertRaisesRegex(ValueError, "`n` must be a positive integer"):
      evaluation.expected_random_alignment(0)


class SpectrumTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters(False, True)
  def test_linear_model_is_numpy_svd(self, centered):
    w = _with_spectrum([5.0, 3.0, 1.5, 0.5], 4, 6)
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    result = evaluation.spectrum(_linear_model(w), x, k=3, centered=centered, batch_size=2)
    matrix = (np.eye(4) - np.ones((4, 4)) / 4.0) @ w if centered else w
    expected = np.linalg.svd(matrix, compute_uv=False)[:3]
    self.assertEqual(result.num_examples, 5)
    self.assertEqual(np.shape(result.values), (5, 3))
    for row in result.values:  # the same J for every example
      self.assertAllClose(row, expected, rtol=1e-3)
    self.assertAllClose(result.mean, expected, rtol=1e-3)
    self.assertAllClose(result.std, np.zeros(3), atol=1e-3)
    self.assertEqual(result.centered, centered)

  def test_short_last_batch_is_padded_one_trace(self):
    # 5 examples in batches of 2: the last batch (1 example) is padded to 2,
    # so the compiled kernel sees one static shape and is traced once.
    w = _with_spectrum([3.0, 1.0, 0.5], 3, 4)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    kernel = evaluation._OperatorNormKernel(  # pylint: disable=protected-access
        _linear_model(w), p=2.0, q=2.0, num_iters=20, num_restarts=1, method="auto",
        centered=False, training=False, jit_compile=False)
    norms = kernel.run(x, batch_size=2)
    self.assertEqual(norms.shape, (5,))
    self.assertAllClose(norms, [3.0] * 5, rtol=1e-3)
    self.assertEqual(kernel.norm.experimental_get_tracing_count(), 1)

  def test_dataset_input(self):
    w = _with_spectrum([4.0, 2.0], 2, 3)
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(6, np.int32))).batch(4)
    result = evaluation.spectrum(_linear_model(w), ds, k=2)
    self.assertEqual(result.num_examples, 6)
    self.assertAllClose(result.mean, [4.0, 2.0], rtol=1e-3)


class MeanOperatorNormTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(
      # ||W||_{2,2} = sigma_max; ||W||_{1,q} = max column q-norm;
      # ||W||_{p,inf} = max row p*-norm (p = inf: l1 rows).
      ("22", 2, 2, lambda w: np.linalg.svd(w, compute_uv=False)[0]),
      ("12", 1, 2, lambda w: np.max(np.linalg.norm(w, axis=0))),
      ("inf_inf", float("inf"), float("inf"), lambda w: np.max(np.abs(w).sum(axis=1))),
  )
  def test_linear_model_closed_forms(self, p, q, closed_form):
    w = _with_spectrum([3.0, 1.0, 0.5], 3, 4, seed=2)
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    value = evaluation.mean_operator_norm(_linear_model(w), x, p, q, num_iters=30)
    self.assertIsInstance(value, float)
    self.assertAllClose(value, closed_form(w), rtol=1e-3)

  def test_centered(self):
    w, _, _, _, s = _shift_dominated()
    x = np.zeros((2, 5), np.float32)
    model = _linear_model(w)
    # sigma_1(W) = c sqrt(d) = 3 sqrt(3); sigma_1(P W) = sigma_1(B) = s = 1.
    self.assertAllClose(evaluation.mean_operator_norm(model, x), 3 * math.sqrt(3), rtol=1e-3)
    self.assertAllClose(evaluation.mean_operator_norm(model, x, centered=True), s, rtol=1e-3)


class AlignmentTest(parameterized.TestCase, tf.test.TestCase):

  def test_logit_attack_aligns_with_top_singular_vector(self):
    # Linear f: the l2 logit loss ||W delta||_2 has gradient W^T W delta / ||W delta||;
    # a large step makes each PGD step one (2,2) power iteration, so delta
    # converges to eps * v_1 (ratio (sigma_2/sigma_1)^2 = 1/25 per step):
    # |cos| = 1 at rank 1 and 0 at ranks 2, 3.
    w = _with_spectrum([5.0, 1.0, 0.5], 3, 6)
    x = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    result = evaluation.alignment(
        _linear_model(w), x, epsilon=0.1, p=2, loss="logit", k=3, num_steps=10,
        step_size=10.0, batch_size=4)
    self.assertEqual(result.num_examples, 8)
    self.assertLen(result.mean, 3)
    self.assertGreater(result.mean[0], 0.999)
    self.assertLess(max(result.mean[1:]), 0.01)
    self.assertAllClose(result.singular_values, [5.0, 1.0, 0.5], rtol=1e-3)
    self.assertEqual(result.rank1, result.mean[0])

  def test_random_baseline_closed_form(self):
    # mean |cos| of a random unit direction with any fixed unit v_r in R^n:
    # Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)), 0.3395 for n = 6; the std of
    # |cos| is sqrt(1/n - E^2) = 0.227, so with 400 examples the standard error
    # of each rank's mean is 0.011: a 0.045 tolerance is 4 standard errors.
    w = _with_spectrum([3.0, 2.0, 1.0], 3, 6)
    x = np.random.default_rng(0).standard_normal((400, 6)).astype(np.float32)
    result = evaluation.alignment(
        _linear_model(w), x, epsilon=0.1, k=3, num_steps=1, seed=3)
    expected = evaluation.expected_random_alignment(6)
    self.assertAllClose(result.random_expected, expected)
    self.assertAllClose(result.random_mean, [expected] * 3, atol=0.045)
    self.assertAllClose(result.random_expected, math.sqrt(2 / (math.pi * 6)), rtol=0.15)

  def test_centered_alignment_sees_what_crossentropy_sees(self):
    # W = c 1 a^T + B (see _shift_dominated): v_1(W) = a (a logit shift),
    # v_2(W) = b_in, v_1(P W) = b_in. The cross-entropy gradient is
    # W^T (softmax - e_y) = B^T (softmax - e_y) + c a 1^T (softmax - e_y) and
    # 1^T (softmax - e_y) = 0, so it is a multiple of b_in: with no random
    # start every PGD-l2 step moves along b_in and delta = +-eps b_in.
    w, _, _, sigma_1, s = _shift_dominated()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=6)
    result = evaluation.alignment(
        _linear_model(w), x, y, epsilon=0.2, p=2, k=2, num_steps=5,
        random_start=False, centered=True)
    self.assertAllClose(result.mean, [0.0, 1.0], atol=1e-3)
    self.assertAllClose(result.centered_mean[0], 1.0, atol=1e-3)
    self.assertEqual(result.centered_rank1, result.centered_mean[0])
    self.assertAllClose(result.singular_values, [sigma_1, s], rtol=1e-3)
    self.assertAllClose(result.centered_singular_values[0], s, rtol=1e-3)
    # u_1(W) = 1/sqrt(d): a pure shift; u_2 = b_out sums to zero.
    self.assertAllClose(result.logit_shift, [1.0, 0.0], atol=1e-3)

  def test_without_centered_fields_are_none(self):
    w = _with_spectrum([2.0, 1.0], 2, 3)
    x = np.ones((2, 3), np.float32)
    result = evaluation.alignment(_linear_model(w), x, epsilon=0.1, k=2, num_steps=2)
    self.assertFalse(result.centered)
    self.assertIsNone(result.centered_mean)
    self.assertIsNone(result.centered_rank1)

  def test_alignment_vs_epsilon(self):
    # Linear model: the l2 logit attack aligns with v_1 at every radius
    # (J is the same everywhere), random baseline independent of eps.
    w = _with_spectrum([5.0, 1.0], 2, 4)
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    curve = evaluation.alignment_vs_epsilon(
        _linear_model(w), x, epsilons=[0.05, 0.5, 2.0], loss="logit", num_steps=10,
        step_size=10.0, centered=True)
    self.assertEqual(curve.epsilons, [0.05, 0.5, 2.0])
    self.assertLen(curve.mean, 3)
    self.assertAllGreater(curve.mean, 0.999)
    self.assertLen(curve.centered_mean, 3)
    self.assertAllClose(curve.random_expected, evaluation.expected_random_alignment(4))
    json.dumps(curve.to_dict(), allow_nan=False)

  def test_zero_perturbation_gives_zero_not_nan(self):
    # A perturbation of norm 0 (clipped away) has no direction: cosine 0.
    delta = tf.constant([[0.0, 0.0], [3.0, 4.0]])
    vectors = tf.constant([[[1.0, 0.0]], [[0.0, -1.0]]])
    cos = evaluation._abs_cosines(delta, vectors)  # pylint: disable=protected-access
    self.assertAllClose(cos, [[0.0], [0.8]])  # |<(3,4),(0,-1)>| / 5 = 0.8

  def test_bad_epsilon(self):
    with self.assertRaisesRegex(ValueError, "`epsilon` must be a positive"):
      evaluation.alignment(_linear_model(np.eye(2)), np.ones((1, 2)), epsilon=0.0)


class MarginAlignmentTest(parameterized.TestCase, tf.test.TestCase):
  """margin_alignment on linear models f(x) = W x, where J = W everywhere.

  For p = 2 the margin direction is s_2(W^T e) with e = (e_j - e_y)/sqrt(2),
  i.e. (w_j - w_y) / ||w_j - w_y|| (w_i the i-th row of W, j the strongest
  wrong class at x), and J's top output direction is u_1, numpy's top left
  singular vector of W.
  """

  def test_three_classes_closed_forms(self):
    # sigma(W) = 5.10, 1.50, 0.85: the l2 logit attack with a large step is
    # the power method on W^T W (error ratio (1.50/5.10)^2 = 0.087 per step),
    # so delta_lq = +-eps v_1 after 10 steps: logit_v = 1 and
    # logit_margin = |<v_1, w_j - w_y>| / ||w_j - w_y||.
    w = np.array([[4.0, 1.0, 0.0, 0.0],
                  [-3.0, 0.0, 1.0, 0.0],
                  [0.0, 1.0, 0.0, 1.0]], np.float32)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=7)
    result = evaluation.margin_alignment(
        _linear_model(w), x, y, epsilon=0.1, p=2, q=2, num_steps=10, step_size=10.0,
        batch_size=3)  # 7 = 3 + 3 + 1: the last batch is padded
    logits = x @ w.T
    logits[np.arange(7), y] = -np.inf
    j = np.argmax(logits, axis=1)
    self.assertEqual(result.wrong_class, j.tolist())
    self.assertEqual(result.num_examples, 7)
    u, sigma, vt = np.linalg.svd(w.astype(np.float64))
    e = (np.eye(3)[j] - np.eye(3)[y]) / math.sqrt(2.0)  # [7, 3]
    # u_margin = |<u_1, e>| (u_1 and e have unit norm).
    self.assertAllClose(result.u_margin_values, np.abs(e @ u[:, 0]), atol=1e-5)
    self.assertAllClose(result.logit_v_values, np.ones(7), atol=1e-4)
    diff = w[j] - w[y]
    margin_dir = diff / np.linalg.norm(diff, axis=1, keepdims=True)
    expected = np.abs(margin_dir @ vt[0])
    self.assertAllClose(result.logit_margin_values, expected, atol=1e-4)
    # The docstring's identity: with c_r = <u_r, e>, |cos(W^T e, v_1)| =
    # sigma_1 |c_1| / sqrt(sum_r sigma_r^2 c_r^2) (W^T e = sum_r sigma_r c_r v_r).
    c = e @ u
    self.assertAllClose(
        sigma[0] * np.abs(c[:, 0]) / np.sqrt(np.sum((sigma * c) ** 2, axis=1)), expected,
        atol=1e-6)
    self.assertAllClose(result.u_margin, np.mean(result.u_margin_values))
    self.assertAllClose(result.logit_margin, np.mean(expected), atol=1e-4)
    for name in ("ce_v", "ce_margin"):
      self.assertBetween(getattr(result, name), 0.0, 1.0)

  @parameterized.named_parameters(
      ("l2", 2.0, False), ("l2_xla", 2.0, True), ("linf", float("inf"), False))
  def test_two_classes_crossentropy_follows_the_margin(self, p, jit_compile):
    # Two classes: softmax - e_y = +-pi_j (e_1 - e_0), so grad_x CE is a
    # positive multiple of W^T e = (w_j - w_y) / sqrt(2) at every point.
    # Without a random start every PGD step moves along s_p(w_j - w_y):
    # delta_ce = eps s_p(w_j - w_y) (for linf every coordinate of w_1 - w_0
    # below is non-zero, so the sign has no zeros), hence ce_margin = 1, and
    # for p = 2: ce_v = |<w_1 - w_0, v_1>| / ||w_1 - w_0||.
    w = np.array([[1.0, 2.0, 0.5], [-1.0, 0.5, 2.0]], np.float32)
    x = np.array([[0.1, 0.2, 0.3], [-0.3, 0.1, 0.2], [0.2, -0.1, 0.0]], np.float32)
    y = np.array([0, 1, 1])
    result = evaluation.margin_alignment(
        _linear_model(w), x, y, epsilon=0.1, p=p, num_steps=5, random_start=False,
        jit_compile=jit_compile)
    self.assertEqual(result.wrong_class, [1, 0, 0])
    self.assertAllClose(result.ce_margin_values, np.ones(3), atol=1e-5)
    if p == 2.0:
      vt = np.linalg.svd(w.astype(np.float64))[2]
      diff = w[1] - w[0]
      self.assertAllClose(result.ce_v, abs(diff @ vt[0]) / np.linalg.norm(diff), atol=1e-4)

  def test_top_output_direction_orthogonal_to_the_margin(self):
    # W = c 1 a^T + B (see _shift_dominated): u_1 = 1/sqrt(3) and v_1 = a.
    # Every e = (e_j - e_y)/sqrt(2) sums to zero, so u_margin = |<u_1, e>| = 0.
    # W^T e = B^T e = s b_in <b_out, e> with <b_out, e> in {+-1/2, +-1} != 0,
    # and the CE gradient W^T (softmax - e_y) is a multiple of b_in too: the CE
    # perturbation is +-eps b_in, along the margin direction (ce_margin = 1)
    # and orthogonal to v_1 = a (ce_v = 0), while the logit attack (the
    # power method, sigma_2/sigma_1 = 1/(3 sqrt(3))) finds v_1: logit_v = 1,
    # logit_margin = |<a, b_in>| = 0.
    w, _, _, _, _ = _shift_dominated()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=6)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    result = evaluation.margin_alignment(
        _linear_model(w), ds, epsilon=0.2, num_steps=5, step_size=10.0, random_start=False)
    self.assertEqual(result.num_examples, 6)
    self.assertAllClose(result.u_margin_values, np.zeros(6), atol=1e-5)
    self.assertAllClose(result.ce_margin_values, np.ones(6), atol=1e-5)
    self.assertAllClose(result.ce_v_values, np.zeros(6), atol=1e-5)
    self.assertAllClose(result.logit_v_values, np.ones(6), atol=1e-4)
    self.assertAllClose(result.logit_margin_values, np.zeros(6), atol=1e-3)

  def test_json_round_trip(self):
    w = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    result = evaluation.margin_alignment(
        _linear_model(w), np.ones((2, 2), np.float32), [0, 1], epsilon=0.1, num_steps=2)
    d = result.to_dict()
    back = evaluation.MarginAlignmentResult.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    self.assertEqual(back, result)
    summary = result.to_dict(per_example=False)
    self.assertNotIn("u_margin_values", summary)
    self.assertNotIn("wrong_class", summary)
    self.assertIsInstance(summary["u_margin"], float)

  def test_bad_input(self):
    model = _linear_model(np.eye(2))
    x = np.ones((3, 2), np.float32)
    with self.assertRaisesRegex(ValueError, "`y` is required"):
      evaluation.margin_alignment(model, x, epsilon=0.1)
    with self.assertRaisesRegex(ValueError, "`epsilon` must be a positive"):
      evaluation.margin_alignment(model, x, [0, 1, 0], epsilon=0.0)
    with self.assertRaisesRegex(ValueError, "`epsilon` must be a positive"):
      evaluation.margin_alignment(model, x, [0, 1, 0], epsilon=-1.0)
    with self.assertRaisesRegex(ValueError, "`epsilon` must be a single"):
      evaluation.margin_alignment(model, x, [0, 1, 0], epsilon=[0.1, 0.2])
    with self.assertRaisesRegex(ValueError, "`num_steps` must be a positive integer"):
      evaluation.margin_alignment(model, x, [0, 1, 0], epsilon=0.1, num_steps=0)
    with self.assertRaisesRegex(ValueError, "same number of examples"):
      evaluation.margin_alignment(model, x, [0, 1], epsilon=0.1)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(2)
    with self.assertRaisesRegex(ValueError, "must yield"):
      evaluation.margin_alignment(model, ds, epsilon=0.1)


class RobustAccuracyTest(parameterized.TestCase, tf.test.TestCase):

  def _binary_problem(self, n=4, count=40, seed=0):
    """Linear binary classifier and points at known lp distances from its boundary."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((2, n)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    x = rng.standard_normal((count, n)).astype(np.float32)
    y = rng.integers(0, 2, size=count)
    return w, b, x, y

  @parameterized.named_parameters(("l2", 2.0), ("linf", float("inf")), ("l1", 1.0))
  def test_linear_binary_closed_form(self, p):
    # f(x) = W x + b, two classes. The margin of (x, y) is
    # m = (w_y - w_o) . x + b_y - b_o and the class flips exactly when the
    # perturbation reduces it to <= 0; the largest reduction within
    # ||delta||_p <= eps is eps ||w_y - w_o||_{p*} (Hoelder), so (x, y) is
    # robust at eps iff m > eps ||w_y - w_o||_{p*}. The CE gradient is
    # -(w_y - w_o) * softmax_o: its direction never changes, so PGD without a
    # random start reaches the maximiser (sign / rescale / vertex) exactly.
    w, b, x, y = self._binary_problem()
    model = _linear_model(w, b)
    diff = w[y] - w[1 - y]
    margin = np.sum(diff * x, axis=1) + b[y] - b[1 - y]
    dual = {2.0: 2, float("inf"): 1, 1.0: np.inf}[p]
    distance = margin / np.linalg.norm(diff, ord=dual, axis=1)
    # Radii away from every distance, so float32 rounding cannot flip a point.
    epsilons = [0.0]
    for e in (0.1, 0.3, 0.6, 1.0, 2.0):
      while np.min(np.abs(distance - e)) < 1e-3:
        e += 0.01
      epsilons.append(e)
    curve = evaluation.robust_accuracy(
        model, x, y, epsilons=epsilons, p=p, num_steps=20, random_start=False,
        batch_size=16)
    expected = [float(np.mean(distance > e)) for e in epsilons]
    self.assertAllClose(curve.accuracies, expected)
    self.assertAllClose(curve.clean_accuracy, np.mean(margin > 0))
    self.assertEqual(curve.p, p)
    self.assertEqual(curve.num_examples, 40)

  def test_dataset_and_one_hot_and_xla_agree_with_closed_form(self):
    w, b, x, y = self._binary_problem(seed=1)
    model = _linear_model(w, b)
    diff = w[y] - w[1 - y]
    distance = (np.sum(diff * x, axis=1) + b[y] - b[1 - y]) / np.linalg.norm(diff, axis=1)
    eps = 0.5
    while np.min(np.abs(distance - eps)) < 1e-3:
      eps += 0.01
    expected = float(np.mean(distance > eps))
    ds = tf.data.Dataset.from_tensor_slices((x, np.eye(2)[y])).batch(16)
    curve = evaluation.robust_accuracy(
        model, ds, epsilons=[eps], p=2, num_steps=20, random_start=False)
    self.assertAllClose(curve.accuracies, [expected])
    curve = evaluation.robust_accuracy(
        model, x, y, epsilons=eps, p=2, num_steps=20, random_start=False,
        jit_compile=True)
    self.assertAllClose(curve.accuracies, [expected])

  def test_trained_model_curve(self):
    # A tiny trained MLP: eps = 0 is the clean accuracy (recomputed here with
    # numpy from model.predict) and the curve is non-increasing.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    curve = evaluation.robust_accuracy(
        model, x, y, epsilons=[0.4, 0.0, 0.1, 0.2], p=float("inf"), num_steps=5,
        num_restarts=2)
    self.assertEqual(curve.epsilons, [0.0, 0.1, 0.2, 0.4])
    clean = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))
    self.assertAllClose(curve.accuracies[0], clean)
    self.assertAllClose(curve.clean_accuracy, clean)
    self.assertTrue(all(a >= b for a, b in zip(curve.accuracies, curve.accuracies[1:])))
    self.assertEqual(curve.accuracy_at(0.2), curve.accuracies[2])
    with self.assertRaisesRegex(ValueError, "`epsilon` must be one of"):
      curve.accuracy_at(0.3)

  def test_bad_input(self):
    model = _linear_model(np.eye(2))
    x = np.ones((3, 2), np.float32)
    with self.assertRaisesRegex(ValueError, "`epsilons` must be a non-negative"):
      evaluation.robust_accuracy(model, x, [0, 1, 0], epsilons=[-0.1])
    with self.assertRaisesRegex(ValueError, "`y` is required"):
      evaluation.robust_accuracy(model, x, epsilons=[0.1])
    with self.assertRaisesRegex(ValueError, "same number of examples"):
      evaluation.robust_accuracy(model, x, [0, 1], epsilons=[0.1])
    ds = tf.data.Dataset.from_tensor_slices(x).batch(2)
    with self.assertRaisesRegex(ValueError, "must yield"):
      evaluation.robust_accuracy(model, ds, epsilons=[0.1])
    with self.assertRaisesRegex(ValueError, "`y` must be None"):
      evaluation.robust_accuracy(model, ds, [0, 1, 0], epsilons=[0.1])
    with self.assertRaisesRegex(TypeError, "floating-point"):
      evaluation.robust_accuracy(model, np.ones((3, 2), np.int32), [0, 1, 0], epsilons=[0.1])
    with self.assertRaisesRegex(ValueError, "`batch_size` must be a positive integer"):
      evaluation.robust_accuracy(model, x, [0, 1, 0], epsilons=[0.1], batch_size=0)


class ResultsToDictTest(tf.test.TestCase):

  def test_json_round_trip(self):
    curve = evaluation.RobustAccuracyCurve(
        epsilons=[0.0, np.float32(0.5)], accuracies=np.array([1.0, 0.25]),
        clean_accuracy=np.float64(1.0), p=float("inf"), num_examples=np.int64(4),
        num_steps=10)
    d = curve.to_dict()
    text = json.dumps(d, allow_nan=False)  # standard JSON: no Infinity / NaN
    self.assertEqual(d["p"], "inf")
    self.assertIsInstance(d["accuracies"][1], float)
    self.assertIsInstance(d["num_examples"], int)
    back = evaluation.RobustAccuracyCurve.from_dict(json.loads(text))
    self.assertEqual(back.p, float("inf"))
    self.assertEqual(back.accuracies, [1.0, 0.25])

  def test_per_example_can_be_dropped(self):
    result = evaluation.SpectrumResult(
        k=2, num_examples=1, mean=[2.0, 1.0], std=[0.0, 0.0], values=np.array([[2.0, 1.0]]))
    self.assertEqual(result.to_dict()["values"], [[2.0, 1.0]])
    self.assertNotIn("values", result.to_dict(per_example=False))
    self.assertIsNone(
        evaluation.SpectrumResult.from_dict(result.to_dict(per_example=False)).values)

  def test_alignment_result_json(self):
    w = _with_spectrum([2.0, 1.0], 2, 3)
    x = np.ones((2, 3), np.float32)
    result = evaluation.alignment(
        _linear_model(w), x, epsilon=0.1, k=2, num_steps=2, centered=True)
    text = json.dumps(result.to_dict(), allow_nan=False)
    back = evaluation.AlignmentResult.from_dict(json.loads(text))
    self.assertEqual(back.mean, result.mean)
    self.assertEqual(back.centered_cosines, result.centered_cosines)


if __name__ == "__main__":
  tf.test.main()
