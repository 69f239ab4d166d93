"""Monitor callbacks: robustness numbers on a held-out slice, every few epochs.

Each monitor evaluates the model on the data given at construction at the end
of every ``every_n_epochs``-th epoch and writes one number into the epoch's
``logs`` dict, where History, the progress bar and later callbacks see it:

* `OperatorNormMonitor`: mean per-example ``||J_f(x)||_{p,q}``
  (`keras_opnorm.evaluation.mean_operator_norm`), logged as ``'val_opnorm'``.
* `RobustAccuracy`: accuracy under lp PGD at one radius
  (`keras_opnorm.evaluation.robust_accuracy`), logged as ``'val_robust_acc'``.
* `AlignmentMonitor`: mean ``|cos|`` between the PGD perturbation and the top
  right singular vector of ``J_f(x)`` (`keras_opnorm.evaluation.alignment`),
  logged as ``'val_alignment'``.

Callback order: Keras calls the callbacks in list order with the same
``logs`` dict (History and the progress bar, added by ``fit``, come last and
always see the values). A callback that reads ``logs`` at epoch end, such as
``keras.callbacks.TensorBoard``, ``CSVLogger``, ``EarlyStopping`` or
``ModelCheckpoint`` monitoring ``'val_robust_acc'``, must come *after* the
monitors in the ``callbacks`` list:

    model.fit(..., callbacks=[
        keras_opnorm.callbacks.RobustAccuracy(x_val, y_val, epsilon=0.1),
        keras.callbacks.TensorBoard(log_dir),   # after the monitors
    ])

On epochs a monitor skips (``every_n_epochs > 1``) it writes nothing, like
Keras' ``validation_freq``: its History list holds one value per evaluated
epoch. The computation is compiled (`tf.function`) once per model and reused
across epochs and ``fit`` calls; per-run state (``values``) is reset in
``on_train_begin``.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import evaluation
from keras_opnorm import logits_view

__all__ = ["OperatorNormMonitor", "RobustAccuracy", "AlignmentMonitor"]

_INF = float("inf")


def _is_dataset(x):
  return isinstance(x, tf.data.Dataset)


def _as_data(x, name):
  """Held-out inputs: a float array, or a batched ``tf.data.Dataset`` as is.

  A dataset yields ``x`` batches, or ``(x, y)`` / ``(x, y, sample_weight)``
  batches (the weights are ignored), as in `keras_opnorm.evaluation`; it is
  walked by `keras_opnorm.evaluation._data._batches` at every evaluation.
  """
  if _is_dataset(x):
    spec = x.element_spec
    x_spec = spec[0] if isinstance(spec, (tuple, list)) else spec
    dtype = getattr(x_spec, "dtype", None)
    if dtype is None or not dtype.is_floating:
      raise TypeError(
          f"`{name}` must be a tf.data.Dataset of floating-point `x` batches (or "
          f"(x, y) batches). Received: {name} with element_spec={spec}")
    return x
  if x is None:
    raise ValueError(
        f"`{name}` must be an array or a batched tf.data.Dataset of held-out "
        f"examples. Received: {name}=None")
  return np.asarray(_checks.float_input(x, name))


def _dataset_has_labels(x):
  spec = x.element_spec
  return isinstance(spec, (tuple, list)) and len(spec) >= 2


def _no_labels_with_dataset(y):
  if y is not None:
    raise ValueError(
        "`y` must be None when `x` is a tf.data.Dataset: the dataset yields "
        f"(x, y) batches. Received: y of type {type(y).__name__}")


def _as_labels(y, n):
  y = np.asarray(y)
  if y.ndim == 2 and y.shape[-1] > 1:
    y = np.argmax(y, axis=-1)
  y = y.reshape(-1) if y.ndim == 2 else y
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(
        f"`y` must hold one integer or one-hot label per example of `x` ({n}). "
        f"Received: y with shape={np.shape(y)}")
  return y.astype(np.int32)


def _loss_name(loss):
  """The attack loss, which must be a name so that the monitor can be serialised."""
  if not isinstance(loss, str):
    raise TypeError(
        "`loss` must be the name of an attack loss ('crossentropy', 'logit', "
        f"'kl') so that the monitor can be serialised. Received: loss={loss!r}")
  return loss


def _clip(clip):
  return None if clip is None else tuple(float(c) for c in clip)


class _Monitor(keras.callbacks.Callback):
  """Shared machinery: schedule, compiled kernel per model, logging."""

  def __init__(self, x, *, name, every_n_epochs=1, batch_size=256, training=False,
               jit_compile=False, output=None, from_logits=True):
    super().__init__()
    self.output, _, self.from_logits = logits_view.check_settings(output, None, from_logits)
    if not isinstance(name, str) or not name:
      raise ValueError(f"`name` must be a non-empty string. Received: name={name!r}")
    self.x = _as_data(x, "x")
    self.name = name
    self.every_n_epochs = _checks.positive_int(every_n_epochs, "every_n_epochs")
    self.batch_size = _checks.positive_int(batch_size, "batch_size")
    self.training = bool(training)
    self.jit_compile = bool(jit_compile)
    self.values = []
    self._kernel = None
    self._kernel_model = None

  def _build_kernel(self, model):
    raise NotImplementedError

  def _compute(self, kernel):
    """Returns a dict ``log name -> float``."""
    raise NotImplementedError

  def _ensure_kernel(self):
    if self.model is None:
      raise ValueError(
          f"`model` is not set: {type(self).__name__} is a callback, pass it to "
          f"`model.fit(..., callbacks=[...])` (or call `set_model(model)` "
          f"first). Received: model=None")
    if self._kernel is None or self._kernel_model is not self.model:
      model = self.model
      if self.output is not None or not self.from_logits:
        model = logits_view.LogitsView(model, output=self.output, from_logits=self.from_logits)
      self._kernel = self._build_kernel(model)
      self._kernel_model = self.model
    return self._kernel

  def on_train_begin(self, logs=None):
    self.values = []
    self._ensure_kernel()

  def on_epoch_end(self, epoch, logs=None):
    if (epoch + 1) % self.every_n_epochs:
      return
    results = self._compute(self._ensure_kernel())
    self.values.append((int(epoch), results[self.name]))
    if logs is not None:
      logs.update(results)

  def get_config(self):
    if _is_dataset(self.x):
      raise NotImplementedError(
          f"{type(self).__name__} built on a tf.data.Dataset cannot be "
          f"serialised (`get_config`): give `x` (and `y`) as arrays to save "
          f"it. Received: x of type {type(self.x).__name__}")
    config = {
        "x": self.x,
        "name": self.name,
        "every_n_epochs": self.every_n_epochs,
        "batch_size": self.batch_size,
        "training": self.training,
        "jit_compile": self.jit_compile,
    }
    if self.output is not None:
      config["output"] = self.output
    if not self.from_logits:
      config["from_logits"] = False
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in ("x", "y"):
      # Arrays come back from Keras serialisation as {"class_name": "__numpy__", ...}.
      if isinstance(config.get(key), dict):
        config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)


@keras.saving.register_keras_serializable(package="keras_opnorm")
class OperatorNormMonitor(_Monitor):
  """Logs the mean per-example operator norm ``||J_f(x)||_{p,q}`` on held-out data.

  ``(1/n) sum_i max_{||v||_p <= 1} ||J_f(x_i) v||_q`` via
  `keras_opnorm.operator_norm` (the quantity data-dependent operator norm
  regularisation and, by Roth et al. 2020, adversarial training damp).

  Args:
    x: held-out inputs ``[n, ...]`` (an array; keep it small, e.g. 200), or
      a finite batched ``tf.data.Dataset`` of ``x`` or ``(x, y, ...)``
      batches (its own batches are used; ``batch_size`` is ignored).
    p: input norm. Defaults to `2`.
    q: output norm. Defaults to `2`.
    name: the ``logs`` key. Defaults to `'val_opnorm'`.
    num_iters: power iterations. Defaults to `20`.
    num_restarts: power-method restarts. Defaults to `1`.
    method: ``'auto'``, ``'power'`` or ``'exact'``. Defaults to `'auto'`.
    centered: norm of the centered-logits Jacobian ``P J``
      (`keras_opnorm.evaluation.center_logits`). Defaults to `False`.
    every_n_epochs: evaluate at the end of every n-th epoch. Defaults to `1`.
    batch_size: evaluation batch size. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    jit_compile: compile with XLA. Defaults to `False`.
    output: the logits output (name or index) of a model with several
      outputs. Defaults to `None` (the model's only output).
    from_logits: `False` if that output is probabilities (the library then
      uses ``log p``; see `keras_opnorm.LogitsView`). Defaults to `True`.

  Raises:
    TypeError: if ``x`` is not floating point.
    ValueError: an invalid ``p``, ``q``, ``num_iters``, ``num_restarts``,
      ``name``, ``every_n_epochs`` or ``batch_size``.

  Example:

  ```python
  model.fit(x, y, epochs=5, callbacks=[
      keras_opnorm.callbacks.OperatorNormMonitor(x_val[:200])])
  history.history['val_opnorm']
  ```
  """

  def __init__(self, x, p=2, q=2, *, name="val_opnorm", num_iters=20, num_restarts=1,
               method="auto", centered=False, every_n_epochs=1, batch_size=256,
               training=False, jit_compile=False, output=None, from_logits=True):
    super().__init__(x, name=name, every_n_epochs=every_n_epochs, batch_size=batch_size,
                     training=training, jit_compile=jit_compile, output=output,
                     from_logits=from_logits)
    self.p = _checks.exponent(p, "p")
    self.q = _checks.exponent(q, "q")
    self.num_iters = _checks.positive_int(num_iters, "num_iters")
    self.num_restarts = _checks.positive_int(num_restarts, "num_restarts")
    self.method = method
    self.centered = bool(centered)

  def _build_kernel(self, model):
    return evaluation._OperatorNormKernel(  # pylint: disable=protected-access
        model, p=self.p, q=self.q, num_iters=self.num_iters,
        num_restarts=self.num_restarts, method=self.method, centered=self.centered,
        training=self.training, jit_compile=self.jit_compile)

  def _compute(self, kernel):
    return {self.name: float(np.mean(kernel.run(self.x, self.batch_size)))}

  def get_config(self):
    return {
        **super().get_config(),
        "p": self.p,
        "q": self.q,
        "num_iters": self.num_iters,
        "num_restarts": self.num_restarts,
        "method": self.method,
        "centered": self.centered,
    }


@keras.saving.register_keras_serializable(package="keras_opnorm")
class RobustAccuracy(_Monitor):
  """Logs the accuracy under an lp attack at one radius on held-out data.

  An example counts if it is classified correctly both clean and after the
  attack: PGD (every restart; `keras_opnorm.evaluation.robust_accuracy`),
  or with ``attack='fast'`` / ``'standard'`` the AutoAttack-grade cascade of
  `keras_opnorm.evaluation.auto_attack` (the fast one, APGD-CE then APGD-T
  with 20 steps each, is made for monitoring; it ignores the PGD options).

  Args:
    x: held-out inputs ``[n, ...]`` (an array), or a finite batched
      ``tf.data.Dataset`` of ``(x, y)`` or ``(x, y, sample_weight)`` batches
      (its own batches are used; ``batch_size`` is ignored).
    y: their integer labels ``[n]`` or one-hot labels ``[n, d]``; ``None``
      when ``x`` is a dataset. Defaults to `None`.
    epsilon: the attack radius (> 0); required.
    p: the attack norm. Defaults to `inf`.
    name: the ``logs`` key. Defaults to `'val_robust_acc'`.
    num_steps: PGD steps. Defaults to `10`.
    step_size: PGD step size; ``None``: ``2.5 * epsilon / num_steps``.
      Defaults to `None`.
    num_restarts: PGD restarts. Defaults to `1`.
    loss: the attack loss. Defaults to `'crossentropy'`.
    q: logit-distance norm for ``loss='logit'``. Defaults to `2`.
    clip: ``(lo, hi)`` valid input range, or ``None``. Defaults to `None`.
    random_start: random start of PGD. Defaults to `True`.
    every_n_epochs: evaluate at the end of every n-th epoch. Defaults to `1`.
    batch_size: evaluation batch size. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    jit_compile: compile with XLA. Defaults to `False`.
    output: the logits output (name or index) of a model with several
      outputs. Defaults to `None` (the model's only output).
    from_logits: `False` if that output is probabilities (the library then
      uses ``log p``; see `keras_opnorm.LogitsView`). Defaults to `True`.
    attack: ``'pgd'``, or ``'fast'`` / ``'standard'`` for the ensemble's
      cascade (``p`` in ``{1, 2, inf}``). Defaults to `'pgd'`.
    seed: the ensemble's seed (each evaluation reuses it). Defaults to `0`.

  Raises:
    TypeError: if ``x`` is not floating point, or ``loss`` is not a name.
    ValueError: missing labels (``y=None`` with an array, a dataset without
      labels, or ``y`` with a dataset) or one label count off ``x``, or an invalid
      ``epsilon``, ``p``, ``q``, ``num_steps``, ``step_size``,
      ``num_restarts``, ``name``, ``every_n_epochs``, ``batch_size``,
      ``attack`` or ``seed``.

  Example:

  ```python
  model.fit(x, y, epochs=5, callbacks=[
      keras_opnorm.callbacks.RobustAccuracy(x_val, y_val, epsilon=0.1)])
  ```
  """

  def __init__(self, x, y=None, epsilon=None, p=_INF, *, name="val_robust_acc", num_steps=10,
               step_size=None, num_restarts=1, loss="crossentropy", q=2, clip=None,
               random_start=True, every_n_epochs=1, batch_size=256, training=False,
               jit_compile=False, attack="pgd", seed=0, output=None, from_logits=True):
    super().__init__(x, name=name, every_n_epochs=every_n_epochs, batch_size=batch_size,
                     training=training, jit_compile=jit_compile, output=output,
                     from_logits=from_logits)
    if _is_dataset(self.x):
      _no_labels_with_dataset(y)
      if not _dataset_has_labels(self.x):
        raise ValueError(
            "Labels are needed: the tf.data.Dataset passed as `x` must yield "
            f"(x, y) batches. Received: x with element_spec={self.x.element_spec}")
    elif y is None:
      raise ValueError("`y` must hold the labels of `x`. Received: y=None")
    if epsilon is None:
      raise ValueError("`epsilon` (the attack radius, > 0) is required. Received: epsilon=None")
    self.attack = _checks.one_of(attack, ("pgd", "fast", "standard"), "attack")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
    self.seed = int(seed)
    self.y = None if _is_dataset(self.x) else _as_labels(y, self.x.shape[0])
    self.epsilon = _checks.positive_float(epsilon, "epsilon")
    self.p = _checks.exponent(p, "p")
    self.num_steps = _checks.positive_int(num_steps, "num_steps")
    self.step_size = None if step_size is None else _checks.positive_float(step_size, "step_size")
    self.num_restarts = _checks.positive_int(num_restarts, "num_restarts")
    self.loss = _loss_name(loss)
    self.q = _checks.exponent(q, "q")
    self.clip = _clip(clip)
    self.random_start = bool(random_start)
    if self.attack != "pgd" and self.p not in (1.0, 2.0, _INF):
      raise ValueError(f"`attack={self.attack!r}` (the ensemble) needs p in {{1, 2, inf}}. "
                       f"Received: p={self.p}")

  def _build_kernel(self, model):
    if self.attack != "pgd":
      return model  # auto_attack compiles its stages per call.
    return evaluation._RobustKernel(  # pylint: disable=protected-access
        model, p=self.p, num_steps=self.num_steps, step_size=self.step_size,
        num_restarts=self.num_restarts, loss=self.loss, q=self.q, clip=self.clip,
        random_start=self.random_start, training=self.training,
        jit_compile=self.jit_compile)

  def _compute(self, kernel):
    if self.attack != "pgd":
      result = evaluation.auto_attack(
          kernel, self.x, self.y, epsilon=self.epsilon, p=self.p, version=self.attack,
          clip=self.clip, batch_size=self.batch_size, seed=self.seed, verbose=0,
          training=self.training)
      return {self.name: float(result.robust_accuracy)}
    clean, robust = kernel.run(self.x, self.y, [self.epsilon], self.batch_size)
    return {self.name: float(np.mean(clean & robust[0]))}

  def get_config(self):
    return {
        **super().get_config(),
        "y": self.y,
        "epsilon": self.epsilon,
        "p": self.p,
        "num_steps": self.num_steps,
        "step_size": self.step_size,
        "num_restarts": self.num_restarts,
        "loss": self.loss,
        "q": self.q,
        "clip": None if self.clip is None else list(self.clip),
        "random_start": self.random_start,
        "attack": self.attack,
        "seed": self.seed,
    }


@keras.saving.register_keras_serializable(package="keras_opnorm")
class AlignmentMonitor(_Monitor):
  """Logs the mean ``|cos|`` between PGD perturbations and the top singular vector.

  ``(1/n) sum_i |<x_adv_i - x_i, v_1(J_f(x_i))>| / ||x_adv_i - x_i||_2``, the
  rank-1 alignment of `keras_opnorm.evaluation.alignment`. With
  ``centered=True`` it also logs ``name + '_centered'``: the alignment with
  the top singular vector of the centered-logits Jacobian ``P J``.

  Args:
    x: held-out inputs ``[n, ...]`` (an array), or a finite batched
      ``tf.data.Dataset`` of ``x`` or ``(x, y, ...)`` batches (its own
      batches are used; ``batch_size`` is ignored).
    epsilon: the attack radius (> 0).
    p: the attack norm. Defaults to `2`.
    y: labels for the cross-entropy attack; ``None`` attacks the model's own
      predictions (or uses the dataset's labels, if it has any). Defaults to
      `None`.
    name: the ``logs`` key. Defaults to `'val_alignment'`.
    q: logit-distance norm for ``loss='logit'``. Defaults to `2`.
    loss: the attack loss. Defaults to `'crossentropy'`.
    num_steps: PGD steps. Defaults to `10`.
    step_size: PGD step size; ``None``: ``2.5 * epsilon / num_steps``.
      Defaults to `None`.
    random_start: random start of PGD. Defaults to `True`.
    clip: ``(lo, hi)`` valid input range, or ``None``. Defaults to `None`.
    num_iters: iterations of `keras_opnorm.singular_values`; ``None``: its
      default. Defaults to `None`.
    centered: also log the centered-logits alignment. Defaults to `False`.
    seed: seed of the random baseline (not logged). Defaults to `0`.
    every_n_epochs: evaluate at the end of every n-th epoch. Defaults to `1`.
    batch_size: evaluation batch size. Defaults to `256`.
    training: the model's ``training`` flag. Defaults to `False`.
    jit_compile: compile with XLA. Defaults to `False`.
    output: the logits output (name or index) of a model with several
      outputs. Defaults to `None` (the model's only output).
    from_logits: `False` if that output is probabilities (the library then
      uses ``log p``; see `keras_opnorm.LogitsView`). Defaults to `True`.

  Raises:
    TypeError: if ``x`` is not floating point, or ``loss`` is not a name.
    ValueError: labels not one per example of ``x`` (or given with a
      dataset), or an invalid
      ``epsilon``, ``p``, ``q``, ``num_steps``, ``step_size``, ``num_iters``,
      ``name``, ``every_n_epochs`` or ``batch_size``.
  """

  def __init__(self, x, epsilon, p=2, *, y=None, name="val_alignment", q=2,
               loss="crossentropy", num_steps=10, step_size=None, random_start=True,
               clip=None, num_iters=None, centered=False, seed=0, every_n_epochs=1,
               batch_size=256, training=False, jit_compile=False, output=None,
               from_logits=True):
    super().__init__(x, name=name, every_n_epochs=every_n_epochs, batch_size=batch_size,
                     training=training, jit_compile=jit_compile, output=output,
                     from_logits=from_logits)
    if _is_dataset(self.x):
      _no_labels_with_dataset(y)
      self.y = None
    else:
      self.y = None if y is None else _as_labels(y, self.x.shape[0])
    self.epsilon = _checks.positive_float(epsilon, "epsilon")
    self.p = _checks.exponent(p, "p")
    self.q = _checks.exponent(q, "q")
    self.loss = _loss_name(loss)
    self.num_steps = _checks.positive_int(num_steps, "num_steps")
    self.step_size = None if step_size is None else _checks.positive_float(step_size, "step_size")
    self.random_start = bool(random_start)
    self.clip = _clip(clip)
    self.num_iters = None if num_iters is None else _checks.positive_int(num_iters, "num_iters")
    self.centered = bool(centered)
    self.seed = seed

  def _build_kernel(self, model):
    return evaluation._AlignmentKernel(  # pylint: disable=protected-access
        model, p=self.p, q=self.q, loss=self.loss, k=1, num_steps=self.num_steps,
        step_size=self.step_size, random_start=self.random_start, clip=self.clip,
        num_iters=self.num_iters, centered=self.centered, training=self.training,
        jit_compile=self.jit_compile)

  def _compute(self, kernel):
    core = kernel.run(self.x, self.y, [self.epsilon], self.batch_size, self.seed)
    results = {self.name: float(np.mean(core["cos"][0][:, 0]))}
    if self.centered:
      results[self.name + "_centered"] = float(np.mean(core["cos_c"][0][:, 0]))
    return results

  def get_config(self):
    return {
        **super().get_config(),
        "epsilon": self.epsilon,
        "p": self.p,
        "y": self.y,
        "q": self.q,
        "loss": self.loss,
        "num_steps": self.num_steps,
        "step_size": self.step_size,
        "random_start": self.random_start,
        "clip": None if self.clip is None else list(self.clip),
        "num_iters": self.num_iters,
        "centered": self.centered,
        "seed": self.seed,
    }
