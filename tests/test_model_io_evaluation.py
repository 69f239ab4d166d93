"""Tests of the evaluation functions on models with several inputs (dict / list x).

The model is ``f(a, ids) = a W + E[ids]``: linear in the float input ``a``
(perturbed), with a per-id bias from an embedding of the integer ``ids`` (held
fixed). For a correctly classified example the minimal lp distance from ``a``
to the decision boundary is the closed form

    dist(a) = min_{j != y} (f_y - f_j) / ||w_y - w_j||_{p*},   1/p + 1/p* = 1,

(the ids only shift the bias), so the exact robust accuracy at ``eps`` is the
share of correct examples with ``dist > eps``; points within 20% of ``eps`` of
the boundary are left out so that every attack's budget suffices.
"""

import math
import os
import subprocess
import sys

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_opnorm
from keras_opnorm.evaluation import alignment
from keras_opnorm.evaluation import alignment_vs_epsilon
from keras_opnorm.evaluation import auto_attack
from keras_opnorm.evaluation import margin_alignment
from keras_opnorm.evaluation import mean_operator_norm
from keras_opnorm.evaluation import spectrum
from keras_opnorm.evaluation import gradient_masking_checks
from keras_opnorm.evaluation import robust_accuracy
from keras_opnorm.evaluation import robust_radii
from keras_opnorm.evaluation import _data
from keras_opnorm.evaluation import robustness

_INF = float("inf")
DIM, CLASSES, VOCAB = 6, 4, 5
_CLIP = (-4.0, 4.0)


def _dual(p):
  return 1.0 if math.isinf(p) else (_INF if p == 1.0 else p / (p - 1.0))


def _weights(seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(DIM, CLASSES)), rng.normal(size=(VOCAB, CLASSES))


def _exact_distances(w, e, a, ids, y, p):
  """The closed form above, in float64: [n] distances (0 where misclassified)."""
  z = a.astype(np.float64) @ w + e[ids[:, 0]]
  q = _dual(p)
  out = np.zeros(len(a))
  for i, (zi, yi) in enumerate(zip(z, y)):
    if np.argmax(zi) == yi:
      out[i] = min((zi[yi] - zi[j]) / np.linalg.norm(w[:, yi] - w[:, j], ord=q)
                   for j in range(CLASSES) if j != yi)
  return out


def _model(w, e):
  """The functional model {'a': [B, 6] float, 'ids': [B, 1] int} -> logits [B, 4]."""
  a = keras.Input((DIM,), name="a")
  ids = keras.Input((1,), dtype="int32", name="ids")
  dense = keras.layers.Dense(CLASSES, use_bias=False)
  dense.build((None, DIM))
  dense.set_weights([w.astype("float32")])
  embedding = keras.layers.Embedding(VOCAB, CLASSES)
  embedding.build((None, 1))
  embedding.set_weights([e.astype("float32")])
  logits = keras.layers.Add()([dense(a), keras.layers.Flatten()(embedding(ids))])
  return keras.Model({"a": a, "ids": ids}, logits)


def _problem(p, eps, n=24, seed=0, num_flipped=2, band=(0.8, 1.25)):
  """The model, x = {'a', 'ids'}, y and the closed-form distances (none in eps * band)."""
  w, e = _weights(seed)
  rng = np.random.default_rng(seed + 1)
  rows, ids = [], []
  while len(rows) < n:
    ai = rng.normal(size=(1, DIM)).clip(-3.0, 3.0)
    ii = rng.integers(0, VOCAB, (1, 1))
    yi = np.argmax(ai @ w + e[ii[:, 0]], axis=1)
    d = _exact_distances(w, e, ai, ii, yi, p)[0]
    if band[0] * eps < d < band[1] * eps:
      continue
    rows.append(ai[0])
    ids.append(ii[0])
  a = np.asarray(rows, np.float32)
  ids = np.asarray(ids, np.int32)
  y = np.argmax(a.astype(np.float64) @ w + e[ids[:, 0]], axis=1).astype(np.int32)
  y[:num_flipped] = (y[:num_flipped] + 1) % CLASSES  # misclassified clean
  dist = _exact_distances(w, e, a, ids, y, p)
  return _model(w, e), {"a": a, "ids": ids}, y, dist


