"""Eager calls run through the cached tf.function of `keras_opnorm._compiled`.

The expected values are the same calls made inside a user's own
``tf.function`` (the graph path, unchanged by the dispatch) or closed forms.
"""

import gc
import warnings
import weakref

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import keras_opnorm
from keras_opnorm import _compiled


def _mlp(seed=0, d_in=4):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((d_in,)),
      keras.layers.Dense(8, activation="relu"),
      keras.layers.Dense(4)])  # 4 classes: the targeted DLR loss needs them.


def _data(batch=5, d_in=4):
  rng = np.random.default_rng(1)
  x = tf.constant(rng.uniform(0.2, 0.8, (batch, d_in)).astype("float32"))
  y = tf.constant(rng.integers(0, 4, batch).astype("int32"))
  return x, y


def _calls(model):
  """name -> (call(x, y), deterministic): each public function once."""
  v0 = tf.ones([1, 4])
  return {
      "pgd_attack": lambda x, y: keras_opnorm.pgd_attack(
          model, x, y, epsilon=0.1, num_steps=3, random_start=False, clip=(0.0, 1.0)),
      "pgd_attack_l1": lambda x, y: keras_opnorm.pgd_attack(
          model, x, y, epsilon=0.3, p=1, num_steps=3, random_start=False),
      "operator_norm": lambda x, y: keras_opnorm.operator_norm(
          model, x, 2, 2, method="power", num_iters=4,
          v0=tf.tile(v0, [tf.shape(x)[0], 1])).norm,
      "operator_norm_inf": lambda x, y: keras_opnorm.operator_norm(
          model, x, float("inf"), 1).norm,
      "singular_values": lambda x, y: keras_opnorm.singular_values(model, x, k=2).values,
      "apgd_attack": lambda x, y: keras_opnorm.apgd_attack(
          model, x, y, epsilon=0.1, num_steps=4, seed=3, clip=(0.0, 1.0)),
      "apgd_targeted_attack": lambda x, y: keras_opnorm.apgd_targeted_attack(
          model, x, y, epsilon=0.1, num_steps=4, num_targets=2, seed=3),
      "fab_attack": lambda x, y: keras_opnorm.fab_attack(
          model, x, y, num_steps=4, num_targets=2, seed=3),
      "fmn_attack": lambda x, y: keras_opnorm.fmn_attack(
          model, x, y, num_steps=4, num_targets=2, seed=3),
  }


class CompiledCallsTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    _compiled.clear_cache()

  @parameterized.parameters(
      "pgd_attack", "pgd_attack_l1", "operator_norm", "operator_norm_inf",
      "singular_values", "apgd_attack", "apgd_targeted_attack", "fab_attack",
      "fmn_attack")
  def test_eager_call_equals_the_call_inside_a_tf_function(self, name):
    # The graph path is the code unchanged; a fixed seed (or no randomness)
    # makes both runs the same computation.
    model = _mlp()
    x, y = _data()
    call = _calls(model)[name]
    eager = call(x, y)
    self.assertLen(_compiled.cache_entries(), 1)
    graph = tf.function(call)(x, y)
    self.assertLen(_compiled.cache_entries(), 1)  # The graph call is not cached.
    self.assertAllClose(eager, graph, atol=1e-5)

  def test_batch_sizes_trace_at_most_twice(self):
    # The first batch size gets a graph of static shapes, all others share
    # one graph with a free batch axis.
    model = _mlp()
    x, y = _data(batch=9)
    call = _calls(model)["pgd_attack"]
    graph = tf.function(call)
    for b in (7, 7):
      self.assertAllClose(call(x[:b], y[:b]), graph(x[:b], y[:b]), atol=1e-6)
    self.assertEqual(_compiled.cache_entries(), [("pgd_attack", 1, False)])
    for b in (3, 5, 9, 3, 7):
      self.assertAllClose(call(x[:b], y[:b]), graph(x[:b], y[:b]), atol=1e-6)
    self.assertEqual(_compiled.cache_entries(), [("pgd_attack", 2, False)])

  def test_new_model_or_static_argument_makes_a_new_entry(self):
    x, y = _data()
    m1, m2 = _mlp(0), _mlp(1)
    keras_opnorm.pgd_attack(m1, x, y, epsilon=0.1, num_steps=2)
    keras_opnorm.pgd_attack(m1, x, y, epsilon=0.1, num_steps=2)
    self.assertLen(_compiled.cache_entries(), 1)
    keras_opnorm.pgd_attack(m2, x, y, epsilon=0.1, num_steps=2)
    self.assertLen(_compiled.cache_entries(), 2)
    keras_opnorm.pgd_attack(m1, x, y, epsilon=0.1, num_steps=3)
    self.assertLen(_compiled.cache_entries(), 3)
    # A tensor epsilon is an input: its values share one trace.
    for eps in (0.1, 0.2):
      keras_opnorm.pgd_attack(m1, x, y, epsilon=tf.constant(eps), num_steps=2)
    self.assertLen(_compiled.cache_entries(), 4)
    # Integer seeds become seed tensors: all seeds share one trace.
    for seed in (0, 1, None):
      keras_opnorm.apgd_attack(m1, x, y, epsilon=0.1, num_steps=2, seed=seed)
    self.assertEqual(_compiled.cache_entries()[-1], ("apgd_attack", 1, False))

  def test_the_cache_is_bounded(self):
    model = _mlp()
    x, _ = _data()
    for k in range(1, _compiled.MAX_ENTRIES + 3):
      keras_opnorm.operator_norm(model, x, 2, 2, method="power", num_iters=k)
    self.assertLen(_compiled.cache_entries(), _compiled.MAX_ENTRIES)

  def test_the_cache_does_not_keep_a_deleted_model_alive(self):
    model = _mlp()
    x, y = _data()
    keras_opnorm.pgd_attack(model, x, y, epsilon=0.1, num_steps=2)
    keras_opnorm.operator_norm(model, x, num_iters=2)
    self.assertLen(_compiled.cache_entries(), 2)
    ref = weakref.ref(model)
    del model
    gc.collect()
    self.assertIsNone(ref())
    self.assertEmpty(_compiled.cache_entries())

  def test_seed_none_draws_fresh_randomness_each_call(self):
    model = _mlp()
    x, y = _data()
    # A tiny step keeps the random start visible.
    a = keras_opnorm.pgd_attack(model, x, y, epsilon=0.1, num_steps=1, step_size=1e-4)
    b = keras_opnorm.pgd_attack(model, x, y, epsilon=0.1, num_steps=1, step_size=1e-4)
    self.assertGreater(float(tf.reduce_max(tf.abs(a - b))), 0.0)
    # APGD's start is uniform in the cube: two seed=None calls differ, a seed repeats.
    c, d = (keras_opnorm.apgd_attack(model, x, y, epsilon=0.1, num_steps=1, seed=None)
            for _ in range(2))
    self.assertGreater(float(tf.reduce_max(tf.abs(c - d))), 0.0)
    e, f = (keras_opnorm.apgd_attack(model, x, y, epsilon=0.1, num_steps=1, seed=5)
            for _ in range(2))
    self.assertAllEqual(e, f)

  def test_value_errors_stay_eager_with_their_messages(self):
    model = _mlp()
    x, y = _data()
    keras_opnorm.pgd_attack(model, x, y, epsilon=0.1, num_steps=2)  # Cached.
    for _ in range(2):
      with self.assertRaisesRegex(ValueError, r"`x` must be finite .*5 of 5 examples"):
        keras_opnorm.pgd_attack(model, x + np.nan, y, epsilon=0.1, num_steps=2)
      with self.assertRaisesRegex(ValueError, r"`y` must hold class labels in \[0, 4\)"):
        keras_opnorm.pgd_attack(model, x, y + 4, epsilon=0.1, num_steps=2)
      with self.assertRaisesRegex(ValueError, "Received: p=0.5"):
        keras_opnorm.pgd_attack(model, x, y, epsilon=0.1, p=0.5)
      with self.assertRaisesRegex(ValueError, "`epsilon` must be positive"):
        keras_opnorm.pgd_attack(model, x, y, epsilon=tf.constant(-1.0), num_steps=2)
      with self.assertRaisesRegex(ValueError, "`x` must be finite"):
        keras_opnorm.operator_norm(model, x + np.inf, num_iters=2)

  def test_vacuous_threat_model_warns_at_every_call(self):
    model = _mlp()
    x, y = _data()
    for epsilon in (1.0, 1.0, tf.constant(1.0)):
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras_opnorm.pgd_attack(model, x, y, epsilon=epsilon, num_steps=1, clip=(0.0, 1.0))
      vacuous = [w for w in caught if w.category is keras_opnorm.VacuousThreatModelWarning]
      self.assertLen(vacuous, 1)
      self.assertIn("pgd_attack: epsilon=1 covers", str(vacuous[0].message))
      self.assertEqual(vacuous[0].filename, __file__)  # Points at the caller.

  def test_dict_input(self):
    a = keras.Input((2,), name="a")
    b = keras.Input((3,), name="b")
    out = keras.layers.Dense(3)(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, out)
    rng = np.random.default_rng(0)
    x = {"a": tf.constant(rng.normal(size=(4, 2)).astype("float32")),
         "b": tf.constant(rng.normal(size=(4, 3)).astype("float32"))}
    y = tf.constant([0, 1, 2, 0])
    call = lambda x, y: keras_opnorm.pgd_attack(
        model, x, y, epsilon=0.2, num_steps=2, random_start=False)
    eager = call(x, y)
    self.assertEqual(sorted(eager), ["a", "b"])
    self.assertLen(_compiled.cache_entries(), 1)
    graph = tf.function(call)(x, y)
    for k in ("a", "b"):
      self.assertAllClose(eager[k], graph[k], atol=1e-6)
    # A linear model: the (2,2) operator norm is the largest singular value of W.
    norm = keras_opnorm.operator_norm(model, x).norm
    w = model.layers[-1].kernel.numpy()
    self.assertAllClose(norm, np.full(4, np.linalg.svd(w, compute_uv=False)[0]), rtol=1e-4)

  def test_results_keep_python_values_and_gradients(self):
    model = _mlp()
    x, _ = _data()
    result = keras_opnorm.operator_norm(model, x, 1, 2)
    self.assertIs(result.exact, True)  # (1, q): the max column norm, a Python bool.
    # Differentiable in the weights through the compiled call, as eagerly:
    # (1, 2) of a ReLU MLP is max_j ||J e_j||_2 with J = W2^T D W1^T.
    with tf.GradientTape() as tape:
      norm = tf.reduce_sum(keras_opnorm.operator_norm(model, x, 1, 2).norm)
    grads = tape.gradient(norm, model.trainable_variables)
    with tf.GradientTape() as tape:
      norm_graph = tf.reduce_sum(tf.function(
          lambda x: keras_opnorm.operator_norm(model, x, 1, 2).norm)(x))
    grads_graph = tape.gradient(norm_graph, model.trainable_variables)
    self.assertAllClose(norm, norm_graph)
    for g, h in zip(grads, grads_graph):
      if g is None:  # The output bias does not change the Jacobian.
        self.assertIsNone(h)
      else:
        self.assertAllClose(g, h)

  def test_public_functions_keep_their_signature_and_docstring(self):
    import inspect  # pylint: disable=g-import-not-at-top
    for fn in (keras_opnorm.pgd_attack, keras_opnorm.operator_norm,
               keras_opnorm.singular_values, keras_opnorm.apgd_attack,
               keras_opnorm.fab_attack, keras_opnorm.fmn_attack):
      self.assertIn("Args:", fn.__doc__)
      self.assertEqual(list(inspect.signature(fn).parameters)[:2], ["f", "x"])


if __name__ == "__main__":
  tf.test.main()
