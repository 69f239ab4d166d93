"""Tests of keras_opnorm.training: the regularised train step and its installation."""

import gc
import weakref

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import callbacks
from keras_opnorm import training
import training_testlib as tl

LR = 0.1
WEIGHT = 0.5


def _fit_one_step(model, x, y, cbs, **kwargs):
  # One full batch = one step, no shuffling: the expected update is one SGD step.
  return model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0,
                   callbacks=cbs, **kwargs)


class TrainStepTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(kind=["sequential", "functional", "subclassed"],
                         jit_compile=[False, True])
  def test_one_step_matches_hand_derived_sgd(self, kind, jit_compile):
    x, y = tl.data()
    w0 = tl.linear_weights()
    model = tl.compile_mse(tl.linear_model(kind, weights=w0), LR, jit_compile=jit_compile)
    objective = tl.SquaredLogits(WEIGHT)
    history = _fit_one_step(model, x, y, [callbacks.ObjectiveCallback(objective)])
    # Expected: one SGD step of MSE + WEIGHT * mean_j F^2 (derivation in
    # training_testlib.expected_linear_sgd).
    expected = tl.expected_linear_sgd(w0, x, y, lr=LR, weight=WEIGHT)
    tl.assert_weights_close(self, model.get_weights(), expected)
    # The logged loss is the total at the initial weights:
    # sum_i ||F-Y||^2/(n d) + WEIGHT * sum_i ||F||^2/(n d).
    f = x @ w0[0] + w0[1]
    self.assertAllClose(history.history["loss"][0],
                        np.mean((f - y) ** 2) + WEIGHT * np.mean(f ** 2), rtol=1e-5)
    self.assertAllClose(history.history["sq_sq"][0], np.mean(f ** 2), rtol=1e-5)
    # Restored: the class' own step, no keras_opnorm attribute left.
    self.assertNotIn("train_step", model.__dict__)
    self.assertNotIn("make_train_function", model.__dict__)
    self.assertEqual(training.installed_objectives(model), [])

  def test_sample_weight_respected(self):
    x, y = tl.data()
    w0 = tl.linear_weights()
    sw = np.array([1, 0, 2, 1, 0, 1, 1, 3], np.float32)
    model = tl.compile_mse(tl.linear_model(weights=w0), LR)
    _fit_one_step(model, x, y, [callbacks.ObjectiveCallback(tl.SquaredLogits(WEIGHT))],
                  sample_weight=sw)
    expected = tl.expected_linear_sgd(w0, x, y, lr=LR, weight=WEIGHT, sample_weight=sw)
    tl.assert_weights_close(self, model.get_weights(), expected)

  def test_clean_loss_weight_zero_keeps_regularizer_losses(self):
    # The compiled MSE is dropped; an L2 kernel regulariser (c * ||W||^2, a
    # model loss) stays: dL/dW = 2 WEIGHT X^T F / (n d) + 2 c W.
    x, y = tl.data()
    w0 = tl.linear_weights()
    c = 0.01
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        2, kernel_regularizer=keras.regularizers.L2(c))])
    model.set_weights(w0)
    tl.compile_mse(model, LR)
    _fit_one_step(model, x, y, [callbacks.ObjectiveCallback(
        tl.SquaredLogits(WEIGHT, replace_clean_loss=True))])
    expected = tl.expected_linear_sgd(w0, x, y, lr=LR, weight=WEIGHT, clean=0.0)
    expected[0] = expected[0] - LR * 2 * c * w0[0]
    tl.assert_weights_close(self, model.get_weights(), expected)

  def test_two_callbacks_combine_into_one_step(self):
    x, y = tl.data()
    w0 = tl.linear_weights()
    model = tl.compile_mse(tl.linear_model(weights=w0), LR)
    rec = tl.Recorder()
    a, b = tl.SquaredLogits(0.2, name="a"), tl.SquaredLogits(0.3, name="b")
    history = _fit_one_step(model, x, y, [
        callbacks.ObjectiveCallback(a), callbacks.ObjectiveCallback(b), rec])
    self.assertEqual(rec.installed, [2])
    # The two terms add: WEIGHT = 0.2 + 0.3.
    expected = tl.expected_linear_sgd(w0, x, y, lr=LR, weight=0.5)
    tl.assert_weights_close(self, model.get_weights(), expected)
    self.assertIn("a_sq", history.history)
    self.assertIn("b_sq", history.history)
    self.assertEqual(training.installed_objectives(model), [])

  @parameterized.parameters(True, False)
  def test_metric_name_clash_gets_suffix(self, declare):
    x, y = tl.data()
    model = tl.compile_mse(tl.linear_model(), LR)
    history = _fit_one_step(model, x, y, [
        callbacks.ObjectiveCallback(tl.SquaredLogits(0.1, declare_metrics=declare)),
        callbacks.ObjectiveCallback(tl.SquaredLogits(0.1, declare_metrics=declare))])
    self.assertIn("sq_sq", history.history)
    self.assertIn("sq_sq_2", history.history)

  @parameterized.parameters(True, False)
  def test_metric_is_epoch_mean_and_reset_each_epoch(self, declare):
    # lr = 0 freezes the model: every epoch sees the same per-batch values,
    # and the logged metric is their mean over the epoch's batches.
    # declare=False: trackers made during the first trace (objectives that do
    # not declare `metric_names`).
    x, y = tl.data()
    w0 = tl.linear_weights()
    model = tl.compile_mse(tl.linear_model(weights=w0), 0.0)
    objective = tl.SquaredLogits(declare_metrics=declare)
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                        callbacks=[callbacks.ObjectiveCallback(objective)])
    f = x @ w0[0] + w0[1]
    per_batch = [np.mean(f[:4] ** 2), np.mean(f[4:] ** 2)]
    self.assertAllClose(history.history["sq_sq"], [np.mean(per_batch)] * 2, rtol=1e-5)

  def test_evaluate_predict_and_later_fit_untouched(self):
    x, y = tl.data()
    model = tl.compile_mse(tl.linear_model(), LR, metrics=["mae"])
    model.fit(x, y, epochs=1, verbose=0,
              callbacks=[callbacks.ObjectiveCallback(tl.SquaredLogits())],
              validation_data=(x, y))
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    self.assertEqual(set(logs), {"loss", "mae"})
    self.assertAllClose(model.predict(x, verbose=0), model(x))
    # A later fit without the callback is a plain fit (plain SGD on MSE).
    w = model.get_weights()
    history = _fit_one_step(model, x, y, None)
    self.assertEqual(set(history.history), {"loss", "mae"})
    expected = tl.expected_linear_sgd(w, x, y, lr=LR, weight=0.0)
    tl.assert_weights_close(self, model.get_weights(), expected)

  def test_fit_that_raises_is_undone_by_the_next_fit(self):
    x, y = tl.data()
    model = tl.compile_mse(tl.linear_model(), LR)
    with self.assertRaisesRegex(RuntimeError, "simulated crash"):
      model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[
          callbacks.ObjectiveCallback(tl.SquaredLogits()), tl.RaiseAt(0, 0)])
    # The crashed fit could not run on_train_end: its step is still there ...
    self.assertLen(training.installed_objectives(model), 1)
    # ... evaluate is unaffected, and the next fit starts from the user's step.
    self.assertEqual(set(model.evaluate(x, y, verbose=0, return_dict=True)), {"loss"})
    w = model.get_weights()
    history = _fit_one_step(model, x, y, None)
    self.assertEqual(set(history.history), {"loss"})
    self.assertEqual(training.installed_objectives(model), [])
    self.assertNotIn("train_step", model.__dict__)
    expected = tl.expected_linear_sgd(w, x, y, lr=LR, weight=0.0)
    tl.assert_weights_close(self, model.get_weights(), expected)

  def test_fit_that_raises_then_fit_with_callback_again(self):
    x, y = tl.data()
    w0 = tl.linear_weights()
    model = tl.compile_mse(tl.linear_model(weights=w0), LR)
    cb = callbacks.ObjectiveCallback(tl.SquaredLogits(WEIGHT))
    with self.assertRaises(RuntimeError):
      model.fit(x, y, epochs=1, verbose=0, callbacks=[cb, tl.RaiseAt(0, 0, "epoch_begin")])
    self.assertEqual(model.get_weights()[1].tolist(), w0[1].tolist())  # no step ran
    _fit_one_step(model, x, y, [cb])  # the same callback instance, reused
    expected = tl.expected_linear_sgd(w0, x, y, lr=LR, weight=WEIGHT)
    tl.assert_weights_close(self, model.get_weights(), expected)

  def test_fit_that_raises_then_recompile(self):
    # A crashed fit, then `compile` with a new optimizer: the next fit must
    # train with the new compile state, not a train function of the old one.
    x, y = tl.data()
    model = tl.compile_mse(tl.linear_model(), LR)
    with self.assertRaises(RuntimeError):
      model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[
          callbacks.ObjectiveCallback(tl.SquaredLogits()), tl.RaiseAt(0, 0)])
    tl.compile_mse(model, 2 * LR)
    w = model.get_weights()
    _fit_one_step(model, x, y, None)
    expected = tl.expected_linear_sgd(w, x, y, lr=2 * LR, weight=0.0)
    tl.assert_weights_close(self, model.get_weights(), expected)

  def test_second_fit_reuses_the_traced_step(self):
    x, y = tl.data()
    w0 = tl.linear_weights()
    model = tl.compile_mse(tl.linear_model(weights=w0), LR)
    objective = tl.SquaredLogits(WEIGHT)
    cb = callbacks.ObjectiveCallback(objective)
    _fit_one_step(model, x, y, [cb])
    w1 = model.get_weights()
    _fit_one_step(model, x, y, [cb])
    self.assertEqual(objective.calls, 1)  # traced once for both fits
    expected = tl.expected_linear_sgd(w1, x, y, lr=LR, weight=WEIGHT)
    tl.assert_weights_close(self, model.get_weights(), expected)
    # A new compile (here: another learning rate) gets a new step.
    tl.compile_mse(model, 2 * LR)
    w2 = model.get_weights()
    _fit_one_step(model, x, y, [cb])
    self.assertEqual(objective.calls, 2)
    expected = tl.expected_linear_sgd(w2, x, y, lr=2 * LR, weight=WEIGHT)
    tl.assert_weights_close(self, model.get_weights(), expected)

  def test_model_is_garbage_collected_after_fit(self):
    x, y = tl.data()
    model = tl.compile_mse(tl.linear_model(), LR)
    model.fit(x, y, epochs=1, verbose=0,
              callbacks=[callbacks.ObjectiveCallback(tl.SquaredLogits())])
    ref = weakref.ref(model)
    del model
    gc.collect()
    self.assertIsNone(ref())

  def test_uninstall_restores_manually(self):
    model = tl.compile_mse(tl.linear_model(), LR)
    model.make_train_function()
    original = model.train_function
    owner = object()
    training.install(model, [tl.SquaredLogits()], owner=owner)
    self.assertIsNot(model.train_function, original)
    training.uninstall(model)
    self.assertIs(model.train_function, original)
    self.assertNotIn("train_step", model.__dict__)

  def test_saved_model_holds_no_objective_state(self):
    x, y = tl.data()
    model = tl.compile_mse(tl.linear_model(), LR)
    model.fit(x, y, epochs=1, verbose=0,
              callbacks=[callbacks.ObjectiveCallback(tl.SquaredLogits())])
    path = self.get_temp_dir() + "/m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    self.assertEqual(len(loaded.weights), len(model.weights))
    self.assertAllClose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


