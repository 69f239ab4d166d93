r"""Speed of keras_opnorm's core functions against hand-written references.

Measures, in one process, on the same model and batch:

* ``operator_norm`` (``method='power'``, K iterations, (p,q) = (2,2) and
  (inf,2)) against a minimal hand-written ``tf.function`` power iteration
  doing exactly the same passes: K iterations of one forward pass that
  carries the tangent ``J v`` (a ``ForwardAccumulator`` around the
  ``GradientTape``) and one backward pass ``J^T u``, then one forward-mode
  pass for ``||J v_K||_q``;
* ``pgd_attack`` (K steps, l-inf and l2, ``random_start=False``, labels
  given, cross-entropy: no clean forward pass) against a minimal hand-written
  PGD of one forward and one backward pass per step;
* both against one clean forward + backward pass with respect to the weights
  (the unit of cost);

with XLA off and on. The library, the reference and the clean step are run
interleaved (``A B C, C B A, ...``; see `benchmarks._timing`), each sample
lasting about ``--min_sample_ms``; the table gives the medians over
``--repeats`` samples, the ratio of the medians (library / reference) and
the interquartile range of the per-repeat ratios. Tracing and compilation
are excluded (warm-up calls). Never asserted: these machines are noisy.

Usage::

  python -m benchmarks.bench_core                 # defaults (CNN, batch 128)
  python -m benchmarks.bench_core --model=mlp --batch_size=256 --repeats=50
"""

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import keras_opnorm
from benchmarks import _timing

_MODEL = flags.DEFINE_enum("model", "cnn", ["cnn", "mlp"], "Benchmark network.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_ITERS = flags.DEFINE_integer("iters", 10, "Power iterations / PGD steps K.")
_REPEATS = flags.DEFINE_integer("repeats", 30, "Interleaved samples per function.")
_MIN_SAMPLE_MS = flags.DEFINE_float(
    "min_sample_ms", 20.0, "Each sample repeats a call until it lasts this long.")
_XLA = flags.DEFINE_list("xla", ["off", "on"], "XLA settings to measure.")
_THREADS = flags.DEFINE_integer(
    "threads", 0, "TensorFlow intra- and inter-op threads (0: TensorFlow's default).")


def make_model(kind):
  """A small ReLU network producing 10 logits, and its input shape."""
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


def _axes(t):
  return list(range(1, t.shape.rank))


def _l2_normalize(t):
  n = tf.sqrt(tf.reduce_sum(tf.square(t), axis=_axes(t), keepdims=True))
  return t / tf.maximum(n, 1e-12)


def reference_power(model, iters, p):
  """Hand-written (p,2) power iteration for p in {2, inf}.

  ``u = J v / ||J v||_2``, ``v = s_p(J^T u)`` (``s_2(g) = g / ||g||_2``,
  ``s_inf(g) = sign(g)``) from the lp-normalised ``v0``; returns
  ``||J v_K||_2``. Per iteration one forward pass carries the tangent and is
  recorded for the backward pass, as in the library.
  """
  s_p = _l2_normalize if p == "2" else tf.sign

  def run(x, v0):
    if p == "2":
      v = _l2_normalize(v0)
    else:
      v = v0 / tf.reduce_max(tf.abs(v0), axis=_axes(v0), keepdims=True)
    for _ in tf.range(iters):
      with tf.autodiff.ForwardAccumulator(x, v) as acc:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
          tape.watch(x)
          y = model(x, training=False)
      u = _l2_normalize(acc.jvp(y))
      v = s_p(tape.gradient(y, x, output_gradients=u))
    with tf.autodiff.ForwardAccumulator(x, v) as acc:
      y = model(x, training=False)
    return tf.norm(acc.jvp(y), axis=1)

  return run


def reference_pgd(model, iters, eps, p):
  """Hand-written PGD on the cross-entropy of the given labels, from x."""
  alpha = 2.5 * eps / iters

  def run(x, y):
    x_adv = x
    for _ in tf.range(iters):
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x_adv)
        logits = model(x_adv, training=False)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
      g = tape.gradient(loss, x_adv)
      if p == "inf":
        x_adv = x + tf.clip_by_value(x_adv + alpha * tf.sign(g) - x, -eps, eps)
      else:
        d = x_adv + alpha * _l2_normalize(g) - x
        n = tf.sqrt(tf.reduce_sum(tf.square(d), axis=_axes(d), keepdims=True))
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


def main(argv):
  del argv
  _timing.set_threads(_THREADS.value)
  tf.random.set_seed(0)
  model, shape = make_model(_MODEL.value)
  k = _ITERS.value
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(0, 1, (_BATCH.value,) + shape).astype("float32"))
  y = tf.constant(rng.integers(0, 10, _BATCH.value).astype("int32"))
  v0 = tf.constant(rng.normal(size=x.shape).astype("float32"))
  eps = {"inf": 8 / 255, "2": 0.5}
  timing = dict(repeats=_REPEATS.value, min_sample_s=_MIN_SAMPLE_MS.value / 1e3)

  rows = []
  for xla in _XLA.value:
    jit = xla == "on"
    compile_ = lambda f: tf.function(f, jit_compile=jit)  # pylint: disable=cell-var-from-loop
    clean = _timing.blocking(compile_(clean_step(model)), x, y)
    cases = []
    for p in ("2", "inf"):
      lib = compile_(lambda x, v0, p=p: keras_opnorm.operator_norm(
          model, x, float(p), 2, method="power", num_iters=k, v0=v0).norm)
      ref = compile_(reference_power(model, k, p))
      cases.append((f"operator_norm ({p},2), K={k}",
                    _timing.blocking(lib, x, v0), _timing.blocking(ref, x, v0)))
    for p in ("inf", "2"):
      lib = compile_(lambda x, y, p=p: keras_opnorm.pgd_attack(
          model, x, y, epsilon=eps[p], p=float(p), num_steps=k,
          random_start=False, loss="crossentropy"))
      ref = compile_(reference_pgd(model, k, eps[p], p))
      cases.append((f"pgd_attack l{p}, K={k}",
                    _timing.blocking(lib, x, y), _timing.blocking(ref, x, y)))
    for name, lib, ref in cases:
      times = _timing.interleave({"lib": lib, "ref": ref, "clean": clean}, **timing)
      vs_ref = _timing.compare(times, "lib", "ref")
      vs_clean = _timing.compare(times, "lib", "clean")
      rows.append((xla, name, vs_ref, vs_clean))
      print(f"  measured: XLA {xla}, {name}", flush=True)

  print(f"\nmodel={_MODEL.value} batch={_BATCH.value} K={k} threads={_THREADS.value or 'default'} ({_REPEATS.value} "
        f"interleaved samples; ratio = median library / median reference; "
        f"IQR = quartiles of the per-sample ratios)")
  print("| XLA | computation | library ms | reference ms | ratio | ratio IQR | x clean step |")
  print("|---|---|---|---|---|---|---|")
  for xla, name, vs_ref, vs_clean in rows:
    print(f"| {xla} | {name} | {1e3 * vs_ref.median_a:.2f} | {1e3 * vs_ref.median_b:.2f} | "
          f"{vs_ref.ratio:.2f} | {vs_ref.spread} | {vs_clean.ratio:.1f} |")


if __name__ == "__main__":
  app.run(main)