def _lp(d, p):
  d = np.abs(d.reshape(d.shape[0], -1)).astype(np.float64)
  return d.max(1) if math.isinf(p) else np.power(np.power(d, p).sum(1), 1.0 / p)


_EPS = {2.0: 0.5, _INF: 0.25}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STRATEGY_SCRIPT = """
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from test_model_io_evaluation import _problem
from keras_opnorm.evaluation import auto_attack
model, x, y, dist = _problem(2.0, 0.5, n=13)
kw = dict(epsilon=0.5, p=2.0, version="fast", batch_size=4, verbose=0)
single = auto_attack(model, x, y, **kw)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored = auto_attack(model, x, y, strategy=strategy, **kw)
assert strategy.num_replicas_in_sync == 2
np.testing.assert_allclose(single.x_adv["a"], mirrored.x_adv["a"], rtol=1e-6, atol=1e-6)
assert single.broken_by == mirrored.broken_by, (single.broken_by, mirrored.broken_by)
assert mirrored.robust_accuracy == (dist > 0.5).mean(), mirrored.robust_accuracy
print("OK")
"""


class AutoAttackMultiInputTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(_INF, 2.0)
  def test_fast_cascade_equals_closed_form(self, p):
    eps = _EPS[p]
    model, x, y, dist = _problem(p, eps)
    exact = dist > eps
    self.assertTrue(0 < exact.sum() < (dist > 0).sum())  # a non-trivial case
    r = auto_attack(model, x, y, epsilon=eps, p=p, version="fast", clip=_CLIP, batch_size=8,
                    verbose=0)
    self.assertAllClose(r.clean_accuracy, (dist > 0).mean())
    self.assertAllClose(r.robust_accuracy, exact.mean())
    self.assertAllEqual(np.asarray(r.broken_by) == "", exact)
    # x_adv: the user's structure, ids unchanged, a in the ball and the clip box.
    self.assertEqual(set(r.x_adv), {"a", "ids"})
    self.assertAllEqual(r.x_adv["ids"], x["ids"])
    self.assertAllLessEqual(_lp(r.x_adv["a"] - x["a"], p), eps * (1 + 1e-5))
    self.assertAllInRange(r.x_adv["a"], *_CLIP)
    # The broken points are adversarial for the model at (a_adv, ids).
    broken = np.isin(r.broken_by, ["apgd-ce", "apgd-t"])
    pred = np.argmax(model(r.x_adv).numpy(), axis=-1)
    self.assertAllEqual(pred[broken] != y[broken], np.ones(broken.sum(), bool))

  def test_list_inputs_and_a_view_naming_the_input(self):
    model, x, y, dist = _problem(2.0, 0.5, n=12)
    list_model = keras.Model([model.inputs[0], model.inputs[1]], model.outputs)
    view = keras_opnorm.LogitsView(list_model, inputs=[0])
    r = auto_attack(view, [x["a"], x["ids"]], y, epsilon=0.5, p=2.0, version="custom",
                    attacks=[("apgd-ce", {"num_steps": 30}), ("apgd-t", {"num_targets": 3})],
                    verbose=0)
    self.assertAllClose(r.robust_accuracy, (dist > 0.5).mean())
    self.assertIsInstance(r.x_adv, list)
    self.assertAllEqual(r.x_adv[1], x["ids"])

  def test_dataset_and_arrays_give_the_same_result(self):
    model, x, y, _ = _problem(_INF, 0.25, n=14)
    kw = dict(epsilon=0.25, version="custom", attacks=[("apgd-ce", {"num_steps": 10})],
              batch_size=8, verbose=0)
    arrays = auto_attack(model, x, y, **kw)
    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, CLASSES))).batch(5)
    data = auto_attack(model, ds, **kw)
    self.assertAllEqual(arrays.x_adv["a"], data.x_adv["a"])
    self.assertAllEqual(arrays.x_adv["ids"], data.x_adv["ids"])
    self.assertEqual(arrays.broken_by, data.broken_by)
    self.assertEqual(arrays.margins, data.margins)

  def test_one_trace_per_stage_and_callables_see_the_packed_input(self):
    traces = []

    def noise(fn, zb, yb, *, epsilon, p, clip, seed):
      del yb, p, clip
      traces.append(zb.shape)  # Python side effect: runs once per trace
      self.assertEqual(fn(zb).shape[-1], CLASSES)
      return zb + epsilon * tf.sign(tf.random.stateless_uniform(tf.shape(zb), seed, -1, 1))

    model, x, y, _ = _problem(_INF, 0.1, n=10)
    auto_attack(model, x, y, epsilon=0.1, version="custom", attacks=[("noise", noise)],
                batch_size=3, verbose=0)  # 4 batches (the last padded)
    self.assertEqual(traces, [tf.TensorShape([3, DIM])])

  @pytest.mark.slow
  def test_mirrored_two_logical_cpus_matches_single_device(self):
    # The fixed inputs are distributed with z: each replica binds its batch's ids.
    # Logical devices must be set before TensorFlow initialises: a subprocess.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_ROOT, os.path.join(_ROOT, "tests")] + [
        q for q in env.get("PYTHONPATH", "").split(os.pathsep) if q])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", _STRATEGY_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
    self.assertIn("OK", proc.stdout)

  def test_result_round_trips_through_a_dict(self):
    model, x, y, _ = _problem(_INF, 0.25, n=4)
    r = auto_attack(model, x, y, epsilon=0.25, version="fast", verbose=0)
    back = type(r).from_dict(r.to_dict(include_x_adv=True))
    self.assertAllClose(back.x_adv["a"], r.x_adv["a"])
    self.assertAllEqual(back.x_adv["ids"], r.x_adv["ids"])


