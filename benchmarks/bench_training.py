r"""Speed of keras_opnorm's training objectives against hand-written train steps.

For each objective, in one process, on the same network, batch and
optimizer, this times one training step three ways:

* **library**: a plain compiled functional model with the objective's
  callback (`keras_opnorm.callbacks`) attached exactly as ``model.fit``
  attaches it (``make_train_function``, then the callback's
  ``on_train_begin`` / ``on_epoch_begin``, which install
  `keras_opnorm.training.TrainStep` and rebuild the train function);
* **hand-written**: a ``keras.Model`` subclass (built with the functional
  constructor, same layers and initial weights) whose ``train_step`` is a
  minimal ``tf.GradientTape`` implementation of the same objective: the same
  forward and backward passes (clean pass, attack steps or power iterations,
  the penalty's pass), the same random start, and the same logs (the loss
  and the objective's metrics, tracked with ``keras.metrics.Mean``);
* **clean**: the same plain model with Keras' own ``train_step`` (no
  objective): the unit of cost ("x clean step").

What is timed is ``model.train_function(iterator)``, the compiled function
that ``model.fit`` calls once per batch (``steps_per_execution=1``), on an
iterator over one repeated batch; ``train_on_batch`` is not used because it
builds a data adapter and converts logs in Python on every call, overhead
that ``fit`` does not pay per step. The Python call of the train function
(the same for all three) is included. The three models are run interleaved
(``A B C, C B A, ...``; see `benchmarks._timing`), each sample lasting about
``--min_sample_ms``; the table gives the medians over ``--repeats`` samples,
the ratio of the medians (library / hand-written) and the interquartile
range of the per-sample ratios. Tracing and compilation are excluded
(warm-up steps). Never asserted: these machines are noisy.

Objectives (the callbacks' defaults otherwise: the clean loss is kept,
``weight=1`` for adversarial training, the attack and power iterations in
inference mode, the penalty's pass in training mode):

* ``at_ce``: `AdversarialTraining` PGD-10, l-inf, eps 8/255, cross-entropy,
  random start;
* ``at_logit``: `AdversarialTraining` PGD-10, l2, eps 0.5, the l2 logit
  distance ``||f(x*) - f(x)||_2``, random start;
* ``opnorm_sos``: `OperatorNormRegularization` (2,2), sum-of-squares form,
  10 power iterations, eps 1, weight 2e-2;
* ``opnorm_jac``: the same, Jacobian form;
* ``spectral``: `SpectralNormRegularization`, weight 3e-4, one iteration.

Known: with XLA, back-propagating through a forward-mode
(``ForwardAccumulator``) product of a network with a bias makes TensorFlow
2.21's XLA launcher treat the input and all weights as compile-time
constants ("Must be const args" in ``TF_CPP_VMODULE=xla_launch_util=2``), so
each weight update misses the compilation cache and the step recompiles
(about 0.6 s per MLP step). The library's Jacobian form therefore computes
its differentiated ``J v`` by double backward, and so does the hand-written
reference here.

Usage::

  python -m benchmarks.bench_training
  python -m benchmarks.bench_training --models=mlp --xla=off --repeats=20
"""

import math

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import keras_opnorm
from benchmarks import _timing

OBJECTIVES = ("at_ce", "at_logit", "opnorm_sos", "opnorm_jac", "spectral")
LABELS = {
    "at_ce": "AdversarialTraining PGD-10 linf crossentropy",
    "at_logit": "AdversarialTraining PGD-10 l2 'logit'",
    "opnorm_sos": "OperatorNormRegularization (2,2) sum_of_squares K=10",
    "opnorm_jac": "OperatorNormRegularization (2,2) jacobian K=10",
    "spectral": "SpectralNormRegularization",
}

_MODELS = flags.DEFINE_list("models", ["mlp", "cnn"], "Networks: mlp and/or cnn.")
_OBJECTIVES = flags.DEFINE_list("objectives", list(OBJECTIVES), "Objectives to time.")
_REPEATS = flags.DEFINE_integer("repeats", 30, "Interleaved samples per step.")
_MIN_SAMPLE_MS = flags.DEFINE_float(
    "min_sample_ms", 20.0, "Each sample repeats the step until it lasts this long.")
_XLA = flags.DEFINE_list("xla", ["off", "on"], "XLA settings to measure.")
_THREADS = flags.DEFINE_integer(
    "threads", 0, "TensorFlow intra- and inter-op threads (0: TensorFlow's default).")

EPS_INF = 8 / 255
EPS_L2 = 0.5
NUM_STEPS = 10
OPNORM_EPS = 1.0
OPNORM_WEIGHT = 2e-2
SPECTRAL_WEIGHT = 3e-4


