"""Tests of keras_opnorm.objectives against closed forms and numpy.

Most checks use a linear model ``f(x) = W x + b`` (a Keras ``Dense`` layer
with kernel ``K = W^T``), whose Jacobian is ``J = W`` at every ``x``, with
``W = U diag(s) V^T`` built from chosen singular values ``s`` (largest
``sigma = s[0]``, top singular vectors ``u1 = U[:, 0]``, ``v1 = V[:, 0]``).
"""

import json
import os
import subprocess
import sys
import textwrap

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_opnorm import objectives
from keras_opnorm.objectives import AdversarialTraining
from keras_opnorm.objectives import Objective
from keras_opnorm.objectives import OperatorNormRegularization
from keras_opnorm.objectives import SpectralNormRegularization

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SINGULAR_VALUES = (3.0, 1.0, 0.5)


def _matrix(d, n, s=SINGULAR_VALUES, seed=0):
  """W = U diag(s) V^T of shape [d, n] with orthonormal U, V; returns (W, u1, v1)."""
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.standard_normal((d, d)))
  v, _ = np.linalg.qr(rng.standard_normal((n, n)))
  k = len(s)
  w = u[:, :k] @ np.diag(s) @ v[:, :k].T
  return w.astype("float32"), u[:, 0], v[:, 0]


def _linear_model(w, seed=1):
  d, n = w.shape
  model = keras.Sequential([keras.Input((n,)), keras.layers.Dense(d)])
  model.layers[0].kernel.assign(w.T)
  model.layers[0].bias.assign(np.random.default_rng(seed).standard_normal(d).astype("float32"))
  return model


def _batch(n, batch=4, seed=2):
  return tf.constant(np.random.default_rng(seed).standard_normal((batch, n)), tf.float32)


def _bn_model():
  return keras.Sequential([
      keras.Input((4,)),
      keras.layers.Dense(6),
      keras.layers.BatchNormalization(),
      keras.layers.ReLU(),
      keras.layers.Dropout(0.3, seed=0),
      keras.layers.Dense(3),
  ])


def _moving_stats(model):
  return [v.numpy().copy() for v in model.non_trainable_variables
          if "moving" in v.name]


def _seed_states(model):
  return [v.numpy().copy() for v in model.non_trainable_variables
          if "seed_generator" in v.name]


def _loss_and_grads(objective, model, x, y=None, sample_weight=None):
  with tf.GradientTape() as tape:
    y_pred = model(x, training=True)
    loss, metrics = objective(model, x, y, y_pred, sample_weight=sample_weight)
  grads = tape.gradient(loss, model.trainable_variables)
  return loss, metrics, grads


