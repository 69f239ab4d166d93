"""Warm start across epochs: the per-example memory and the warm-started objectives.

The memory (keras_opnorm/objectives/_example_memory.py) is checked against its
definition (content keys, hit iff the stored key is the example's own, a
collision evicts); the warm-started power iteration against the closed form of
a linear model, whose Jacobian is constant: K = 1 iteration per epoch over E
epochs must be E power iterations ``v <- K K^T v / ||K K^T v||`` (a Dense
kernel ``K`` is ``[n, d]``, ``f(x) = x K``, ``J = K^T``, ``J^T J = K K^T``),
converging to the top right singular vector of ``J``.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_opnorm import callbacks as kcallbacks
from keras_opnorm import layers as klayers
from keras_opnorm.objectives import AdversarialTraining
from keras_opnorm.objectives import OperatorNormRegularization
from keras_opnorm.objectives import _example_memory as em

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(num=48, n=6, classes=3, seed=0):
  rng = np.random.RandomState(seed)
  return rng.rand(num, n).astype("float32"), rng.randint(0, classes, num)


def _mlp(n=6, classes=3):
  model = keras.Sequential([keras.Input((n,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(classes)])
  model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _hits(history):
  return next(v for k, v in history.history.items() if k.endswith("_warm_hits"))


class FingerprintTest(tf.test.TestCase):

  def test_equal_inputs_equal_keys_anywhere_in_the_batch(self):
    x, _ = _data(8)
    keys = em.fingerprint(tf.constant(x)).numpy()
    keys_rev = em.fingerprint(tf.constant(x[::-1].copy())).numpy()
    self.assertAllEqual(keys_rev[::-1], keys)
    self.assertLen({tuple(k) for k in keys}, 8)

  def test_a_changed_value_changes_both_hashes(self):
    x = np.full((1, 64), 0.0625, np.float32)  # A coarse grid: low mantissa bits all 0.
    changed = [x.copy() for _ in range(4)]
    changed[0][0, 5] = np.nextafter(np.float32(0.0625), np.float32(1))  # one ulp
    changed[1][0, 63] = 0.125
    changed[2][0, 0] = -0.0625
    changed[3][0, [3, 4]] = changed[3][0, [4, 3]] + [0.0625, -0.0625]  # same sum
    base = em.fingerprint(tf.constant(x)).numpy()[0]
    for c in changed:
      key = em.fingerprint(tf.constant(c)).numpy()[0]
      self.assertNotEqual(key[0], base[0])
      self.assertNotEqual(key[1], base[1])

  def test_same_keys_under_xla(self):
    x = np.random.RandomState(1).randn(16, 3, 5).astype("float32") * 1e6  # wrap-around sums
    eager = em.fingerprint(tf.constant(x)).numpy()
    xla = tf.function(em.fingerprint, jit_compile=True)(tf.constant(x)).numpy()
    self.assertAllEqual(xla, eager)

  def test_slots_spread_on_a_coarse_grid(self):
    # Values k/16 (the digits' grid): a hash of the raw low bits would put
    # them all in slot 0 of a power-of-two table.
    x = np.random.RandomState(2).randint(0, 17, (200, 64)).astype("float32") / 16
    s = em.slots(em.fingerprint(tf.constant(x)), 1024).numpy()
    self.assertGreater(len(set(s.tolist())), 170)  # ~181 expected for 200 in 1024


class MemoryTest(tf.test.TestCase):

  def test_miss_then_hit_with_the_stored_vector(self):
    x, _ = _data(5)
    memory = em.ExampleMemory((6,), tf.float32, capacity=64)
    key = em.fingerprint(tf.constant(x))
    values, hit = memory.lookup(key)
    self.assertFalse(np.any(hit.numpy()))
    self.assertAllEqual(values, np.zeros_like(x))
    memory.update(key, 2 * x)
    values, hit = memory.lookup(key)
    self.assertTrue(np.all(hit.numpy()))
    self.assertAllEqual(values, 2 * x)
    changed = x.copy()
    changed[2, 0] += 1e-3  # augmentation: a miss, zeros
    values, hit = memory.lookup(em.fingerprint(tf.constant(changed)))
    self.assertAllEqual(hit, [True, True, False, True, True])
    self.assertAllEqual(values[2], np.zeros(6))

  def test_collisions_evict_and_never_return_another_examples_vector(self):
    x, _ = _data(40)
    memory = em.ExampleMemory((6,), tf.float32, capacity=3)  # 40 examples, 3 slots
    key = em.fingerprint(tf.constant(x))
    for lo in range(0, 40, 8):  # batches of 8, several on one slot
      memory.update(key[lo:lo + 8], x[lo:lo + 8])  # stored vector = the example itself
    values, hit = memory.lookup(key)
    hit = hit.numpy()
    self.assertBetween(int(hit.sum()), 1, 3)
    self.assertAllEqual(values.numpy()[hit], x[hit])  # a hit is the example's own vector
    self.assertAllEqual(values.numpy()[~hit], np.zeros_like(x[~hit]))  # a miss: cold start

  def test_gather_and_scatter_under_xla(self):
    x, _ = _data(6)
    memory = em.ExampleMemory((6,), tf.float32, capacity=16)

    @tf.function(jit_compile=True)
    def step(x):
      key = em.fingerprint(x)
      values, hit = memory.lookup(key)
      with tf.control_dependencies([memory.update(key, values + x)]):
        return tf.reduce_mean(tf.cast(hit, tf.float32))

    self.assertEqual(float(step(tf.constant(x))), 0.0)
    self.assertEqual(float(step(tf.constant(x))), 1.0)
    self.assertAllClose(memory.lookup(em.fingerprint(tf.constant(x)))[0], 2 * x)

  def test_memory_bytes_formula(self):
    memory = em.ExampleMemory((2, 3), tf.float32, capacity=10)
    size = sum(int(np.prod(v.shape)) * 4 for v in memory.variables)
    self.assertEqual(size, em.memory_bytes(10, 6))  # (10 + 1) * (4 * 6 + 12)


class PowerIterationContinuationTest(tf.test.TestCase):

  def test_k1_over_epochs_is_the_power_method_on_a_linear_model(self):
    rng = np.random.RandomState(3)
    n, d = 6, 4
    u_, _ = np.linalg.qr(rng.randn(n, n))
    w_, _ = np.linalg.qr(rng.randn(d, d))
    kernel = (u_[:, :d] * [3.0, 1.5, 0.7, 0.2]) @ w_.T  # [n, d], singular values known
    model = keras.Sequential([keras.Input((n,)), keras.layers.Dense(d, use_bias=False)])
    model.layers[0].kernel.assign(kernel.astype("float32"))
    x = tf.constant(rng.rand(5, n).astype("float32"))
    objective = OperatorNormRegularization(epsilon=0.1, num_iters=1, warm_start=True)
    objective.build(model)
    key = em.fingerprint(x)

    _, metrics = objective(model, x, None, model(x))  # epoch 1: a random start
    self.assertEqual(float(metrics["opnorm_warm_hits"]), 0.0)
    v = objective._memory.lookup(key)[0].numpy().astype(np.float64)  # pylint: disable=protected-access
    gram = kernel @ kernel.T  # J^T J
    for epoch in range(2, 9):
      _, metrics = objective(model, x, None, model(x))
      self.assertEqual(float(metrics["opnorm_warm_hits"]), 1.0)
      v = v @ gram
      v /= np.linalg.norm(v, axis=1, keepdims=True)
      stored = objective._memory.lookup(key)[0].numpy()  # pylint: disable=protected-access
      self.assertAllClose(stored, v, atol=1e-5, msg=f"epoch {epoch}")
    # (1.5 / 3)^(2 * 7) ~ 6e-5 after 8 epochs: the top right singular vector of J.
    top = np.linalg.svd(kernel.T)[2][0]
    self.assertAllClose(np.abs(stored @ top), np.ones(5), atol=1e-4)
    self.assertAllClose(metrics["opnorm"], 3.0, atol=1e-3)


class AdversarialWarmStartTest(tf.test.TestCase):

  def test_stored_perturbation_is_projected_onto_the_current_ball_and_box(self):
    x, y = _data(16)
    model = _mlp()
    objective = AdversarialTraining(epsilon=0.2, p="inf", num_steps=1, clip=(0.0, 1.0),
                                    warm_start=True)
    objective.build(model)
    key = em.fingerprint(tf.constant(x))
    _, metrics = objective(model, tf.constant(x), tf.constant(y), model(x))
    self.assertEqual(float(metrics["adv_warm_hits"]), 0.0)
    delta = objective._memory.lookup(key)[0].numpy()  # pylint: disable=protected-access
    self.assertAllLessEqual(np.abs(delta), 0.2 + 1e-6)
    self.assertGreater(np.abs(delta).max(), 0.1)
    objective.set_hyperparameter("epsilon", 0.02)  # a schedule shrinks the ball
    _, metrics = objective(model, tf.constant(x), tf.constant(y), model(x))
    self.assertEqual(float(metrics["adv_warm_hits"]), 1.0)
    delta = objective._memory.lookup(key)[0].numpy()  # pylint: disable=protected-access
    self.assertAllLessEqual(np.abs(delta), 0.02 + 1e-6)
    self.assertAllInRange(x + delta, -1e-6, 1.0 + 1e-6)


class FitTest(tf.test.TestCase):

  def test_shuffled_fit_hits_from_epoch_two_under_xla(self):
    x, y = _data()
    for cb in (kcallbacks.OperatorNormRegularization(epsilon=0.5, num_iters=1, warm_start=True),
               kcallbacks.AdversarialTraining.fast(epsilon=0.1, warm_start=True)):
      model = _mlp()
      model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=True)
      hits = _hits(model.fit(x, y, epochs=3, batch_size=16, shuffle=True, verbose=0,
                             callbacks=[cb]))
      self.assertEqual(hits[0], 0.0)
      self.assertAllGreaterEqual(hits[1:], 0.95)  # 48 keys in 65536 slots

  def test_tf_data_hits_and_augmentation_misses(self):
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(48, seed=0).batch(16)
    # A generator's state advances across epochs (a seeded tf.random.normal
    # would repeat its draws each epoch: same batch position, same noise).
    gen = tf.random.Generator.from_seed(1)
    noisy = ds.map(lambda a, b: (a + gen.normal(tf.shape(a), stddev=1e-2), b))
    for data, expect_hits in ((ds, True), (noisy, False)):
      model = _mlp()
      cb = kcallbacks.OperatorNormRegularization(epsilon=0.5, num_iters=1, warm_start=True)
      hits = _hits(model.fit(data, epochs=2, verbose=0, callbacks=[cb]))
      self.assertEqual(hits[0], 0.0)
      if expect_hits:
        self.assertGreaterEqual(hits[1], 0.95)
      else:
        self.assertEqual(hits[1], 0.0)

  def test_backup_and_restore_resumes_with_the_memory(self):
    x, y = _data()
    backup = os.path.join(self.get_temp_dir(), "backup")

    class Interrupt(keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
          raise RuntimeError("interrupted")

    def callbacks():
      return [keras.callbacks.BackupAndRestore(backup),
              kcallbacks.OperatorNormRegularization(epsilon=0.5, num_iters=1, warm_start=True,
                                                    backup_dir=backup)]

    model = _mlp()
    with self.assertRaisesRegex(RuntimeError, "interrupted"):
      model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=callbacks() + [Interrupt()])
    resumed = _mlp()  # a new process: a new model and a new objective
    history = resumed.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=callbacks())
    hits = _hits(history)
    self.assertLen(hits, 2)  # epochs 1 and 2 (epoch 0 was restored)
    self.assertGreaterEqual(hits[0], 0.95)  # restored memory: hits at once


class ErrorsAndConfigTest(tf.test.TestCase):

  @pytest.mark.filterwarnings("ignore")
  def test_bad_capacity_and_bound(self):
    for bad in (0, -1, 1.5, "8", True):
      with self.assertRaisesRegex(ValueError, f"warm_start_capacity={bad!r}"):
        OperatorNormRegularization(epsilon=0.1, warm_start=True, warm_start_capacity=bad)
    with self.assertRaisesRegex(ValueError, "warm_start_max_bytes=0"):
      AdversarialTraining(epsilon=0.1, warm_start=True, warm_start_max_bytes=0)
    model = _mlp()
    objective = OperatorNormRegularization(epsilon=0.1, warm_start=True,
                                           warm_start_capacity=1000, warm_start_max_bytes=10**4)
    with self.assertRaisesRegex(ValueError, r"36036 bytes.*raise `warm_start_max_bytes`"):
      objective.build(model)  # (1000 + 1) * (4 * 6 + 12) = 36036 > 10^4

  def test_exact_direction_and_layer_refuse_warm_start(self):
    with self.assertRaisesRegex(ValueError, "direction='exact'"):
      OperatorNormRegularization(epsilon=0.1, warm_start=True, direction="exact")
    with self.assertRaisesRegex(ValueError, "OperatorNormRegularizer"):
      klayers.OperatorNormRegularizer(keras.layers.Dense(3), epsilon=0.1, warm_start=True)

  def test_changed_input_dtype_raises(self):
    fn = lambda x: tf.cast(x[:, :3], tf.float32) * 2.0  # no Keras inputs: built at the first step
    objective = OperatorNormRegularization(epsilon=0.1, num_iters=1, warm_start=True)
    x = tf.constant(_data(4)[0])
    objective(fn, x, None, fn(x))
    with self.assertRaisesRegex(ValueError, "dtype=float64"):
      objective(fn, tf.cast(x, tf.float64), None, fn(x))

  def test_config_round_trip(self):
    for obj in (OperatorNormRegularization(epsilon=0.1, num_iters=1, warm_start=True,
                                           warm_start_capacity=128, warm_start_max_bytes=10**6),
                AdversarialTraining.fast(epsilon=0.1, warm_start=True, warm_start_capacity=7)):
      config = obj.get_config()
      again = type(obj).from_config(config)
      self.assertEqual(again.get_config(), config)
      self.assertTrue(again.warm_start)
    cb = kcallbacks.AdversarialTraining(epsilon=0.1, num_steps=2, warm_start=True)
    again = kcallbacks.AdversarialTraining.from_config(cb.get_config())
    self.assertTrue(again.objective.warm_start)

  @pytest.mark.slow
  def test_several_replicas_raise(self):
    script = textwrap.dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from keras_opnorm.objectives import OperatorNormRegularization
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
          model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        try:
          OperatorNormRegularization(epsilon=0.1, warm_start=True).build(model)
        except ValueError as e:
          print("RAISED", e)
    """)
    env = dict(os.environ, PYTHONPATH=_REPO, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    self.assertIn("RAISED", proc.stdout, proc.stderr[-2000:])
    self.assertIn("num_replicas_in_sync=2", proc.stdout)