# ----------------------------------------------------------------------------
# Networks and data.


def _layers(kind):
  """``(inputs, logits, batch_size)`` of the digits MLP or the small CNN."""
  if kind == "mlp":
    inputs = keras.Input((64,))
    h = keras.layers.Dense(256, activation="relu")(inputs)
    h = keras.layers.Dense(256, activation="relu")(h)
    return inputs, keras.layers.Dense(10)(h), 128
  inputs = keras.Input((32, 32, 3))
  h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
  h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
  h = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
  h = keras.layers.GlobalAveragePooling2D()(h)
  return inputs, keras.layers.Dense(10)(h), 64


def _compile(model, jit):
  model.compile(
      optimizer=keras.optimizers.SGD(learning_rate=1e-3),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      jit_compile=jit)
  return model


def _batch(model, batch_size):
  rng = np.random.default_rng(0)
  shape = (batch_size,) + tuple(model.input_shape[1:])
  x = rng.uniform(0, 1, shape).astype("float32")
  y = rng.integers(0, 10, batch_size).astype("int32")
  return x, y


# ----------------------------------------------------------------------------
# Hand-written train steps.


def _axes(t):
  return list(range(1, t.shape.rank))


def _l2_normalize(t):
  n = tf.sqrt(tf.reduce_sum(tf.square(t), axis=_axes(t), keepdims=True))
  return t / tf.maximum(n, 1e-12)


def _l2_distance(a, b):
  return tf.sqrt(tf.reduce_sum(tf.square(a - b), axis=-1))


class HandWritten(keras.Model):
  """A functional model with a hand-written regularised ``train_step``.

  ``train_step`` is the Keras 3 guide's (clean pass, compiled loss, one
  ``tf.GradientTape``, ``optimizer.apply``) plus ``penalty(x, y, y_pred)``,
  written out per objective by the subclasses; the logs are the loss and
  the penalty's metrics, each a running ``keras.metrics.Mean``.
  """

  metric_names = ()

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.loss_mean = keras.metrics.Mean(name="loss")
    self.penalty_means = [keras.metrics.Mean(name=n) for n in self.metric_names]

  def penalty(self, x, y, y_pred):
    """Returns ``(term added to the loss, [metric values])``."""
    raise NotImplementedError

  def train_step(self, data):
    x, y = data
    with tf.GradientTape() as tape:
      y_pred = self(x, training=True)
      loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
      term, values = self.penalty(x, y, y_pred)
      loss = loss + term
    grads = tape.gradient(loss, self.trainable_variables)
    self.optimizer.apply(grads, self.trainable_variables)
    self.loss_mean.update_state(loss)
    logs = {"loss": self.loss_mean.result()}
    for mean, value in zip(self.penalty_means, values):
      mean.update_state(value)
      logs[mean.name] = mean.result()
    return logs

  # Shared pieces.

  def pgd(self, x, x_adv, loss_fn, eps, p):
    """``NUM_STEPS`` PGD steps from ``x_adv`` (inference mode), step 2.5 eps / K."""
    alpha = 2.5 * eps / NUM_STEPS

    def step(i, x_adv):
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x_adv)
        loss = tf.reduce_sum(loss_fn(self(x_adv, training=False)))
      g = tape.gradient(loss, x_adv)
      if p == "inf":
        return i + 1, x + tf.clip_by_value(x_adv + alpha * tf.sign(g) - x, -eps, eps)
      d = x_adv + alpha * _l2_normalize(g) - x
      n = tf.sqrt(tf.reduce_sum(tf.square(d), axis=_axes(d), keepdims=True))
      return i + 1, x + d * tf.minimum(1.0, eps / tf.maximum(n, 1e-12))

    # (Keras' train function is not converted by AutoGraph: explicit loops.)
    _, x_adv = tf.while_loop(lambda i, _: i < NUM_STEPS, step, (0, x_adv))
    return tf.stop_gradient(x_adv)

  def power_iteration(self, x):
    """(2,2) power method, ``NUM_STEPS`` iterations: ``(v, ||J v||_2)``."""

    def step(i, v):
      with tf.autodiff.ForwardAccumulator(x, v) as acc:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
          tape.watch(x)
          logits = self(x, training=False)
      u = _l2_normalize(acc.jvp(logits))
      return i + 1, _l2_normalize(tape.gradient(logits, x, output_gradients=u))

    v = _l2_normalize(tf.random.normal(tf.shape(x)))
    _, v = tf.while_loop(lambda i, _: i < NUM_STEPS, step, (0, v))
    v = tf.stop_gradient(v)
    with tf.autodiff.ForwardAccumulator(x, v) as acc:
      logits = self(x, training=False)
    return v, tf.norm(acc.jvp(logits), axis=-1)


