r"""Speed of keras_opnorm's core functions against hand-written references.

Measures, in one process, on the same model and batch:

* ``operator_norm`` (K power iterations, (p,q) = (2,2) and (inf,2)) against a
  minimal hand-written ``tf.function`` power iteration of the same computation;
* ``pgd_attack`` (K steps, l-inf and l2) against a minimal hand-written PGD;
* both against one clean forward + backward pass (the unit of cost);

with XLA off and on, and prints the ratios (library / reference). Timings
are the median of ``--repeats`` runs after a warm-up call (tracing and
compilation excluded). Never asserted: these machines are noisy.

Usage::

  python -m benchmarks.bench_core                 # defaults (CNN, batch 128)
  python -m benchmarks.bench_core --model=mlp --batch_size=256
"""

import statistics
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import keras_opnorm

_MODEL = flags.DEFINE_enum("model", "cnn", ["cnn", "mlp"], "Benchmark network.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_ITERS = flags.DEFINE_integer("iters", 10, "Power iterations / PGD steps K.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repetitions (median).")
_XLA = flags.DEFINE_list("xla", ["off", "on"], "XLA settings to measure.")


def make_model(kind):
  """A small ReLU network producing 10 logits."""
  if kind == "mlp":
    inputs = keras.Input((64,))
    h = keras.layers.Dense(256, activation="relu")(inputs)
    h = keras.layers.Dense(256, activation="relu")(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h)), (64,)
  inputs = keras.Input((32, 32, 3))
  h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
  h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
  h = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
  h = keras.layers.GlobalAveragePooling2D()(h)
  return keras.Model(inputs, keras.layers.Dense(10)(h)), (32, 32, 3)


def _l2_normalize(t):
  axes = list(range(1, t.shape.rank))
  n = tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True))
  return t / tf.maximum(n, 1e-12)


def reference_power_22(model, iters):
  """Hand-written (2,2) power iteration: v <- J^T J v / ||.||, norm ||Jv||_2."""

  def run(x, v0):
    v = _l2_normalize(v0)
    jv = tf.zeros([tf.shape(x)[0], 10])
    for _ in tf.range(iters):
      with tf.autodiff.ForwardAccumulator(x, v) as acc:
        y = model(x, training=False)
      jv = acc.jvp(y)
      u = _l2_normalize(jv)
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = model(x, training=False)
      v = _l2_normalize(tape.gradient(y, x, output_gradients=u))
    with tf.autodiff.ForwardAccumulator(x, v) as acc:
      y = model(x, training=False)
    return tf.norm(acc.jvp(y), axis=1)

  return run


def reference_pgd(model, iters, eps, p):
  """Hand-written PGD on cross-entropy w.r.t. the clean prediction."""
  alpha = 2.5 * eps / iters

  def run(x, y):
    x_adv = x
    for _ in tf.range(iters):
      with tf.GradientTape() as tape:
        tape.watch(x_adv)
        logits = model(x_adv, training=False)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
      g = tape.gradient(loss, x_adv)
      if p == "inf":
        x_adv = x + tf.clip_by_value(x_adv + alpha * tf.sign(g) - x, -eps, eps)
      else:
        d = x_adv + alpha * _l2_normalize(g) - x
        axes = list(range(1, d.shape.rank))
        n = tf.sqrt(tf.reduce_sum(tf.square(d), axis=axes, keepdims=True))
        x_adv = x + d * tf.minimum(1.0, eps / tf.maximum(n, 1e-12))
    return x_adv

  return run


def clean_step(model):
  """One forward and backward pass w.r.t. the weights: the unit of cost."""

  def run(x, y):
    with tf.GradientTape() as tape:
      logits = model(x, training=False)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    return tape.gradient(loss, model.trainable_variables)

  return run


def time_fn(fn, *args, repeats):
  """Median wall time of ``fn(*args)`` after one warm-up call, in seconds."""
  tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv):
  del argv
  tf.random.set_seed(0)
  model, shape = make_model(_MODEL.value)
  k = _ITERS.value
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(0, 1, (_BATCH.value,) + shape).astype("float32"))
  y = tf.constant(rng.integers(0, 10, _BATCH.value))
  v0 = tf.constant(rng.normal(size=x.shape).astype("float32"))
  eps = {"inf": 8 / 255, "2": 0.5}

  rows = []
  for xla in _XLA.value:
    jit = xla == "on"
    compile_ = lambda f: tf.function(f, jit_compile=jit)
    base = time_fn(compile_(clean_step(model)), x, y, repeats=_REPEATS.value)
    rows.append((xla, "clean forward+backward", base, base, None))
    ref = compile_(reference_power_22(model, k))
    lib = compile_(lambda x, v0: keras_opnorm.operator_norm(
        model, x, 2, 2, method="power", num_iters=k, v0=v0).norm)
    t_ref = time_fn(ref, x, v0, repeats=_REPEATS.value)
    t_lib = time_fn(lib, x, v0, repeats=_REPEATS.value)
    rows.append((xla, f"operator_norm (2,2), K={k}", t_lib, t_ref, base))
    for p in ("inf", "2"):
      ref = compile_(reference_pgd(model, k, eps[p], p))
      lib = compile_(lambda x, y, p=p: keras_opnorm.pgd_attack(
          model, x, y, epsilon=eps[p], p=float(p), num_steps=k,
          random_start=False, loss="crossentropy"))
      t_ref = time_fn(ref, x, y, repeats=_REPEATS.value)
      t_lib = time_fn(lib, x, y, repeats=_REPEATS.value)
      rows.append((xla, f"pgd_attack l{p}, K={k}", t_lib, t_ref, base))

  print(f"\nmodel={_MODEL.value} batch={_BATCH.value} K={k} "
        f"(median of {_REPEATS.value}; ratio = library / hand-written reference)")
  print(f"| XLA | computation | library ms | reference ms | ratio | x clean step |")
  print(f"|---|---|---|---|---|---|")
  for xla, name, t_lib, t_ref, base in rows:
    mult = f"{t_lib / base:.1f}" if base else "1.0"
    print(f"| {xla} | {name} | {1e3 * t_lib:.1f} | {1e3 * t_ref:.1f} | "
          f"{t_lib / t_ref:.2f} | {mult} |")


if __name__ == "__main__":
  app.run(main)