class BadInputTest(tf.test.TestCase):

  def test_uncompiled_model(self):
    model = tl.linear_model()
    cb = callbacks.ObjectiveCallback(tl.SquaredLogits())
    cb.set_model(model)
    with self.assertRaisesRegex(ValueError, "compile"):
      cb.on_train_begin()
    with self.assertRaisesRegex(ValueError, "compile"):
      training.make_train_step(model, [tl.SquaredLogits()])

  def test_custom_train_step_is_not_silently_replaced(self):
    # A model class with its own train_step: installing our step would drop
    # it, so the callback refuses before any step runs (weights unchanged).

    class CustomStep(keras.Model):

      def train_step(self, data):
        return super().train_step(data)

    inputs = keras.Input((4,))
    model = tl.compile_ce(CustomStep(inputs, keras.layers.Dense(3)(inputs)))
    before = [w.numpy() for w in model.weights]
    x, y = tl.classification_data()
    with self.assertRaisesRegex(ValueError, "overrides `train_step`"):
      model.fit(x, y, epochs=1, verbose=0,
                callbacks=[callbacks.ObjectiveCallback(tl.SquaredLogits())])
    tl.assert_weights_equal(self, model.weights, before)
    # Without the callback, the model trains as usual afterwards.
    model.fit(x, y, epochs=1, verbose=0)

  def test_not_a_model_and_not_objectives(self):
    model = tl.compile_mse(tl.linear_model())
    with self.assertRaisesRegex(TypeError, "keras.Model"):
      training.make_train_step(lambda x: x, [tl.SquaredLogits()])
    with self.assertRaisesRegex(TypeError, "objective"):
      training.make_train_step(model, ["adv"])
    with self.assertRaisesRegex(ValueError, "non-empty"):
      training.make_train_step(model, [])

  def test_replacing_clean_loss_needs_default_compute_loss(self):

    class OwnLoss(keras.Sequential):

      def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return tf.reduce_mean(tf.square(y_pred))

    model = OwnLoss([keras.Input((3,)), keras.layers.Dense(2)])
    tl.compile_mse(model)
    with self.assertRaisesRegex(ValueError, "compute_loss"):
      training.make_train_step(model, [tl.SquaredLogits(replace_clean_loss=True)])


if __name__ == "__main__":
  tf.test.main()