class HandWrittenAdversarialCE(HandWritten):
  """Madry PGD (l-inf, cross-entropy, random start) + the clean loss."""

  metric_names = ("adv_accuracy", "adv_loss")

  def penalty(self, x, y, y_pred):
    x_adv = x + tf.random.uniform(tf.shape(x), -EPS_INF, EPS_INF)
    ce = lambda logits: tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
    x_adv = self.pgd(x, x_adv, ce, EPS_INF, "inf")
    logits_adv = self(x_adv, training=True)
    adv_loss = tf.reduce_mean(ce(logits_adv))
    correct = tf.equal(tf.argmax(logits_adv, axis=-1, output_type=tf.int32), y)
    return adv_loss, [tf.reduce_mean(tf.cast(correct, tf.float32)), adv_loss]


class HandWrittenAdversarialLogit(HandWritten):
  """PGD (l2, random start) on ``||f(x*) - f(x)||_2``, the same distance added."""

  metric_names = ("adv_loss",)

  def penalty(self, x, y, y_pred):
    logits_clean = tf.stop_gradient(self(x, training=False))
    # Uniform in the l2 ball (Barthe et al. 2005): z ~ N(0, 1/2), w ~ Exp(1).
    z = tf.random.normal(tf.shape(x), stddev=math.sqrt(0.5))
    w = -tf.math.log(tf.random.uniform(tf.shape(x)[:1], 1e-12, 1.0))
    r = tf.sqrt(tf.reduce_sum(tf.square(z), axis=_axes(z)) + w)
    x_adv = x + EPS_L2 * z / tf.reshape(r, [-1] + [1] * (x.shape.rank - 1))
    x_adv = self.pgd(x, x_adv, lambda l: _l2_distance(l, logits_clean), EPS_L2, "2")
    adv_loss = tf.reduce_mean(_l2_distance(self(x_adv, training=True), y_pred))
    return adv_loss, [adv_loss]


class HandWrittenOperatorNormSOS(HandWritten):
  """d.d. SNR: ``weight/2 * ||f(x + eps v) - f(x)||_2^2``, v from 10 power iterations."""

  metric_names = ("opnorm", "opnorm_loss")

  def penalty(self, x, y, y_pred):
    v, norm = self.power_iteration(x)
    diff = self(x + OPNORM_EPS * v, training=True) - y_pred
    mean = tf.reduce_mean(0.5 * tf.reduce_sum(tf.square(diff), axis=-1))
    return OPNORM_WEIGHT * mean, [tf.reduce_mean(norm), mean]


class HandWrittenOperatorNormJacobian(HandWritten):
  """``weight/2 * eps^2 * (u^T J v)^2``, ``J v = d/dz <J^T z, v>`` (double backward)."""

  metric_names = ("opnorm", "opnorm_loss")

  def penalty(self, x, y, y_pred):
    v, norm = self.power_iteration(x)
    with tf.GradientTape() as outer:
      with tf.GradientTape() as inner:
        inner.watch(x)
        logits = self(x, training=True)
      z = tf.zeros_like(logits)
      outer.watch(z)
      s = tf.reduce_sum(inner.gradient(logits, x, output_gradients=z) * v)
    jv = outer.gradient(s, z)
    u = tf.stop_gradient(_l2_normalize(jv))
    per_example = OPNORM_EPS ** 2 * 0.5 * tf.square(tf.reduce_sum(u * jv, axis=-1))
    mean = tf.reduce_mean(per_example)
    return OPNORM_WEIGHT * mean, [tf.reduce_mean(norm), mean]


class HandWrittenSpectral(HandWritten):
  """Yoshida & Miyato: ``weight/2 * sum_l sigma(W_l)^2``, one power iteration each."""

  metric_names = ("spectral_norm_max", "spectral_norm_loss")

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    rng = np.random.default_rng(0)
    self.kernels = [layer for layer in self.layers if hasattr(layer, "kernel")]
    self.us = []
    for layer in self.kernels:
      u0 = rng.standard_normal(layer.kernel.shape[-1]).astype("float32")
      self.us.append(keras.Variable(u0 / np.linalg.norm(u0), trainable=False))

  def penalty(self, x, y, y_pred):
    sigmas = []
    for layer, u_var in zip(self.kernels, self.us):
      w = tf.reshape(layer.kernel.value, [-1, layer.kernel.shape[-1]])  # [in, out]
      w_const = tf.stop_gradient(w)
      v = tf.math.l2_normalize(tf.linalg.matvec(w_const, u_var.value))
      u = tf.stop_gradient(tf.math.l2_normalize(tf.linalg.matvec(w_const, v, transpose_a=True)))
      u_var.assign(u)
      sigmas.append(tf.tensordot(u, tf.linalg.matvec(w, v, transpose_a=True), 1))
    sigmas = tf.stack(sigmas)
    penalty = 0.5 * tf.reduce_sum(tf.square(sigmas))
    return SPECTRAL_WEIGHT * penalty, [tf.reduce_max(sigmas), penalty]


