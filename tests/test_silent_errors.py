"""No silent wrong answers (issue 11): bad inputs raise (or give NaN), never a plausible number.

Each case used to return a finite, plausible and wrong result:

* a NaN / inf in ``x`` gave an operator norm of 0 (the zero guards ``n > 0``
  of the norms are False for NaN), zeros from `singular_values`, a finite
  operator-norm metric in ``fit``;
* ``x`` outside ``clip`` (data in 0..16, ``clip=(0, 1)``) was projected into
  the box by the attack, a "perturbation" of 15 in l-inf at eps = 0.1;
* float labels 3.7 were truncated to 3, labels >= num_classes gave a raw
  TensorFlow error;
* ``epsilon=tf.Variable(-1.0)`` was never checked: training ran without an
  attack (the radius is floored at 1e-12);
* eps covering the box ran silently (a vacuous threat model).

Models: ``f(x) = x W`` with a fixed ``W`` (4 classes), whose Jacobian is
``W^T`` at every ``x``: its spectral norm is the largest singular value of
``W``, compared with numpy.
"""

import math
import warnings

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import keras_opnorm as ko
from keras_opnorm import evaluation
from keras_opnorm import objectives
from keras_opnorm.callbacks import LinearRamp

_W = np.array([[1.0, -2.0, 0.5, 0.0],
               [0.0, 1.0, -1.0, 2.0],
               [3.0, 0.0, 1.0, -1.0]], np.float32)  # [n=3, d=4]


def _f(x):
  return tf.matmul(x, tf.constant(_W, x.dtype))


def _data(n=6, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.2, 0.8, size=(n, 3)).astype(np.float32)
  y = (np.arange(n) % 4).astype(np.int32)
  return x, y


def _with_nan(x, index=1, value=np.nan):
  x = x.copy()
  x[index, 0] = value
  return x


_ATTACKS = (
    ("pgd", lambda x, y, **kw: ko.pgd_attack(_f, x, y, epsilon=0.1, num_steps=2, **kw)),
    ("apgd", lambda x, y, **kw: ko.apgd_attack(_f, x, y, epsilon=0.1, num_steps=2, **kw)),
    ("apgd_t", lambda x, y, **kw: ko.apgd_targeted_attack(
        _f, x, y, epsilon=0.1, num_steps=2, num_targets=1, **kw)),
    ("fab", lambda x, y, **kw: ko.fab_attack(
        _f, x, y, epsilon=0.1, num_steps=2, num_targets=1, **kw)),
    ("square", lambda x, y, **kw: ko.square_attack(_f, x, y, epsilon=0.1, num_queries=2, **kw)),
    ("fmn", lambda x, y, **kw: ko.fmn_attack(_f, x, y, num_steps=2, num_targets=1, **kw)),
)


def _linear_model(jit_compile=False):
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
  model.compile(optimizer="sgd",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=jit_compile)
  return model


def _vacuous(record):
  return [w for w in record if issubclass(w.category, ko.VacuousThreatModelWarning)]


class NonFiniteInputTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("nan", np.nan), ("inf", np.inf), ("minus_inf", -np.inf))
  def test_operator_norm_and_singular_values_raise(self, value):
    x = _with_nan(_data()[0], index=2, value=value)
    for fn in (lambda: ko.operator_norm(_f, x), lambda: ko.singular_values(_f, x, k=2)):
      # Names x, how many examples and which (index 2).
      with self.assertRaisesRegex(ValueError, r"`x` must be finite.*1 of 6 examples.*indices 2"):
        fn()

  def test_evaluation_functions_raise(self):
    x, y = _data()
    x = _with_nan(x)
    calls = {
        "mean_operator_norm": lambda: evaluation.mean_operator_norm(_f, x),
        "spectrum": lambda: evaluation.spectrum(_f, x, k=2),
        "robust_accuracy": lambda: evaluation.robust_accuracy(_f, x, y, epsilons=[0.1]),
        "auto_attack": lambda: ko.auto_attack(_f, x, y, epsilon=0.1, verbose=0),
        "robust_radii": lambda: evaluation.robust_radii(_f, x, y, num_steps=2),
        "dataset": lambda: evaluation.mean_operator_norm(
            _f, tf.data.Dataset.from_tensor_slices(x).batch(3)),
    }
    for name, call in calls.items():
      with self.subTest(name):
        with self.assertRaisesRegex(ValueError, r"`x` must be finite"):
          call()

  @parameterized.named_parameters(*_ATTACKS)
  def test_attacks_raise(self, attack):
    x, y = _data()
    with self.assertRaisesRegex(ValueError, r"`x` must be finite.*indices 1"):
      attack(_with_nan(x), y)

  def test_graph_mode_assertion_names_x(self):
    x = tf.constant(_with_nan(_data()[0]))
    norm = tf.function(lambda x: ko.operator_norm(_f, x).norm)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"`x` must be finite"):
      norm(x)

  def test_xla_gives_nan_for_the_nonfinite_example_only(self):
    x = _data()[0]
    sigma = np.linalg.svd(_W, compute_uv=False)[0]  # ||J||_{2,2} = sigma_max(W^T).
    bad = tf.constant(_with_nan(x, index=1))

    @tf.function(jit_compile=True)
    def run(x):
      return ko.operator_norm(_f, x).norm, ko.singular_values(_f, x, k=1).values[:, 0]

    for values in run(bad):
      values = values.numpy()
      self.assertTrue(np.isnan(values[1]))
      np.testing.assert_allclose(np.delete(values, 1), sigma, rtol=1e-4)

  def test_zero_jacobian_at_finite_x_still_gives_zero(self):
    # The zero guards stay: J = 0 at a finite x is a norm of 0, not NaN.
    zero = lambda x: 0.0 * tf.concat([x, x], axis=1)
    x = tf.constant(_data()[0])
    self.assertAllEqual(ko.operator_norm(zero, x).norm, np.zeros(6))
    compiled = tf.function(lambda x: ko.operator_norm(zero, x).norm, jit_compile=True)
    self.assertAllEqual(compiled(x), np.zeros(6))

  @parameterized.named_parameters(
      ("opnorm", lambda: ko.callbacks.OperatorNormRegularization(epsilon=0.1, num_iters=2)),
      ("adversarial", lambda: ko.callbacks.AdversarialTraining(epsilon=0.1, num_steps=2)))
  def test_fit_stops_on_a_nan_input(self, callback):
    x, y = _data(8)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"`x` must be finite"):
      _linear_model().fit(_with_nan(x), y, batch_size=8, epochs=1, verbose=0,
                          callbacks=[callback()])

  def test_fit_under_xla_reports_a_nan_metric(self):
    # XLA drops assertions: the operator-norm metric and the loss become NaN
    # (they were 0-contaminated but finite).
    x, y = _data(8)
    history = _linear_model(jit_compile=True).fit(
        _with_nan(x), y, batch_size=8, epochs=1, verbose=0,
        callbacks=[ko.callbacks.OperatorNormRegularization(epsilon=0.1, num_iters=2)])
    for key in ("loss", "opnorm", "opnorm_loss"):
      self.assertTrue(math.isnan(history.history[key][0]), key)


class OutsideClipTest(tf.test.TestCase, parameterized.TestCase):
  """Data in 0..16 with clip=(0, 1): the unscaled images of the issue."""

  def _unscaled(self):
    x, y = _data()
    return x * 16.0, y

  @parameterized.named_parameters(*_ATTACKS)
  def test_attacks_raise(self, attack):
    x, y = self._unscaled()
    # Names x, clip, the observed range and a hint.
    with self.assertRaisesRegex(
        ValueError, r"`x` must lie inside `clip`=\(0, 1\).*scale.*values in \[3\.\d+, 12\.\d+\]"):
      attack(x, y, clip=(0, 1))

  def test_evaluation_raises(self):
    x, y = self._unscaled()
    for name, call in {
        "robust_accuracy": lambda: evaluation.robust_accuracy(
            _f, x, y, epsilons=[0.1], clip=(0, 1)),
        "auto_attack": lambda: ko.auto_attack(_f, x, y, epsilon=0.1, clip=(0, 1), verbose=0),
        "robust_radii": lambda: evaluation.robust_radii(_f, x, y, num_steps=2, clip=(0, 1)),
    }.items():
      with self.subTest(name):
        with self.assertRaisesRegex(ValueError, r"`x` must lie inside `clip`"):
          call()

  def test_tolerance_accepts_rounding(self):
    # 1 + 1e-7 (one float32 ulp above 1 is 1.19e-7) is within 1e-6 * (hi - lo).
    x, y = _data()
    x[0, 0] = np.float32(1.0) + np.float32(1.2e-7)
    x_adv = ko.pgd_attack(_f, x, y, epsilon=0.1, num_steps=1, clip=(0, 1))
    self.assertLessEqual(float(tf.reduce_max(x_adv)), 1.0)
    x[0, 0] = 1.0 + 1e-5
    with self.assertRaisesRegex(ValueError, r"`x` must lie inside `clip`"):
      ko.pgd_attack(_f, x, y, epsilon=0.1, num_steps=1, clip=(0, 1))

  def test_adversarial_training_objective(self):
    x, y = self._unscaled()
    model = _linear_model()
    objective = objectives.AdversarialTraining(epsilon=0.1, num_steps=2, clip=(0, 1))
    with self.assertRaisesRegex(ValueError, r"`x` must lie inside `clip`"):
      objective(model, x, y, model(x))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"`x` must lie inside `clip`"):
      _linear_model().fit(x, y, batch_size=6, epochs=1, verbose=0, callbacks=[
          ko.callbacks.AdversarialTraining(epsilon=0.1, num_steps=2, clip=(0, 1))])


class LabelTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(*_ATTACKS)
  def test_non_integer_float_labels_raise(self, attack):
    x, y = _data()
    y = y.astype(np.float32)
    y[3] = 3.7  # Used to be truncated to class 3.
    with self.assertRaisesRegex(ValueError, r"`y` must hold integer class labels.*3\.7"):
      attack(x, y)

  @parameterized.named_parameters(*_ATTACKS)
  def test_labels_out_of_range_raise(self, attack):
    x, y = _data()
    y[2] = 7
    with self.assertRaisesRegex(ValueError, r"`y` must hold class labels in \[0, 4\).*"
                                r"num_classes=4.*value 7"):
      attack(x, y)

  def test_negative_label_raises(self):
    x, y = _data()
    y[0] = -1
    with self.assertRaisesRegex(ValueError, r"`y`.*value -1"):
      ko.pgd_attack(_f, x, y, epsilon=0.1, num_steps=1)

  def test_integer_valued_float_and_one_hot_labels_accepted(self):
    x, y = _data()
    a = ko.pgd_attack(_f, x, y, epsilon=0.1, num_steps=2, random_start=False)
    b = ko.pgd_attack(_f, x, y.astype(np.float32), epsilon=0.1, num_steps=2,
                      random_start=False)
    c = ko.pgd_attack(_f, x, np.eye(4, dtype=np.float32)[y], epsilon=0.1, num_steps=2,
                      random_start=False)
    self.assertAllClose(a, b)
    self.assertAllClose(a, c)

  def test_evaluation_labels(self):
    x, y = _data()
    for name, labels, pattern in (
        ("float", y + 0.7, r"`y` must hold integer class labels"),
        ("range", y + 3, r"`y` must hold class labels in \[0, 4\)")):
      for call in (
          lambda: evaluation.robust_accuracy(_f, x, labels, epsilons=[0.1]),
          lambda: ko.auto_attack(_f, x, labels, epsilon=0.1, verbose=0),
          lambda: evaluation.robust_radii(_f, x, labels, num_steps=2)):
        with self.subTest(name):
          with self.assertRaisesRegex(ValueError, pattern):
            call()

  def test_adversarial_training_objective_labels(self):
    x, y = _data()
    model = _linear_model()
    objective = objectives.AdversarialTraining(epsilon=0.1, num_steps=1)
    with self.assertRaisesRegex(ValueError, r"`y` must hold integer class labels.*3\.7"):
      objective(model, x, np.array([0, 1, 2, 3.7, 0, 1], np.float32), model(x))
    with self.assertRaisesRegex(ValueError, r"`y`.*\[0, 4\).*value 9"):
      objective(model, x, np.array([0, 1, 2, 9, 0, 1]), model(x))


class TensorHyperparameterTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("adv_objective", lambda **kw: objectives.AdversarialTraining(**kw)),
      ("opnorm_objective", lambda **kw: objectives.OperatorNormRegularization(**kw)),
      ("adv_callback", lambda **kw: ko.callbacks.AdversarialTraining(**kw)),
      ("opnorm_callback", lambda **kw: ko.callbacks.OperatorNormRegularization(**kw)))
  def test_invalid_variables_raise(self, make):
    for kwargs, name in (
        ({"epsilon": tf.Variable(-1.0)}, "epsilon"),
        ({"epsilon": keras.Variable(float("nan"))}, "epsilon"),
        ({"epsilon": tf.constant(0.0)}, "epsilon"),
        ({"epsilon": 0.1, "weight": tf.Variable(-0.5)}, "weight")):
      with self.subTest(name=name, kwargs=str(kwargs)):
        with self.assertRaisesRegex(ValueError, rf"`{name}` must be a (positive|non-negative)"):
          make(**kwargs)

  def test_valid_variable_accepted(self):
    eps = tf.Variable(0.25)
    objective = objectives.AdversarialTraining(epsilon=eps)
    self.assertEqual(objective.get_hyperparameter("epsilon"), 0.25)

  def test_step_size_tensor(self):
    with self.assertRaisesRegex(ValueError, r"`step_size` must be a positive"):
      objectives.AdversarialTraining(epsilon=0.1, step_size=tf.constant(-1.0))

  def test_variable_changed_after_construction_stops_the_step(self):
    # The value read inside the compiled step is asserted (non-XLA).
    eps = tf.Variable(0.1)
    objective = objectives.OperatorNormRegularization(epsilon=eps, num_iters=1)
    x, y = _data(8)
    model = _linear_model()
    eps.assign(-1.0)
    with self.assertRaisesRegex(ValueError, r"`epsilon` must be a non-negative"):
      objective(model, x, y, model(x))
    step = tf.function(lambda x: objective(model, x, None, model(x))[0], autograph=False)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"`epsilon` must be"):
      step(tf.constant(x))

  def test_schedules_check_tensor_values(self):
    with self.assertRaisesRegex(ValueError, r"`start_value` must be a non-negative"):
      LinearRamp(tf.Variable(-1.0), 1.0, ramp_epochs=2)
    ramp = LinearRamp(tf.constant(0.0), tf.Variable(1.0), ramp_epochs=2)
    self.assertEqual([ramp(e) for e in range(3)], [0.0, 0.5, 1.0])
    self.assertEqual(ramp.get_config()["end_value"], 1.0)  # A float, serialisable.


class VacuousThreatModelTest(tf.test.TestCase, parameterized.TestCase):
  """Thresholds ||(hi - lo) / 2||_p over n = 3 inputs with clip = (0, 1).

  l-inf: 1/2; l2: sqrt(3)/2 = 0.866; l1: 3/2. At these radii the ball around
  the box midpoint (0.5, 0.5, 0.5) contains the whole box.
  """

  @parameterized.named_parameters(
      ("linf", "inf", 0.5), ("l2", 2, math.sqrt(3) / 2), ("l1", 1, 1.5))
  def test_pgd_warns_at_the_threshold_only(self, p, threshold):
    x, y = _data()
    for eps, expected in ((threshold * 0.99, 0), (threshold * 1.001, 1)):
      with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ko.pgd_attack(_f, x, y, epsilon=eps, p=p, num_steps=1, clip=(0, 1))
      self.assertLen(_vacuous(record), expected, f"eps={eps}")

  def test_no_warning_without_clip(self):
    x, y = _data()
    with warnings.catch_warnings(record=True) as record:
      warnings.simplefilter("always")
      ko.pgd_attack(_f, x, y, epsilon=100.0, num_steps=1)
    self.assertEmpty(_vacuous(record))

  def test_auto_attack_warns_once(self):
    x, y = _data()
    with warnings.catch_warnings(record=True) as record:
      warnings.simplefilter("always")
      ko.auto_attack(_f, x, y, epsilon=0.6, clip=(0, 1), verbose=0,
                     version="custom", attacks=["apgd-ce", "apgd-dlr"])
    self.assertLen(_vacuous(record), 1)
    self.assertIn("auto_attack", str(_vacuous(record)[0].message))

  def test_training_warns_once_not_per_step(self):
    x, y = _data(8)
    with warnings.catch_warnings(record=True) as record:
      warnings.simplefilter("always")
      _linear_model().fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[
          ko.callbacks.AdversarialTraining(epsilon=0.5, num_steps=1, clip=(0, 1))])
    self.assertLen(_vacuous(record), 1)  # 8 steps, one warning.
    self.assertIn("AdversarialTraining", str(_vacuous(record)[0].message))

  def test_robust_accuracy_warns_for_arrays_and_datasets(self):
    # l-inf threshold 1/2 on [0, 1]^3: the same warning from arrays and from a
    # tf.data pipeline of (x, y) batches (its element spec gives the shape).
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    for data, labels in ((x, y), (dataset, None)):
      with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        evaluation.robust_accuracy(_f, data, labels, epsilons=[0.1, 0.6], p="inf",
                                   num_steps=1, clip=(0, 1))
      self.assertLen(_vacuous(record), 1, type(data).__name__)
      self.assertIn("robust_accuracy", str(_vacuous(record)[0].message))

  def test_exported(self):
    self.assertIn("VacuousThreatModelWarning", ko.__all__)
    self.assertTrue(issubclass(ko.VacuousThreatModelWarning, UserWarning))


if __name__ == "__main__":
  tf.test.main()