class BaseTest(tf.test.TestCase, parameterized.TestCase):

  def test_weighted_batch_mean_by_hand(self):
    # (1*1 + 0*2 + 3*3 + 0*4) / 4 = 2.5: a zero weight removes an example but
    # the denominator stays the batch size (Keras "sum_over_batch_size").
    mean = objectives.weighted_batch_mean(
        tf.constant([1.0, 2.0, 3.0, 4.0]), tf.constant([[1.0], [0.0], [3.0], [0.0]]))
    self.assertAllClose(mean, 2.5)
    self.assertAllClose(objectives.weighted_batch_mean(tf.constant([1.0, 2.0])), 1.5)

  @parameterized.named_parameters(
      ("dense_softmax", lambda: keras.Sequential(
          [keras.Input((3,)), keras.layers.Dense(2, activation="softmax", name="probs")]),
       "softmax", "probs"),
      ("activation_layer", lambda: keras.Sequential(
          [keras.Input((3,)), keras.layers.Dense(2), keras.layers.Activation("sigmoid", name="act")]),
       "sigmoid", "act"),
      ("softmax_layer", lambda: keras.Sequential(
          [keras.Input((3,)), keras.layers.Dense(2), keras.layers.Softmax(name="sm")]),
       "softmax", "sm"),
  )
  def test_probability_outputs_are_rejected(self, make, activation, layer_name):
    with self.assertRaisesRegex(ValueError, f"{activation} activation on layer '{layer_name}'.*logits"):
      OperatorNormRegularization(epsilon=0.1).build(make())

  def test_probability_outputs_functional_and_nested(self):
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(keras.layers.Dense(4)(inputs))
    functional = keras.Model(inputs, outputs)
    with self.assertRaisesRegex(ValueError, "layer 'head'"):
      AdversarialTraining(epsilon=0.1).build(functional)
    nested = keras.Sequential([keras.Input((3,)), functional])
    with self.assertRaisesRegex(ValueError, "layer 'head'"):
      AdversarialTraining(epsilon=0.1).build(nested)

  def test_logit_models_pass_and_state_stays_off_the_model(self):
    model = _bn_model()
    n_weights = len(model.weights)
    for objective in (AdversarialTraining(epsilon=0.1), OperatorNormRegularization(epsilon=0.1),
                      SpectralNormRegularization()):
      objective.build(model)
      objective.build(model)  # idempotent
      self.assertTrue(objective.built)
      for v in objective.variables:
        self.assertFalse(v.trainable)
    self.assertLen(model.weights, n_weights)

  def test_spectral_norm_ignores_output_activation(self):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    SpectralNormRegularization().build(model)

  @parameterized.named_parameters(
      ("adv_weight", lambda: AdversarialTraining(epsilon=0.1, weight=-1.0), ValueError, "weight"),
      ("adv_eps_zero", lambda: AdversarialTraining(epsilon=0.0), ValueError, "epsilon"),
      ("adv_eps_neg", lambda: AdversarialTraining(epsilon=-0.5), ValueError, "epsilon"),
      ("adv_loss", lambda: AdversarialTraining(epsilon=0.1, loss="mse"), ValueError, "loss"),
      ("adv_steps", lambda: AdversarialTraining(epsilon=0.1, num_steps=0), ValueError, "num_steps"),
      ("adv_p", lambda: AdversarialTraining(epsilon=0.1, p=0.5), ValueError, "`p`"),
      ("adv_step_size", lambda: AdversarialTraining(epsilon=0.1, step_size=0.0), ValueError,
       "step_size"),
      ("adv_clip", lambda: AdversarialTraining(epsilon=0.1, clip=(1.0, 0.0)), ValueError, "clip"),
      ("adv_replace", lambda: AdversarialTraining(epsilon=0.1, loss="logit", replace_clean_loss=True),
       ValueError, "replace_clean_loss"),
      ("op_weight", lambda: OperatorNormRegularization(epsilon=0.1, weight=-1e-3), ValueError, "weight"),
      ("op_eps", lambda: OperatorNormRegularization(epsilon=0), ValueError, "epsilon"),
      ("op_form", lambda: OperatorNormRegularization(epsilon=0.1, form="frobenius"), ValueError, "form"),
      ("op_iters", lambda: OperatorNormRegularization(epsilon=0.1, num_iters=0), ValueError, "num_iters"),
      ("op_q", lambda: OperatorNormRegularization(epsilon=0.1, q=0), ValueError, "`q`"),
      ("op_warm_exact", lambda: OperatorNormRegularization(epsilon=0.1, warm_start=True,
                                                            direction="exact"),
       ValueError, "warm_start"),
      ("op_warm_capacity", lambda: OperatorNormRegularization(epsilon=0.1, warm_start=True,
                                                               warm_start_capacity=0),
       ValueError, "warm_start_capacity=0"),
      ("op_jvp", lambda: OperatorNormRegularization(epsilon=0.1, jvp_mode="reverse"), ValueError,
       "jvp_mode"),
      ("snr_weight", lambda: SpectralNormRegularization(weight=-3e-4), ValueError, "weight"),
      ("snr_iters", lambda: SpectralNormRegularization(num_iters=0), ValueError, "num_iters"),
      ("snr_iters_type", lambda: SpectralNormRegularization(num_iters=1.5), TypeError, "num_iters"),
      ("name", lambda: SpectralNormRegularization(name="a/b"), ValueError, "name"),
  )
  def test_bad_arguments(self, make, error, pattern):
    with self.assertRaisesRegex(error, pattern):
      make()

  def test_hyperparameters(self):
    objective = OperatorNormRegularization(epsilon=0.5, weight=0.1)
    self.assertEqual(objective.hyperparameters, ("epsilon", "weight"))
    objective.set_hyperparameter("weight", 0.25)  # before build: stored
    objective.build(_linear_model(_matrix(3, 4)[0]))
    self.assertEqual(objective.get_hyperparameter("weight"), 0.25)
    objective.set_hyperparameter("epsilon", 0.0)  # a ramp may start at 0
    self.assertEqual(objective.get_hyperparameter("epsilon"), 0.0)
    self.assertEqual(objective.get_config()["epsilon"], 0.0)
    with self.assertRaisesRegex(ValueError, "weight"):
      objective.set_hyperparameter("weight", -1.0)
    with self.assertRaisesRegex(ValueError, "one of"):
      objective.set_hyperparameter("step_size", 1.0)

  def test_user_variable_is_used(self):
    weight = keras.Variable(0.5, trainable=False)
    objective = SpectralNormRegularization(weight=weight)
    objective.build(_linear_model(_matrix(3, 4)[0]))
    weight.assign(2.0)
    self.assertEqual(objective.get_hyperparameter("weight"), 2.0)
    objective.set_hyperparameter("weight", 3.0)
    self.assertAllClose(weight.numpy(), 3.0)

  @parameterized.named_parameters(
      ("adv", lambda: AdversarialTraining(epsilon=0.3, p=2, loss="logit", num_steps=1), "adv"),
      ("opnorm", lambda: OperatorNormRegularization(epsilon=0.3, num_iters=2), "opnorm"),
      ("snr", lambda: SpectralNormRegularization(weight=1.0), "spectral_norm"),
  )
  def test_schedules_do_not_retrace(self, make, name):
    model = _linear_model(_matrix(3, 4)[0])
    objective = make()
    objective.build(model)
    x = _batch(4)
    traces = []

    @tf.function
    def step(x):
      traces.append(1)
      return objective(model, x, None, model(x, training=True))

    for weight in (0.5, 2.0):
      objective.set_hyperparameter("weight", weight)
      if "epsilon" in objective.hyperparameters:
        objective.set_hyperparameter("epsilon", 2 * weight)
      loss, metrics = step(x)
      # The term is the weight times the unweighted `{name}_loss` metric.
      self.assertAllClose(loss, weight * metrics[f"{name}_loss"], rtol=1e-6)
      self.assertGreater(float(loss), 0.0)
    self.assertLen(traces, 1)

  @parameterized.named_parameters(
      ("adv", lambda: AdversarialTraining(
          epsilon=0.25, p="inf", num_steps=3, step_size=0.1, loss="logit", q=1, weight=0.5,
          squared=True, random_start=False, clip=(-1.0, 1.0), attack_training=True,
          forward_training=False, update_batch_stats=True, name="adv_l1")),
      ("adv_madry", lambda: AdversarialTraining(epsilon=0.1, replace_clean_loss=True)),
      ("opnorm", lambda: OperatorNormRegularization(
          epsilon=1.75, p="inf", q=1, weight=0.1, num_iters=3, form="jacobian",
          power_training=True, jvp_mode="double_backward")),
      ("snr", lambda: SpectralNormRegularization(weight=1e-3, num_iters=2, seed=3, name="gsnr")),
  )
  def test_config_round_trip(self, make):
    objective = make()
    config = objective.get_config()
    json.dumps(config)  # JSON-safe ('inf' as a string)
    clone = type(objective).from_config(config)
    self.assertEqual(clone.get_config(), config)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(objective))
    self.assertIsInstance(restored, type(objective))
    self.assertEqual(restored.get_config(), config)
    self.assertEqual(restored.clean_loss_weight, objective.clean_loss_weight)

  def test_clean_loss_weight(self):
    self.assertEqual(AdversarialTraining(epsilon=0.1).clean_loss_weight, 1.0)
    self.assertEqual(AdversarialTraining(epsilon=0.1, replace_clean_loss=True).clean_loss_weight, 0.0)
    self.assertEqual(OperatorNormRegularization(epsilon=0.1).clean_loss_weight, 1.0)
    self.assertEqual(SpectralNormRegularization().clean_loss_weight, 1.0)

  @parameterized.parameters("mixed_float16", "mixed_bfloat16")
  def test_mixed_precision(self, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
      model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"),
                                keras.layers.Dense(3)])
    finally:
      keras.mixed_precision.set_global_policy("float32")
    x, y = _batch(4), tf.constant([0, 1, 2, 1])
    for objective in (AdversarialTraining(epsilon=0.3, p=2, num_steps=2),
                      OperatorNormRegularization(epsilon=0.3, num_iters=2),
                      OperatorNormRegularization(epsilon=0.3, num_iters=2, form="jacobian"),
                      SpectralNormRegularization()):
      loss, metrics, grads = _loss_and_grads(objective, model, x, y)
      self.assertEqual(loss.dtype, tf.float32)
      self.assertTrue(np.isfinite(loss.numpy()) and loss.numpy() > 0, objective)
      for value in metrics.values():
        self.assertEqual(value.dtype, tf.float32)
      self.assertTrue(all(np.all(np.isfinite(g)) for g in grads if g is not None))

  def test_subclassed_model(self):

    class TwoLayers(keras.Model):

      def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(5)
        self.head = keras.layers.Dense(3)

      def call(self, x, training=False):
        return self.head(tf.nn.relu(self.hidden(x)))

    model = TwoLayers()
    x, y = _batch(4), tf.constant([0, 1, 2, 1])
    model(x)
    snr = SpectralNormRegularization()
    snr.build(model)
    self.assertEqual(snr.kernel_layers, [model.hidden, model.head])
    for objective in (AdversarialTraining(epsilon=0.3, p=2, num_steps=2),
                      OperatorNormRegularization(epsilon=0.3, num_iters=2), snr):
      loss, _, grads = _loss_and_grads(objective, model, x, y)
      self.assertGreater(float(loss), 0.0)
      self.assertTrue(all(g is not None and np.any(g != 0) for g in grads[::2]))

  def test_custom_objective(self):

    class LogitSquares(Objective):
      default_name = "logit_sq"

      def call(self, model, x, y, y_pred, sample_weight=None):
        per_example = tf.reduce_sum(tf.square(y_pred), axis=-1)
        loss = objectives.weighted_batch_mean(per_example, sample_weight)
        return loss, {"logit_sq": loss}

    loss, metrics = LogitSquares()(None, None, None, tf.constant([[1.0, 2.0], [0.0, 1.0]]))
    self.assertAllClose(loss, 3.0)  # (5 + 1) / 2
    self.assertEqual(list(metrics), ["logit_sq"])