HAND_WRITTEN = {
    "at_ce": HandWrittenAdversarialCE,
    "at_logit": HandWrittenAdversarialLogit,
    "opnorm_sos": HandWrittenOperatorNormSOS,
    "opnorm_jac": HandWrittenOperatorNormJacobian,
    "spectral": HandWrittenSpectral,
}


def library_callback(name):
  """The keras_opnorm callback of objective ``name``."""
  cb = keras_opnorm.callbacks
  if name == "at_ce":
    return cb.AdversarialTraining(EPS_INF, p="inf", num_steps=NUM_STEPS, loss="crossentropy")
  if name == "at_logit":
    return cb.AdversarialTraining(EPS_L2, p=2, num_steps=NUM_STEPS, loss="logit", q=2)
  if name in ("opnorm_sos", "opnorm_jac"):
    form = "sum_of_squares" if name == "opnorm_sos" else "jacobian"
    return cb.OperatorNormRegularization(
        OPNORM_EPS, p=2, q=2, weight=OPNORM_WEIGHT, num_iters=NUM_STEPS, form=form)
  return cb.SpectralNormRegularization(SPECTRAL_WEIGHT, num_iters=1)


# ----------------------------------------------------------------------------
# The three train functions.


def _step(model, x, y):
  """A blocking ``() -> None`` running ``model.train_function`` once."""
  iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())

  def run():
    logs = model.train_function(iterator)
    logs["loss"].numpy()

  return run


def build_steps(kind, name, jit):
  """``({'lib', 'hand', 'clean'} -> step, callback)`` for one configuration."""
  keras.utils.set_random_seed(0)
  inputs, outputs, batch_size = _layers(kind)
  lib = _compile(keras.Model(inputs, outputs), jit)
  hand = _compile(HAND_WRITTEN[name](*_layers(kind)[:2]), jit)
  clean = _compile(keras.Model(*_layers(kind)[:2]), jit)
  for m in (hand, clean):  # Same initial weights, layer by layer.
    for src, dst in zip(lib.layers, m.layers):
      dst.set_weights(src.get_weights())
  x, y = _batch(lib, batch_size)

  # As model.fit: build the train function, then the callback's hooks.
  callback = library_callback(name)
  for m in (lib, hand, clean):
    m.make_train_function()
  callback.set_model(lib)
  callback.on_train_begin()
  callback.on_epoch_begin(0)
  steps = {"lib": _step(lib, x, y), "hand": _step(hand, x, y), "clean": _step(clean, x, y)}
  return steps, callback


def main(argv):
  del argv
  _timing.set_threads(_THREADS.value)
  timing = dict(repeats=_REPEATS.value, min_sample_s=_MIN_SAMPLE_MS.value / 1e3)
  rows = []
  for kind in _MODELS.value:
    for xla in _XLA.value:
      for name in _OBJECTIVES.value:
        steps, callback = build_steps(kind, name, xla == "on")
        times = _timing.interleave(steps, **timing)
        callback.on_train_end()
        rows.append((kind, name, xla, _timing.compare(times, "lib", "hand"),
                     _timing.compare(times, "lib", "clean")))
        print(f"  measured: {kind}, XLA {xla}, {name}", flush=True)

  print(f"\nthreads={_THREADS.value or 'default'}, {_REPEATS.value} interleaved "
        f"samples of model.train_function; ratio = median library / median "
        f"hand-written; IQR = quartiles of the per-sample ratios; x clean step = "
        f"median library / median Keras train_step without objective")
  print("| model | objective | XLA | library ms/step | hand-written ms/step | ratio | ratio IQR | x clean step |")
  print("|---|---|---|---|---|---|---|---|")
  for kind, name, xla, vs_hand, vs_clean in rows:
    model = "MLP 64-256-256-10, batch 128" if kind == "mlp" else "CNN 32x32x3, batch 64"
    print(f"| {model} | {LABELS[name]} | {xla} | {1e3 * vs_hand.median_a:.2f} | "
          f"{1e3 * vs_hand.median_b:.2f} | {vs_hand.ratio:.2f} | {vs_hand.spread} | "
          f"{vs_clean.ratio:.1f} |")


if __name__ == "__main__":
  app.run(main)
