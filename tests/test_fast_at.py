"""Tests of the Fast AT preset (Wong, Rice & Kolter, ICLR 2020) and step_size_factor."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import callbacks
from keras_opnorm import objectives
from keras_opnorm.objectives import adversarial_training as at_lib


def _linear(w):
  model = keras.Sequential([keras.Input((w.shape[0],)), keras.layers.Dense(w.shape[1])])
  model.set_weights([w, np.zeros(w.shape[1], np.float32)])
  return model


_W = np.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0], [-1.5, 0.25, 2.0], [2.0, 0.5, 1.0]],
              np.float32)  # n = 4, d = 3


class _RecordSteps:
  """Replaces the objective module's `pgd_attack` to record epsilon and step size."""

  def __init__(self, test):
    self.calls = []
    original = at_lib.pgd_attack

    def recording(model, x, y, *, epsilon, step_size, **kwargs):
      self.calls.append((float(epsilon), float(step_size), kwargs["num_steps"],
                         kwargs["random_start"]))
      return original(model, x, y, epsilon=epsilon, step_size=step_size, **kwargs)

    test.enter_context(tf.compat.v1.test.mock.patch.object(at_lib, "pgd_attack", recording))


class StepSizeFactorTest(tf.test.TestCase, parameterized.TestCase):

  def test_step_is_factor_times_epsilon_variable(self):
    # No random start, one l-inf step of 0.5 eps < eps (no projection):
    # x* = x + 0.5 eps sign(grad_x CE) = x + 0.5 eps sign(W (softmax(f(x)) - y)).
    model = _linear(_W)
    x = tf.constant(np.random.default_rng(0).normal(size=(6, 4)), tf.float32)
    y = tf.constant([0, 1, 2, 0, 1, 2])
    objective = objectives.AdversarialTraining(
        0.2, num_steps=1, step_size_factor=0.5, random_start=False, weight=1.0)
    objective.build(model)
    objective.set_hyperparameter("epsilon", 0.1)
    objective(model, x, y, model(x))  # Creates the variables.
    logits = x.numpy() @ _W
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    grad = (prob - np.eye(3)[y.numpy()]) @ _W.T
    x_adv = x.numpy() + 0.5 * 0.1 * np.sign(grad)
    logits_adv = x_adv @ _W
    ce = -np.log(np.exp(logits_adv[np.arange(6), y.numpy()]) / np.exp(logits_adv).sum(1))
    loss, metrics = objective(model, x, y, model(x))
    self.assertAllClose(metrics["adv_loss"], ce.mean(), rtol=1e-5)
    self.assertAllClose(loss, ce.mean(), rtol=1e-5)

  def test_exclusive_with_step_size(self):
    with self.assertRaisesRegex(ValueError, "step_size=0.1, step_size_factor=1.25"):
      objectives.AdversarialTraining(0.1, step_size=0.1, step_size_factor=1.25)
    with self.assertRaisesRegex(ValueError, "step_size_factor=0"):
      objectives.AdversarialTraining(0.1, step_size_factor=0)


class FastPresetTest(tf.test.TestCase, parameterized.TestCase):

  def test_objective_preset(self):
    objective = objectives.AdversarialTraining.fast(0.1, p=2, clip=(0.0, 1.0))
    self.assertEqual((objective.num_steps, objective.step_size, objective.step_size_factor,
                      objective.random_start, objective.p), (1, None, 1.25, True, 2.0))
    self.assertEqual(objective.clip, (0.0, 1.0))
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(objective))
    self.assertEqual(restored.get_config(), objective.get_config())
    self.assertEqual(restored.step_size_factor, 1.25)

  @parameterized.parameters("num_steps", "step_size", "random_start")
  def test_fixed_arguments_refused(self, name):
    with self.assertRaisesRegex(ValueError, f"Received: {name}="):
      objectives.AdversarialTraining.fast(0.1, **{name: 3})
    with self.assertRaisesRegex(ValueError, f"Received: {name}="):
      callbacks.AdversarialTraining.fast(0.1, **{name: 3})

  def test_linf_step_from_random_start(self):
    # x* - x = clip(delta_0 + 1.25 eps s, -eps, eps), |delta_0| <= eps uniform,
    # s = sign(grad) at x + delta_0: every |x* - x| is in [0.25 eps, eps], and
    # it reaches eps where delta_0 s >= -0.25 eps: probability 5/8 (with the
    # attack's default step 2.5 eps, or no random start: always).
    model = _linear(_W)
    x = tf.constant(np.random.default_rng(1).normal(size=(64, 4)), tf.float32)
    y = tf.constant(np.arange(64) % 3)
    eps = 0.1
    seen = {}
    original = at_lib.pgd_attack

    def capture(*args, **kwargs):
      seen["x_adv"] = original(*args, **kwargs)
      return seen["x_adv"]

    with tf.compat.v1.test.mock.patch.object(at_lib, "pgd_attack", capture):
      objective = objectives.AdversarialTraining.fast(eps)
      objective.build(model)
      objective(model, x, y, model(x))
    delta = np.abs(seen["x_adv"].numpy() - x.numpy())
    self.assertAllInRange(delta, 0.25 * eps - 1e-6, eps + 1e-6)
    saturated = np.mean(delta > eps - 1e-6)  # 256 coordinates: 0.625 +- 0.03.
    self.assertBetween(saturated, 0.5, 0.75)

  def test_callback_step_follows_warmup(self):
    # warmup_epochs=2: eps = 0.2 * (1/2, 1, 1); alpha = 1.25 eps each epoch.
    rec = _RecordSteps(self)
    model = _linear(_W)
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    cb = callbacks.AdversarialTraining.fast(0.2, warmup_epochs=2)
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[cb])
    self.assertLen(rec.calls, 3)
    self.assertAllClose([c[0] for c in rec.calls], [0.1, 0.2, 0.2])
    self.assertAllClose([c[1] for c in rec.calls], [0.125, 0.25, 0.25])
    self.assertEqual({(c[2], c[3]) for c in rec.calls}, {(1, True)})

  def test_callback_config_round_trip(self):
    cb = callbacks.AdversarialTraining.fast(0.2, p=2, warmup_epochs=2, weight=0.5)
    config = cb.get_config()
    self.assertEqual((config["num_steps"], config["step_size_factor"], config["random_start"]),
                     (1, 1.25, True))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cb))
    self.assertIsInstance(restored, callbacks.AdversarialTraining)
    self.assertEqual(restored.get_config(), config)
