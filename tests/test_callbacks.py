"""Tests of the training callbacks and schedules (keras_opnorm.callbacks)."""

import os

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_opnorm import callbacks
from keras_opnorm import objectives
import training_testlib as tl


class LinearRampTest(tf.test.TestCase, parameterized.TestCase):

  def test_values(self):
    # value(e) = 0.2 + (1.0 - 0.2) * (e - 2) / 4 on the ramp [2, 6].
    ramp = callbacks.LinearRamp(0.2, 1.0, ramp_epochs=4, start_epoch=2)
    self.assertAllClose([ramp(e) for e in range(8)],
                        [0.2, 0.2, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0])

  def test_step_and_decreasing(self):
    self.assertEqual([callbacks.LinearRamp(0.0, 3.0, 0, 1)(e) for e in range(3)], [0.0, 3.0, 3.0])
    self.assertAllClose([callbacks.LinearRamp(1.0, 0.0, 2)(e) for e in range(3)], [1.0, 0.5, 0.0])

  @parameterized.parameters(
      dict(args=(-1.0, 1.0, 2), error=ValueError, match="start_value"),
      dict(args=(0.0, float("nan"), 2), error=ValueError, match="end_value"),
      dict(args=(0.0, 1.0, -1), error=ValueError, match="ramp_epochs"),
      dict(args=(0.0, 1.0, 1.5), error=TypeError, match="ramp_epochs"),
      dict(args=(0.0, 1.0, 2, -3), error=ValueError, match="start_epoch"),
      dict(args=("a", 1.0, 2), error=TypeError, match="start_value"),
  )
  def test_invalid(self, args, error, match):
    with self.assertRaisesRegex(error, match):
      callbacks.LinearRamp(*args)

  def test_config_round_trip(self):
    ramp = callbacks.LinearRamp(0.1, 0.5, 3, 1)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ramp))
    self.assertIsInstance(restored, callbacks.LinearRamp)
    self.assertEqual(restored.get_config(), ramp.get_config())


class SchedulesInFitTest(tf.test.TestCase):

  def test_weight_schedule_applied_each_epoch_without_retracing(self):
    x, y = tl.data()
    model = tl.compile_mse(tl.linear_model(), 0.0)  # frozen: isolate the weight
    objective = tl.SquaredLogits(1.0)
    rec = tl.Recorder(objective)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[
        callbacks.ObjectiveCallback(
            objective, schedules={"weight": callbacks.LinearRamp(0.0, 1.0, 2)}), rec])
    self.assertEqual([v["weight"] for v in rec.values], [0.0, 0.5, 1.0])
    # loss = mse + weight * sq_sq at the frozen weights.
    f = x @ tl.linear_weights()[0] + tl.linear_weights()[1]
    mse, sq = np.mean((f - y) ** 2), np.mean(f ** 2)
    self.assertAllClose(history.history["loss"], [mse, mse + 0.5 * sq, mse + sq], rtol=1e-5)
    self.assertEqual(objective.calls, 1)  # traced once: the weight is a variable

  def test_start_epoch(self):
    x, y = tl.data()
    model = tl.compile_mse(tl.linear_model(), 0.1)
    rec = tl.Recorder()
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[
        callbacks.ObjectiveCallback(tl.SquaredLogits(), start_epoch=2), rec])
    self.assertEqual(rec.installed, [0, 0, 1])
    self.assertLen(history.history["loss"], 3)
    self.assertLen(history.history["sq_sq"], 1)

  def test_warmup_epochs_ramps_epsilon(self):
    cb = callbacks.AdversarialTraining(0.3, warmup_epochs=3, start_epoch=1, num_steps=1)
    # epsilon * (i + 1) / 3 in the i-th active epoch (active from epoch 1).
    self.assertAllClose([cb.schedules["epsilon"](e) for e in range(5)],
                        [0.1, 0.1, 0.2, 0.3, 0.3])
    snr = callbacks.SpectralNormRegularization(0.01, warmup_epochs=2)
    self.assertAllClose([snr.schedules["weight"](e) for e in range(3)], [0.005, 0.01, 0.01])

  def test_invalid_schedule_fails_before_any_step(self):
    x, y = tl.data()
    w0 = tl.linear_weights()
    model = tl.compile_mse(tl.linear_model(weights=w0), 0.1)
    cb = callbacks.ObjectiveCallback(tl.SquaredLogits(), schedules={"weight": lambda e: -1.0})
    with self.assertRaisesRegex(ValueError, "weight_schedule"):
      model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    tl.assert_weights_equal(self, model.get_weights(), w0)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "epsilon"):
      callbacks.ObjectiveCallback(tl.SquaredLogits(), schedules={"epsilon": lambda e: 1.0})
    with self.assertRaisesRegex(TypeError, "weight_schedule"):
      callbacks.ObjectiveCallback(tl.SquaredLogits(), schedules={"weight": 3.0})
    with self.assertRaisesRegex(TypeError, "Objective"):
      callbacks.ObjectiveCallback("adv")
    with self.assertRaisesRegex(ValueError, "weight"):
      callbacks.SpectralNormRegularization(weight=-1.0)
    with self.assertRaisesRegex(ValueError, "weight"):
      callbacks.AdversarialTraining(0.1, weight=-0.5)
    with self.assertRaisesRegex(ValueError, "epsilon"):
      callbacks.OperatorNormRegularization(0.0)
    with self.assertRaisesRegex(ValueError, "start_epoch"):
      callbacks.AdversarialTraining(0.1, start_epoch=-1)
    with self.assertRaisesRegex(ValueError, "either"):
      callbacks.AdversarialTraining(0.1, warmup_epochs=2,
                                    epsilon_schedule=callbacks.LinearRamp(0, 0.1, 2))


class BuiltInCallbacksTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("adversarial", lambda: callbacks.AdversarialTraining(0.1, num_steps=2), ["adv_loss", "adv_accuracy"]),
      ("adversarial_logit", lambda: callbacks.AdversarialTraining(
          0.1, p=2, num_steps=2, loss="logit", weight=0.5), ["adv_loss"]),
      ("operator_norm", lambda: callbacks.OperatorNormRegularization(
          0.5, num_iters=2, weight=0.1), ["opnorm", "opnorm_loss"]),
      ("spectral_norm", lambda: callbacks.SpectralNormRegularization(0.01),
       ["spectral_norm_max", "spectral_norm_loss"]),
  )
  def test_fit_logs_terms_and_restores(self, make, keys):
    x, y = tl.classification_data()
    model = tl.compile_ce(tl.mlp(), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[make()])
    for key in keys + ["loss", "accuracy"]:
      self.assertIn(key, history.history)
      self.assertTrue(np.isfinite(history.history[key][0]), key)
    self.assertNotIn("train_step", model.__dict__)
    self.assertEqual(set(model.evaluate(x, y, verbose=0, return_dict=True)), {"loss", "accuracy"})

  def test_probability_output_fails_before_training(self):
    x, y = tl.classification_data()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    w0 = model.get_weights()
    with self.assertRaisesRegex(ValueError, "softmax"):
      model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.AdversarialTraining(0.1)])
    tl.assert_weights_equal(self, model.get_weights(), w0)

  def test_batch_norm_statistics_move_as_in_a_plain_step(self):
    # Dense(8) -> BatchNormalization -> ReLU -> Dense(3). After one training
    # step on batch x from moving_mean = 0 (Keras: momentum 0.99),
    #   moving_mean = 0.99 * 0 + 0.01 * mean_i z_i,   z = x W_1 + b_1
    # at the initial weights: the clean training-mode pass is the only one that
    # may move it (attacks run in inference mode, the adversarial pass drops
    # its batch-norm updates).
    x, y = tl.classification_data()
    model = tl.compile_ce(tl.mlp(batch_norm=True))
    w1, b1 = [v.numpy() for v in model.layers[0].weights]
    expected = 0.01 * np.mean(x @ w1 + b1, axis=0)
    for cb in [callbacks.AdversarialTraining(0.1, num_steps=1),
               callbacks.OperatorNormRegularization(0.1, num_iters=1)]:
      model = tl.compile_ce(tl.mlp(batch_norm=True))
      model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
      bn = model.layers[1]
      self.assertAllClose(bn.moving_mean.numpy(), expected, rtol=1e-4, atol=1e-6)

  @pytest.mark.slow
  def test_jit_compile(self):
    # All three objectives in one XLA-compiled step (one compilation; the
    # mechanism itself is XLA-tested quickly in test_training.py).
    x, y = tl.classification_data()
    model = tl.compile_ce(tl.mlp(), jit_compile=True)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[
        callbacks.AdversarialTraining(0.1, p=2, num_steps=2),
        callbacks.OperatorNormRegularization(0.1, num_iters=2),
        callbacks.SpectralNormRegularization(0.01)])
    self.assertContainsSubset(["adv_loss", "opnorm", "spectral_norm_max"], history.history)
    for key, values in history.history.items():
      self.assertTrue(np.all(np.isfinite(values)), key)

  def test_dict_input_model_trains(self):
    # Dict inputs are perturbed jointly (keras_opnorm.logits_view; closed-form
    # checks in tests/test_model_io.py).
    x, y = tl.classification_data()
    inputs = {"a": keras.Input((2,), name="a"), "b": keras.Input((2,), name="b")}
    outputs = keras.layers.Dense(3)(keras.layers.Concatenate()([inputs["a"], inputs["b"]]))
    model = tl.compile_ce(keras.Model(inputs, outputs))
    data = {"a": x[:, :2], "b": x[:, 2:]}
    history = model.fit(data, y, epochs=1, verbose=0,
                        callbacks=[callbacks.AdversarialTraining(0.1, num_steps=1)])
    self.assertTrue(np.isfinite(history.history["adv_loss"][0]))
    # A data-independent objective works with any inputs.
    history = model.fit(data, y, epochs=1, verbose=0,
                        callbacks=[callbacks.SpectralNormRegularization(0.01)])
    self.assertIn("spectral_norm_max", history.history)

  def test_combined_callbacks(self):
    x, y = tl.classification_data()
    model = tl.compile_ce(tl.mlp())
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[
        callbacks.AdversarialTraining(0.1, num_steps=1),
        callbacks.SpectralNormRegularization(0.01)])
    self.assertIn("adv_loss", history.history)
    self.assertIn("spectral_norm_max", history.history)

  @parameterized.named_parameters(
      ("adversarial", lambda: callbacks.AdversarialTraining(
          0.2, p=2, num_steps=3, loss="kl", weight=2.0, warmup_epochs=2, start_epoch=1,
          weight_schedule=callbacks.LinearRamp(0.0, 2.0, 3), backup_dir="/tmp/b")),
      ("operator_norm", lambda: callbacks.OperatorNormRegularization(
          1.0, p="inf", q=1, num_iters=3, form="jacobian",
          epsilon_schedule=callbacks.LinearRamp(0.1, 1.0, 4))),
      ("spectral_norm", lambda: callbacks.SpectralNormRegularization(
          0.001, num_iters=2, seed=3, start_epoch=2)),
      ("generic", lambda: callbacks.ObjectiveCallback(
          objectives.SpectralNormRegularization(0.5),
          schedules={"weight": callbacks.LinearRamp(0.0, 0.5, 2)}, start_epoch=1)),
  )
  def test_config_round_trip(self, make):
    cb = make()
    config = cb.get_config()
    restored = type(cb).from_config(config)
    self.assertEqual(restored.get_config(), config)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cb))
    self.assertIsInstance(restored, type(cb))
    self.assertEqual(restored.get_config(), config)

  def test_config_keeps_constructor_values_after_schedules(self):
    x, y = tl.classification_data()
    model = tl.compile_ce(tl.mlp())
    cb = callbacks.AdversarialTraining(0.3, warmup_epochs=3, num_steps=1)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    self.assertAllClose(cb.objective.get_hyperparameter("epsilon"), 0.1)
    self.assertEqual(cb.get_config()["epsilon"], 0.3)