# Cross-entropy PGD follows a softmax-weighted mix of the margins, not always
# the closest boundary: its points keep further from the boundary (no
# distance in [eps / 2, 1.25 eps]) and it starts at x (deterministic).
_PGD_BAND = (0.5, 1.25)


class RobustAccuracyMultiInputTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(_INF, 2.0)
  def test_equals_closed_form(self, p):
    eps = _EPS[p]
    model, x, y, dist = _problem(p, eps, band=_PGD_BAND)
    r = robust_accuracy(model, x, y, epsilons=[0.0, eps], p=p, num_steps=20, clip=_CLIP,
                        random_start=False, batch_size=8)
    self.assertAllClose(r.clean_accuracy, (dist > 0).mean())
    self.assertAllClose(r.accuracies, [(dist > 0).mean(), (dist > eps).mean()])

  def test_dataset_equals_arrays(self):
    model, x, y, dist = _problem(2.0, 0.5, n=12, band=_PGD_BAND)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    kw = dict(epsilons=[0.5], p=2.0, num_steps=20, random_start=False)
    self.assertAllClose(robust_accuracy(model, ds, **kw).accuracies, [(dist > 0.5).mean()])
    self.assertAllClose(robust_accuracy(model, x, y, **kw).accuracies, [(dist > 0.5).mean()])

  def test_kernels_trace_once_across_batches_and_radii(self):
    model, x, y, _ = _problem(2.0, 0.5, n=10)
    kernel = robustness._RobustKernel(  # pylint: disable=protected-access
        model, p=2.0, num_steps=2, step_size=None, num_restarts=1, loss="crossentropy", q=2,
        clip=None, random_start=False, training=False, jit_compile=False,
        structured=_data._Structured(model, x, y))  # pylint: disable=protected-access
    kernel.run(x, y, [0.0, 0.25, 0.5], batch_size=3)  # 4 batches (the last padded)
    self.assertEqual(kernel.robust.experimental_get_tracing_count(), 1)
    self.assertEqual(kernel.predict.experimental_get_tracing_count(), 1)


class RobustRadiiMultiInputTest(tf.test.TestCase):

  def test_radii_equal_closed_form(self):
    model, x, y, dist = _problem(2.0, 0.5, n=12)
    r = robust_radii(model, x, y, p=2.0, num_steps=50, num_targets=3, batch_size=8)
    self.assertAllClose(r.radii, dist, rtol=1e-3, atol=1e-5)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    self.assertAllClose(robust_radii(model, ds, p=2.0, num_steps=50, num_targets=3).radii,
                        dist, rtol=1e-3, atol=1e-5)