class SpectralNormRegularizationTest(tf.test.TestCase, parameterized.TestCase):

  def test_kernel_matrix_convention(self):
    kernel = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype("float32")
    w = objectives.kernel_matrix(kernel)
    # (out, in*k*k): row o holds kernel[..., o] flattened.
    self.assertEqual(w.shape, (5, 24))
    self.assertAllClose(w[1], kernel[..., 1].reshape(-1))
    w_t = objectives.kernel_matrix(kernel, out_axis=-2)  # ConvTranspose: (k, k, out, in)
    self.assertAllClose(w_t[2], kernel[:, :, 2, :].reshape(-1))

  def test_power_iteration_matches_svd_and_zero_is_finite(self):
    w, u1, v1 = _matrix(4, 6)
    sigma, u, v = objectives.spectral_norm_power_iteration(w, tf.ones([4]), num_iters=30)
    self.assertAllClose(sigma, SINGULAR_VALUES[0], rtol=1e-5)
    self.assertAllClose(np.abs(np.dot(u, u1)), 1.0, atol=1e-5)
    self.assertAllClose(np.abs(np.dot(v, v1)), 1.0, atol=1e-5)
    # W = 0: sigma = 0, the vector is kept, no NaN.
    w0 = tf.Variable(tf.zeros([3, 2]))
    with tf.GradientTape() as tape:
      sigma, u, _ = objectives.spectral_norm_power_iteration(w0, tf.constant([0.6, 0.8, 0.0]))
    self.assertAllClose(sigma, 0.0)
    self.assertAllClose(u, [0.6, 0.8, 0.0])
    self.assertAllEqual(np.isfinite(tape.gradient(sigma, w0)), np.ones([3, 2], bool))

  def _conv_model(self):
    inner = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(5, 3, padding="same")],
                             name="inner")
    return keras.Sequential([
        keras.Input((4, 4, 2)),
        keras.layers.Conv2D(3, 2, padding="same"),
        inner,
        keras.layers.Conv2DTranspose(2, 2),
        keras.layers.Reshape((5 * 5, 2)),
        keras.layers.Conv1D(3, 2),
        keras.layers.Flatten(),
        keras.layers.Dense(4),
    ])

  def test_converges_to_sum_of_squared_singular_values(self):
    model = self._conv_model()
    objective = SpectralNormRegularization(weight=0.3, num_iters=1, seed=0)
    objective.build(model)
    self.assertLen(objective.kernel_layers, 5)
    step = tf.function(lambda: objective(model, None, None, None))
    for _ in range(150):  # one power iteration per step
      loss, metrics = step()
    # numpy: the (out, in*k*k) matrices; ConvTranspose kernels are (k, k, out, in).
    sigmas = []
    for layer in objective.kernel_layers:
      k = layer.kernel.numpy()
      if isinstance(layer, keras.layers.Conv2DTranspose):
        m = np.moveaxis(k, -2, 0).reshape(k.shape[-2], -1)
      else:
        m = np.moveaxis(k, -1, 0).reshape(k.shape[-1], -1)
      sigmas.append(np.linalg.svd(m, compute_uv=False)[0])
    sigmas = np.array(sigmas)
    self.assertAllClose(loss, 0.3 / 2 * np.sum(sigmas ** 2), rtol=1e-3)
    self.assertAllClose(metrics["spectral_norm_max"], sigmas.max(), rtol=1e-3)
    self.assertAllClose(metrics["spectral_norm_loss"], 0.5 * np.sum(sigmas ** 2), rtol=1e-3)

  @parameterized.parameters(False, True)
  def test_gradient_is_weight_sigma_u_vT(self, jit_compile):
    # d/dW [lambda/2 sigma(W)^2] = lambda sigma u1 v1^T; a Dense kernel is W^T.
    w, u1, v1 = _matrix(3, 5)
    model = _linear_model(w)
    objective = SpectralNormRegularization(weight=0.7, num_iters=40)
    objective.build(model)

    @tf.function(jit_compile=jit_compile)
    def step():
      with tf.GradientTape() as tape:
        loss, _ = objective(model, None, None, None)
      return loss, tape.gradient(loss, model.layers[0].kernel)

    loss, grad = step()
    self.assertAllClose(loss, 0.7 / 2 * 9.0, rtol=1e-4)
    self.assertAllClose(grad, 0.7 * 3.0 * np.outer(v1, u1), atol=1e-4)

  def test_no_kernels_is_an_error(self):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Activation("relu")], name="kernel_free")
    with self.assertRaisesRegex(ValueError, "no Dense or Conv kernels.*kernel_free"):
      SpectralNormRegularization().build(model)

  def test_unbuilt_model_defers_the_vectors_to_the_first_call(self):
    # More in test_snr_unbuilt.py (fit, RobustModel, same as the built path).
    model = keras.Sequential([keras.layers.Dense(3)])
    objective = SpectralNormRegularization(weight=1.0, num_iters=50)
    objective.build(model)
    self.assertEqual(objective.kernel_layers, [])
    model(np.ones((1, 4), np.float32))
    loss, _ = objective(model, None, None, None)
    sigma = np.linalg.svd(model.layers[0].kernel.numpy(), compute_uv=False)[0]
    self.assertAllClose(loss, 0.5 * sigma ** 2, rtol=1e-4)

  def test_persistent_vectors_are_objective_state(self):
    model = _linear_model(_matrix(3, 5)[0])
    objective = SpectralNormRegularization(seed=0)
    objective.build(model)
    (u_var,) = objective.variables[1:]
    before = u_var.numpy().copy()
    objective(model, None, None, None)
    self.assertNotAllClose(u_var.numpy(), before)
    self.assertAllClose(np.linalg.norm(u_var.numpy()), 1.0)


class OperatorNormRegularizationTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(form=["sum_of_squares", "jacobian"], jit_compile=[None, True])
  def test_linear_model_closed_form(self, form, jit_compile):
    # f = W x + b: f(x + eps v) - f(x) = eps W v and J v = W v, so after
    # convergence (v = +-v1) both forms are lambda/2 eps^2 sigma^2 per example,
    # and d/dW = lambda eps^2 sigma u1 v1^T (the Dense kernel K = W^T gets its
    # transpose); the bias gets no gradient.
    w, u1, v1 = _matrix(3, 5)
    model = _linear_model(w)
    lam, eps = 0.2, 0.5
    objective = OperatorNormRegularization(epsilon=eps, weight=lam, num_iters=30, form=form)
    objective.build(model)
    x = _batch(5)
    fn = lambda x: _loss_and_grads(objective, model, x)
    if jit_compile is not None:
      fn = tf.function(fn, jit_compile=jit_compile)
    loss, metrics, grads = fn(x)
    self.assertAllClose(loss, lam / 2 * eps ** 2 * 9.0, rtol=1e-4)
    self.assertAllClose(metrics["opnorm"], 3.0, rtol=1e-4)
    self.assertAllClose(metrics["opnorm_loss"], eps ** 2 * 9.0 / 2, rtol=1e-4)
    self.assertAllClose(grads[0], lam * eps ** 2 * 3.0 * np.outer(v1, u1), atol=1e-4)
    # The bias does not change J (None: no path; or an exact zero).
    self.assertTrue(grads[1] is None or np.allclose(grads[1], 0.0, atol=1e-5))

  def test_jacobian_form_double_backward(self):
    # Same closed form as above with J v from the double-backward trick
    # (reverse-over-reverse inside the outer tape).
    w, u1, v1 = _matrix(3, 5)
    model = _linear_model(w)
    objective = OperatorNormRegularization(
        epsilon=0.5, weight=0.2, num_iters=30, form="jacobian", jvp_mode="double_backward")
    loss, _, grads = _loss_and_grads(objective, model, _batch(5))
    self.assertAllClose(loss, 0.1 * 0.25 * 9.0, rtol=1e-4)
    self.assertAllClose(grads[0], 0.2 * 0.25 * 3.0 * np.outer(v1, u1), atol=1e-4)

  def test_sample_weight(self):
    # The per-example term is the same c = lambda/2 eps^2 sigma^2 for every
    # example of a linear model: weights (1, 0, 3, 0) give c * 4 / 4.
    model = _linear_model(_matrix(3, 5)[0])
    objective = OperatorNormRegularization(epsilon=0.5, weight=0.2, num_iters=30)
    x = _batch(5)
    loss, _, _ = _loss_and_grads(objective, model, x, sample_weight=tf.constant([1.0, 0.0, 3.0, 0.0]))
    self.assertAllClose(loss, 0.1 * 0.25 * 9.0, rtol=1e-4)
    loss, _, _ = _loss_and_grads(objective, model, x, sample_weight=tf.constant([0.0, 0.0, 2.0, 0.0]))
    self.assertAllClose(loss, 0.1 * 0.25 * 9.0 / 2, rtol=1e-4)

  @parameterized.parameters(("inf", 1), (2, "inf"), (1.5, 3))
  def test_other_norms_are_finite_with_gradients(self, p, q):
    model = _bn_model()
    objective = OperatorNormRegularization(epsilon=0.1, p=p, q=q, num_iters=3)
    loss, metrics, grads = _loss_and_grads(objective, model, _batch(4))
    self.assertTrue(np.isfinite(loss.numpy()) and loss.numpy() > 0)
    self.assertGreater(float(metrics["opnorm"]), 0.0)
    kernel_grads = [g for g, v in zip(grads, model.trainable_variables) if "kernel" in v.name]
    for g in kernel_grads:
      self.assertTrue(np.all(np.isfinite(g)) and np.any(g != 0))

  @parameterized.parameters("sum_of_squares", "jacobian")
  def test_batch_norm_statistics_do_not_move(self, form):
    model = _bn_model()
    x = _batch(4)
    objective = OperatorNormRegularization(epsilon=0.1, num_iters=2, form=form)
    y_pred = model(x, training=True)  # the train step's own clean pass
    stats, seeds = _moving_stats(model), _seed_states(model)
    objective(model, x, None, y_pred)
    self.assertAllClose(_moving_stats(model), stats)
    # The training-mode penalty pass still draws dropout masks: the seed
    # state advances (it is not frozen with the batch-norm statistics).
    self.assertNotAllClose(_seed_states(model)[0], seeds[0])

  def test_zero_epsilon_and_zero_jacobian_are_finite(self):
    model = _linear_model(np.zeros((3, 5), "float32"))
    objective = OperatorNormRegularization(epsilon=0.5, num_iters=3)
    loss, metrics, grads = _loss_and_grads(objective, model, _batch(5))
    self.assertAllClose(loss, 0.0)
    self.assertAllClose(metrics["opnorm"], 0.0)
    self.assertTrue(all(g is None or np.all(np.isfinite(g)) for g in grads))
    objective = OperatorNormRegularization(epsilon=0.5, num_iters=3, form="jacobian")
    objective.build(_linear_model(_matrix(3, 5)[0]))
    objective.set_hyperparameter("epsilon", 0.0)
    loss, _, grads = _loss_and_grads(objective, _linear_model(_matrix(3, 5)[0]), _batch(5))
    self.assertAllClose(loss, 0.0)
    self.assertTrue(all(g is None or np.all(np.isfinite(g)) for g in grads))

  def test_dict_input_to_a_single_input_model_is_keras_error(self):
    # Dict inputs are packed (tests/test_model_io.py); a model that does not
    # take them fails in its own call, naming its inputs.
    model = _linear_model(_matrix(3, 5)[0])
    with self.assertRaisesRegex(ValueError, "inputs"):
      OperatorNormRegularization(epsilon=0.1)(model, {"a": _batch(5)}, None, None)


class AdversarialTrainingTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(("eager", False, None), ("squared_xla", True, True),
                                  ("graph", False, False))
  def test_logit_loss_is_weight_eps_sigma(self, squared, jit_compile):
    # Theorem (Roth et al. 2020): PGD-l2 with a large step on ||f(x*) - f(x)||_2
    # is the power method; for f = W x + b the maximum over the eps-ball is
    # eps * sigma_max(W), so the term is lambda * eps * sigma (squared:
    # lambda * eps^2 * sigma^2).
    w, _, _ = _matrix(3, 5)
    model = _linear_model(w)
    lam, eps = 0.3, 0.2
    objective = AdversarialTraining(
        epsilon=eps, p=2, loss="logit", q=2, num_steps=30, step_size=100 * eps, weight=lam,
        squared=squared)
    fn = lambda x: _loss_and_grads(objective, model, x)
    if jit_compile is not None:
      fn = tf.function(fn, jit_compile=jit_compile)
    loss, metrics, grads = fn(_batch(5))
    expected = eps ** 2 * 9.0 if squared else eps * 3.0
    self.assertAllClose(loss, lam * expected, rtol=1e-4)
    self.assertAllClose(metrics["adv_loss"], expected, rtol=1e-4)
    self.assertTrue(np.all(np.isfinite(grads[0])) and np.any(grads[0] != 0))

  def _two_class(self):
    # Logits z = K^T x + b with two classes; margin m_i = z_y - z_o.
    rng = np.random.default_rng(5)
    kernel = rng.standard_normal((4, 2)).astype("float32")
    bias = np.array([0.3, -0.2], "float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.layers[0].kernel.assign(kernel)
    model.layers[0].bias.assign(bias)
    x = rng.standard_normal((4, 4)).astype("float32")
    y = np.array([0, 1, 1, 0])
    return model, kernel, bias, x, y

  def _crossentropy_closed_form(self, kernel, bias, x, y, eps):
    # CE(y, z) = softplus(-m) for two classes. m is linear in x with gradient
    # w_y - w_o, so the l2-ball minimiser of m is x - eps (w_y - w_o)/||.||
    # and the maximal CE is softplus(-(m - eps ||w_y - w_o||)).
    z = x @ kernel + bias
    sign = np.where(y == 0, 1.0, -1.0)
    margin = sign * (z[:, 0] - z[:, 1])
    dw = np.linalg.norm(kernel[:, 0] - kernel[:, 1])
    adv_margin = margin - eps * dw
    return np.log1p(np.exp(-adv_margin)), adv_margin > 0

  @parameterized.named_parameters(
      ("sparse", lambda y: tf.constant(y)),
      ("sparse_column", lambda y: tf.constant(y[:, None])),
      ("float_sparse", lambda y: tf.constant(y, tf.float32)),
      ("one_hot", lambda y: tf.one_hot(y, 2)),
  )
  def test_crossentropy_closed_form_and_labels(self, make_labels):
    model, kernel, bias, x, y = self._two_class()
    eps = 0.4
    objective = AdversarialTraining(epsilon=eps, p=2, num_steps=5, step_size=10.0, weight=0.5)
    loss, metrics, grads = _loss_and_grads(objective, model, tf.constant(x), make_labels(y))
    ce, correct = self._crossentropy_closed_form(kernel, bias, x, y, eps)
    self.assertAllClose(loss, 0.5 * ce.mean(), rtol=1e-4)
    self.assertAllClose(metrics["adv_loss"], ce.mean(), rtol=1e-4)
    self.assertAllClose(metrics["adv_accuracy"], correct.mean())
    self.assertTrue(np.all(np.isfinite(grads[0])) and np.any(grads[0] != 0))

  def test_sample_weight_by_hand(self):
    model, kernel, bias, x, y = self._two_class()
    eps = 0.4
    objective = AdversarialTraining(epsilon=eps, p=2, num_steps=5, step_size=10.0)
    sw = np.array([2.0, 0.0, 1.0, 0.0], "float32")
    loss, _, _ = _loss_and_grads(objective, model, tf.constant(x), tf.constant(y),
                                 sample_weight=tf.constant(sw))
    ce, _ = self._crossentropy_closed_form(kernel, bias, x, y, eps)
    self.assertAllClose(loss, (2 * ce[0] + ce[2]) / 4, rtol=1e-4)

  def test_kl_is_trades_and_differentiable_in_both_passes(self):
    # kl_divergence by hand: P = softmax(0, 0) = (1/2, 1/2),
    # Q = softmax(0, log 3) = (1/4, 3/4): KL = 1/2 log 2 + 1/2 log(2/3).
    kl = objectives.kl_divergence(tf.constant([[0.0, 0.0]]), tf.constant([[0.0, np.log(3.0)]]))
    self.assertAllClose(kl, [0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0)])
    model = _bn_model()
    objective = AdversarialTraining(epsilon=0.5, p=2, loss="kl", num_steps=3, weight=6.0)
    loss, metrics, grads = _loss_and_grads(objective, model, _batch(4))
    self.assertGreater(float(metrics["adv_loss"]), 0.0)
    self.assertAllClose(loss, 6.0 * metrics["adv_loss"])
    for g in grads:
      self.assertTrue(np.all(np.isfinite(g)))
    self.assertTrue(any(np.any(g != 0) for g in grads))

  @parameterized.named_parameters(
      ("default", {}, False),
      ("attack_training", {"attack_training": True, "update_batch_stats": False}, True),
      ("update_batch_stats", {"update_batch_stats": True}, True),
      ("inference_forward", {"forward_training": False}, False),
  )
  def test_batch_norm_statistics(self, flags, moved):
    model = _bn_model()
    x = _batch(4)
    objective = AdversarialTraining(epsilon=0.5, p=2, loss="logit", num_steps=2, **flags)
    y_pred = model(x, training=True)  # the train step's clean pass
    stats = _moving_stats(model)
    objective(model, x, None, y_pred)
    if moved:
      self.assertNotAllClose(_moving_stats(model)[0], stats[0])
    else:
      self.assertAllClose(_moving_stats(model), stats)

  def test_zero_epsilon_from_a_schedule(self):
    model, _, _, x, y = self._two_class()
    objective = AdversarialTraining(epsilon=0.3, p=2, loss="logit")
    objective.build(model)
    objective.set_hyperparameter("epsilon", 0.0)
    loss, _, grads = _loss_and_grads(objective, model, tf.constant(x), tf.constant(y))
    self.assertAllClose(loss, 0.0, atol=1e-6)
    self.assertTrue(all(np.all(np.isfinite(g)) for g in grads))

  def test_missing_labels_and_single_logit(self):
    model, _, _, x, _ = self._two_class()
    with self.assertRaisesRegex(ValueError, "needs the labels"):
      AdversarialTraining(epsilon=0.1)(model, tf.constant(x), None, model(x))
    one_logit = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with self.assertRaisesRegex(ValueError, "num_classes >= 2"):
      AdversarialTraining(epsilon=0.1, loss="kl")(one_logit, tf.constant(x), None, one_logit(x))


