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

with XLA off and on. The library runs two ways: inside a ``tf.function``
(``lib``) and, with XLA off, called directly from eager code (``eager``: the
README's call, which runs through the library's cached internal
``tf.function``, `keras_opnorm._compiled`). The library, the eager call, the
reference and the clean step are run interleaved (``A B C D, D C B A, ...``;
see `benchmarks._timing`), each sample lasting about ``--min_sample_ms``; the
table gives the medians over ``--repeats`` samples, the ratios of the
medians (library / reference, eager / reference) and the interquartile range
of the per-repeat ratios. Tracing and compilation are excluded from these
(warm-up calls) and reported apart: the first call (trace + one run, in ms)
of the eager direct call, of a fresh ``tf.function`` around the library, and
of a fresh ``tf.function`` around the library's undecorated code converted
by AutoGraph (what the first trace cost before the library's graph-building
code was marked ``do_not_convert``; AutoGraph caches a conversion, so that
column is the full cost only in the first row of each function). Never
asserted: these machines are noisy.

Usage::

  python -m benchmarks.bench_core                 # defaults (CNN, batch 128)
  python -m benchmarks.bench_core --model=mlp --batch_size=256 --repeats=50
"""

from absl import app
from absl import flags
import inspect
import time

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


def first_call_ms(fn, *args):
  """Milliseconds of ``fn(*args)``'s first call (trace + one run)."""
  start = time.perf_counter()
  _timing.blocking(fn, *args)()
  return 1e3 * (time.perf_counter() - start)


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
    raw_norm = inspect.unwrap(keras_opnorm.operator_norm)
    raw_pgd = inspect.unwrap(keras_opnorm.pgd_attack)
    for p in ("2", "inf"):
      call = lambda x, v0, p=p, fn=keras_opnorm.operator_norm: fn(
          model, x, float(p), 2, method="power", num_iters=k, v0=v0).norm
      cases.append((f"operator_norm ({p},2), K={k}", call,
                    lambda x, v0, p=p: raw_norm(model, x, float(p), 2, method="power",
                                                num_iters=k, v0=v0).norm,
                    reference_power(model, k, p), (x, v0)))
    args = (x, y)
    for p in ("inf", "2"):
      call = lambda x, y, p=p, fn=keras_opnorm.pgd_attack: fn(
          model, x, y, epsilon=eps[p], p=float(p), num_steps=k,
          random_start=False, loss="crossentropy")
      cases.append((f"pgd_attack l{p}, K={k}", call,
                    lambda x, y, p=p: raw_pgd(model, x, y, epsilon=eps[p], p=float(p),
                                              num_steps=k, random_start=False,
                                              loss="crossentropy"),
                    reference_pgd(model, k, eps[p], p), args))
    for name, call, raw, reference, args in cases:
      lib, ref = compile_(call), compile_(reference)
      first = {}
      if not jit:
        first["autograph"] = first_call_ms(tf.function(raw), *args)
      first["lib"] = first_call_ms(lib, *args)
      fns = {"lib": _timing.blocking(lib, *args), "ref": _timing.blocking(ref, *args),
             "clean": clean}
      if not jit:
        first["eager"] = first_call_ms(call, *args)
        fns["eager"] = _timing.blocking(call, *args)
      times = _timing.interleave(fns, **timing)
      vs_ref = _timing.compare(times, "lib", "ref")
      vs_clean = _timing.compare(times, "lib", "clean")
      eager = _timing.compare(times, "eager", "ref") if not jit else None
      rows.append((xla, name, vs_ref, vs_clean, eager, first))
      print(f"  measured: XLA {xla}, {name}", flush=True)

  print(f"\nmodel={_MODEL.value} batch={_BATCH.value} K={k} threads={_THREADS.value or 'default'} ({_REPEATS.value} "
        f"interleaved samples; ratio = median library / median reference; "
        f"IQR = quartiles of the per-sample ratios)")
  print("| XLA | computation | library ms | reference ms | ratio | ratio IQR | x clean step "
        "| eager ms | eager ratio | eager IQR | first call ms: eager / tf.function / "
        "AutoGraph-converted |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for xla, name, vs_ref, vs_clean, eager, first in rows:
    if eager is None:
      eager_cols = "n/a | n/a | n/a"
      first_col = f"n/a / {first['lib']:.0f} / n/a"
    else:
      eager_cols = f"{1e3 * eager.median_a:.2f} | {eager.ratio:.2f} | {eager.spread}"
      first_col = f"{first['eager']:.0f} / {first['lib']:.0f} / {first['autograph']:.0f}"
    print(f"| {xla} | {name} | {1e3 * vs_ref.median_a:.2f} | {1e3 * vs_ref.median_b:.2f} | "
          f"{vs_ref.ratio:.2f} | {vs_ref.spread} | {vs_clean.ratio:.1f} | {eager_cols} | "
          f"{first_col} |")


if __name__ == "__main__":
  app.run(main)