class GradientMaskingChecksMultiInputTest(tf.test.TestCase):

  def test_checks_pass_and_match_the_closed_form(self):
    # A linear model masks nothing: every check passes, the gradient attacks'
    # accuracy at eps is the closed form and no gradient is zero.
    model, x, y, dist = _problem(2.0, 0.5, n=8)
    report = gradient_masking_checks(model, x, y, epsilon=0.5, p=2.0, clip=_CLIP,
                                     epsilon_factors=(1.0,), num_steps=10, num_targets=2,
                                     strong_steps_factor=2, strong_restarts=1, num_queries=10,
                                     batch_size=8)
    self.assertTrue(report.passed)
    self.assertEqual(report.num_examples, 8)
    monotonic = report.check("monotonic").values
    self.assertAllClose(monotonic["accuracies"][0], (dist > 0.5).mean())
    self.assertAllClose(monotonic["clean_accuracy"], (dist > 0).mean())
    self.assertEqual(report.check("zero_gradients").values["share"], 0.0)
    self.assertFalse(report.check("gradient_free").skipped)



class SpectrumAndAlignmentMultiInputTest(tf.test.TestCase):
  """The Jacobian with respect to a is W^T at every point, whatever the ids."""

  def test_operator_norm_and_spectrum(self):
    model, x, _, _ = _problem(2.0, 0.5, n=7)
    w, _ = _weights()
    sigma = np.linalg.svd(w, compute_uv=False)
    self.assertAllClose(mean_operator_norm(model, x, 2, 2, batch_size=3), sigma[0], rtol=1e-4)
    result = spectrum(model, x, k=3, batch_size=3)
    self.assertAllClose(result.values, np.tile(sigma[:3], (7, 1)), rtol=1e-4)
    # Centered logits: the Jacobian P W^T, P = I - 1 1^T / d.
    centered = np.eye(CLASSES) - np.ones((CLASSES, CLASSES)) / CLASSES
    sigma_c = np.linalg.svd(centered @ w.T, compute_uv=False)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(4)
    self.assertAllClose(spectrum(model, ds, k=2, centered=True).mean, sigma_c[:2], rtol=1e-4)

  def test_alignment_closed_forms(self):
    model, x, y, _ = _problem(2.0, 0.5, n=6)
    w, e = _weights()
    sigma = np.linalg.svd(w, compute_uv=False)
    r = alignment(model, x, y, epsilon=0.5, loss="logit", k=2, num_steps=30, step_size=10.0,
                  batch_size=4)
    self.assertAllClose(r.singular_values, sigma[:2], rtol=1e-4)
    self.assertAllClose(r.random_expected, keras_opnorm.evaluation.expected_random_alignment(DIM))
    # With a large step, each l2-logit PGD step of a linear map is a (2,2)
    # power iteration (ratio (sigma_2 / sigma_1)^2 per step): cos_1 -> 1.
    self.assertGreater(r.rank1, 0.99)
    curve = alignment_vs_epsilon(model, x, y, epsilons=[0.25, 0.5], loss="logit",
                                 num_steps=30, step_size=10.0)
    self.assertAllGreater(curve.mean, 0.99)

  def test_margin_alignment_output_direction(self):
    # u_margin = |<u_1, e>| with u_1 the top left singular vector of W^T and
    # e = (e_j - e_y) / sqrt(2), j the strongest wrong class.
    model, x, y, _ = _problem(2.0, 0.5, n=6, num_flipped=0)
    w, e = _weights()
    u1 = np.linalg.svd(w.T)[0][:, 0]
    z = x["a"].astype(np.float64) @ w + e[x["ids"][:, 0]]
    wrong = np.argmax(np.where(np.eye(CLASSES)[y] > 0, -np.inf, z), axis=-1)
    direction = (np.eye(CLASSES)[wrong] - np.eye(CLASSES)[y]) / np.sqrt(2.0)
    r = margin_alignment(model, x, y, epsilon=0.5, num_steps=2, num_iters=5, batch_size=4)
    self.assertAllEqual(r.wrong_class, wrong)
    self.assertAllClose(r.u_margin_values, np.abs(direction @ u1), atol=1e-4)