@pytest.mark.slow
class DistributedTest(tf.test.TestCase):
  """Spectral norm state under tf.distribute.MirroredStrategy (2 logical CPUs).

  A subprocess, because logical devices must be configured before
  TensorFlow initialises its devices.
  """

  def test_mirrored_strategy_replica_updates(self):
    script = textwrap.dedent("""
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        import numpy as np
        from keras_opnorm.objectives import SpectralNormRegularization

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        # XLA is left out: on logical CPU devices an XLA cluster cannot read
        # the mirrored variables of the second replica (TF known issue
        # "tf.Variable on a different device"), for any Keras model.
        keras.utils.set_random_seed(0)
        with strategy.scope():
          model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5),
                                    keras.layers.Dense(3)])
        objective = SpectralNormRegularization(weight=0.5, seed=0)
        objective.build(model)

        @tf.function(jit_compile=False)
        def replica_step():
          with tf.GradientTape() as tape:
            loss, _ = objective(model, None, None, None)
          return loss, tape.gradient(loss, model.trainable_variables)

        @tf.function
        def step():
          return strategy.run(replica_step)

        for _ in range(60):
          loss, grads = step()
        objective.set_hyperparameter("weight", 1.0)  # cross-replica assign
        loss, grads = step()
        sig = [float(np.linalg.svd(l.kernel.numpy(), compute_uv=False)[0])
               for l in model.layers]
        u_replicas = [[r.numpy().tolist() for r in strategy.experimental_local_results(v.value)]
                      for v in objective.variables[1:]]
        out = {
            "loss": [float(l) for l in strategy.experimental_local_results(loss)],
            "expected": 0.5 * sum(s * s for s in sig),
            "u": u_replicas,
            "sync": [type(v.value).__name__ for v in objective.variables[1:]],
        }
        print("RESULT" + json.dumps(out))
    """)
    env = dict(os.environ, PYTHONPATH=_REPO, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    r = json.loads(line[len("RESULT"):])
    self.assertEqual(r["sync"], ["SyncOnReadVariable"] * 2)
    # Each replica's term is the full lambda/2 sum sigma^2 (the train step
    # divides by the number of replicas); the replicas agree.
    self.assertAllClose(r["loss"], [r["expected"]] * 2, rtol=1e-4)
    for replicas in r["u"]:
      self.assertAllClose(replicas[0], replicas[1], atol=1e-6)