class BackupAndRestoreTest(tf.test.TestCase):

  def test_resume_keeps_schedule_and_power_vectors(self):
    x, y = tl.classification_data()
    backup_dir = os.path.join(self.get_temp_dir(), "backup")
    ramp = callbacks.LinearRamp(0.0, 0.04, ramp_epochs=4)

    # Run 1 crashes at the start of epoch 2, after epochs 0 and 1 were backed up.
    model = tl.compile_ce(tl.mlp())
    snr = callbacks.SpectralNormRegularization(weight_schedule=ramp, backup_dir=backup_dir)
    with self.assertRaises(RuntimeError):
      model.fit(x, y, batch_size=4, epochs=4, verbose=0, callbacks=[
          keras.callbacks.BackupAndRestore(backup_dir), snr, tl.RaiseAt(2, where="epoch_begin")])
    u_at_crash = [v.numpy() for v in snr.objective.variables[1:]]

    # Run 2: a new model, a new callback (as in a new process) on the same dir.
    model = tl.compile_ce(tl.mlp(seed=5))
    snr2 = callbacks.SpectralNormRegularization(weight_schedule=ramp, backup_dir=backup_dir)
    rec = tl.Recorder(snr2.objective)

    class Probe(keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
          self.u = [v.numpy() for v in snr2.objective.variables[1:]]

    probe = Probe()
    model.fit(x, y, batch_size=4, epochs=4, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(backup_dir), snr2, rec, probe])
    self.assertEqual(rec.epochs, [2, 3])  # resumed at epoch 2
    self.assertAllClose([v["weight"] for v in rec.values], [ramp(2), ramp(3)])
    self.assertLen(probe.u, len(u_at_crash))
    for got, want in zip(probe.u, u_at_crash):
      self.assertAllEqual(got, want)
    # A finished run removes its backup, like BackupAndRestore does.
    self.assertEqual(tf.io.gfile.glob(os.path.join(backup_dir, "keras_opnorm_*")), [])

class TracingTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ("adversarial", lambda: callbacks.AdversarialTraining(epsilon=0.1, num_steps=2)),
      ("adversarial_logit", lambda: callbacks.AdversarialTraining(
          epsilon=0.1, num_steps=2, loss="logit")),
      ("opnorm", lambda: callbacks.OperatorNormRegularization(epsilon=0.1, num_iters=2)),
      ("spectral", lambda: callbacks.SpectralNormRegularization()),
  )
  def test_first_fit_traces_objective_once(self, make_callback):
    # Objectives declare `metric_names`, so the step's metric trackers exist
    # before tracing and TensorFlow traces the step once (not twice) over a
    # 2-epoch fit; the keys declared are exactly the keys logged.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = make_callback()
    objective = callback.objective
    traces = []
    call = objective.call
    objective.call = lambda *args, **kwargs: traces.append(1) or call(*args, **kwargs)
    rng = np.random.default_rng(0)
    history = model.fit(rng.random((32, 4), np.float32), rng.integers(0, 3, 32), epochs=2,
                        batch_size=8, verbose=0, callbacks=[callback])
    self.assertLen(traces, 1)
    self.assertSameElements(set(history.history) - {"loss"}, objective.metric_names)

class TensorBoardTest(tf.test.TestCase):

  def test_objective_terms_reach_tensorboard(self):
    # The objective's metrics are in the epoch logs, so Keras' TensorBoard
    # callback writes them as scalars `epoch_<name>` to the train event file.
    pytest.importorskip("tensorboard", reason="the `test` extra installs tensorboard")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log_dir = self.get_temp_dir()
    rng = np.random.default_rng(0)
    model.fit(rng.random((32, 4), np.float32), rng.integers(0, 3, 32), epochs=2, batch_size=8,
              verbose=0, callbacks=[
                  callbacks.OperatorNormRegularization(epsilon=0.1, num_iters=2),
                  keras.callbacks.TensorBoard(log_dir)])
    tags = set()
    for path in tf.io.gfile.glob(os.path.join(log_dir, "train", "*")):
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        tags.update(value.tag for value in event.summary.value)
    self.assertContainsSubset({"epoch_loss", "epoch_opnorm", "epoch_opnorm_loss"}, tags)


if __name__ == "__main__":
  tf.test.main()