def _image_problem(n=6, seed=0):
  """{'img': [n, 4, 4, 1] float in [0, 1], 'ids': [n, 1] int} -> flatten(img) W + E[ids]."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(16, CLASSES)).astype(np.float32)
  e = rng.normal(size=(VOCAB, CLASSES)).astype(np.float32)
  img = keras.Input((4, 4, 1), name="img")
  ids = keras.Input((1,), dtype="int32", name="ids")
  dense = keras.layers.Dense(CLASSES, use_bias=False)
  dense.build((None, 16))
  dense.set_weights([w])
  embedding = keras.layers.Embedding(VOCAB, CLASSES)
  embedding.build((None, 1))
  embedding.set_weights([e])
  logits = keras.layers.Add()([dense(keras.layers.Flatten()(img)),
                               keras.layers.Flatten()(embedding(ids))])
  model = keras.Model({"img": img, "ids": ids}, logits)
  x = {"img": rng.uniform(0.2, 0.8, (n, 4, 4, 1)).astype(np.float32),
       "ids": rng.integers(0, VOCAB, (n, 1)).astype(np.int32)}
  y = np.argmax(x["img"].reshape(n, -1) @ w + e[x["ids"][:, 0]], axis=-1).astype(np.int32)

  def image_only(t):  # The same logits as a function of the image alone (ids fixed).
    return tf.matmul(tf.reshape(t, [tf.shape(t)[0], -1]), w) + tf.gather(e, x["ids"][:, 0])

  return model, x, y, image_only


class SquareMultiInputTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(_INF, 2.0)
  def test_runs_on_the_image_in_its_own_shape(self, p):
    # Square on {'img', 'ids'} is Square on the image (its windows are 4 x 4
    # grid squares) of the model with the ids fixed: the same seed gives the
    # same points. l-inf: every entry of delta is +-eps (no clip binds).
    model, x, y, image_only = _image_problem()
    eps = {2.0: 0.5, _INF: 0.1}[p]
    kw = dict(epsilon=eps, p=p, num_queries=30, seed=1)
    got = keras_opnorm.attacks.square_attack(model, x, y, **kw)
    self.assertEqual(set(got), {"img", "ids"})
    self.assertAllEqual(got["ids"], x["ids"])
    self.assertEqual(got["img"].shape, x["img"].shape)
    reference = keras_opnorm.attacks.square_attack(image_only, x["img"], y, **kw)
    self.assertAllClose(got["img"], reference, atol=1e-6)
    delta = got["img"].numpy() - x["img"]
    self.assertAllLessEqual(_lp(delta, p), eps * (1 + 1e-5))
    if math.isinf(p):
      self.assertAllClose(np.abs(delta), np.full(delta.shape, eps), atol=1e-6)

  def test_auto_attack_square_stage_uses_the_image_shape(self):
    model, x, y, image_only = _image_problem(n=5)
    kw = dict(epsilon=0.1, version="custom", attacks=[("square", {"num_queries": 30})],
              clip=(0.0, 1.0), batch_size=5, verbose=0)
    got = auto_attack(model, x, y, **kw)
    reference = auto_attack(image_only, x["img"], y, **kw)
    self.assertAllClose(got.x_adv["img"], reference.x_adv, atol=1e-6)
    self.assertEqual(got.broken_by, reference.broken_by)
    self.assertAllEqual(got.x_adv["ids"], x["ids"])

  def test_two_perturbed_inputs_are_a_clear_error(self):
    model, x, y, _ = _image_problem(n=2)
    two = dict(x, b=np.zeros((2, 3), np.float32))
    with self.assertRaisesRegex(NotImplementedError, "one input.*`x` has 2 perturbed inputs"):
      keras_opnorm.attacks.square_attack(lambda d: model({"img": d["img"], "ids": d["ids"]}),
                                         two, y, epsilon=0.1, num_queries=2)


if __name__ == "__main__":
  tf.test.main()
