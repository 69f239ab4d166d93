"""The `Objective` base class: a term added to the training loss.

An objective is written once, as a pure loss term, and attached to training by
the adapters in `keras_opnorm.training` (callback, wrapper model, regulariser
layer). Its contract:

* ``build(model)`` creates the objective's persistent state (non-trainable
  ``keras.Variable`` objects: hyper-parameters that schedules change, power
  iteration vectors). The state belongs to the objective, never to the model,
  so ``model.save`` and ``model.export`` contain the user's model only.
* ``objective(model, x, y, y_pred, sample_weight=None) -> (loss, metrics)``
  returns the scalar float32 term added to the compiled loss, already weighted
  by the objective's ``weight`` and averaged over the local batch like a Keras
  ``"sum_over_batch_size"`` loss (``sum_i w_i l_i / batch_size``), and a dict of
  scalar float32 metrics whose names start with the objective's ``name``.
* ``clean_loss_weight`` is the factor of the compiled (clean) loss: 1.0, or
  0.0 when the objective replaces it (Madry adversarial training).
"""

import contextlib
import math
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_opnorm import _checks
from keras_opnorm import logits_view

__all__ = ["Objective", "check_logits_output", "weighted_batch_mean"]


def weighted_batch_mean(values, sample_weight=None):
  """Averages per-example values like a Keras ``"sum_over_batch_size"`` loss.

  ``mean = sum_i w_i * l_i / batch_size`` (``w_i = 1`` without weights): an
  example with weight 0 contributes nothing but still counts in the batch
  size, exactly as in ``keras.losses.Loss``. No division by the number of
  replicas happens here (the train step scales by the global batch).

  Args:
    values: float tensor ``[batch]`` of per-example losses.
    sample_weight: optional ``[batch]`` or ``[batch, 1]`` weights. Defaults to
      `None`.

  Returns:
    A scalar float32 tensor.

  Example:

  >>> float(weighted_batch_mean(tf.constant([1.0, 3.0]), tf.constant([1.0, 0.0])))
  0.5
  """
  values = tf.cast(tf.reshape(values, [-1]), tf.float32)
  batch_size = tf.cast(tf.shape(values)[0], tf.float32)
  if sample_weight is not None:
    sample_weight = tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    values = values * sample_weight
  return tf.math.divide_no_nan(tf.reduce_sum(values), batch_size)


def all_layers(model):
  """The model and all its sublayers, nested models included, each once.

  Args:
    model: a Keras layer or model (any other callable is returned alone).

  Returns:
    A list of layers, ``model`` first.
  """
  if hasattr(model, "_flatten_layers"):
    return model._flatten_layers(include_self=True, recursive=True)  # pylint: disable=protected-access
  return [model]


def check_logits_output(model, output=None):
  """Raises if a model visibly outputs probabilities; see `keras_opnorm.logits_view`.

  One detector for the whole library: `keras_opnorm.logits_view.check_logits_output`.

  Args:
    model: a Keras model.
    output: the selected output of a multi-output model. Defaults to `None`.

  Raises:
    ValueError: naming the layer and its activation.
  """
  logits_view.check_logits_output(model, output)


@contextlib.contextmanager
def _distribution_scope(model):
  """Enters the model's tf.distribute strategy (if any) to create variables."""
  strategy = getattr(model, "distribute_strategy", None)
  if tf.distribute.has_strategy() or strategy is None:
    yield
    return
  with strategy.scope():
    yield


def exponent_config(p):
  """An lp exponent as a JSON-safe config value (``'inf'`` for infinity).

  Args:
    p: a checked exponent (a float in ``[1, inf]``).

  Returns:
    ``'inf'`` for infinity, else ``p``.
  """
  return "inf" if math.isinf(p) else p


@keras.saving.register_keras_serializable(package="keras_opnorm.objectives")
class Objective:
  """Base class of the terms added to the training loss.

  Subclasses implement ``call(model, x, y, y_pred, sample_weight)`` and may
  override ``_build_state(model)`` for persistent state. Hyper-parameters that
  schedules change (``weight``, ``epsilon``) are declared with
  ``_add_hyperparameter`` in ``__init__``; ``build`` turns each into a
  non-trainable float32 ``keras.Variable`` owned by the objective, so that
  ``set_hyperparameter`` changes it without retracing a compiled train step.
  A ``keras.Variable`` (or ``tf.Variable``) passed by the user is used as is.

  Several inputs or outputs, probability outputs: ``output``, ``inputs`` and
  ``from_logits`` are the settings of `keras_opnorm.LogitsView` (see
  `keras_opnorm.logits_view`). When one of them is set, or ``x`` / the
  model's output is a dict or list, ``__call__`` hands ``call`` a view of the
  model instead: ``call(fn, z, y, logits, sample_weight)`` with ``fn`` the
  logits of the selected output as a function of ``z``, the perturbed inputs
  packed into ``[batch, n]`` (the others held fixed), ``y`` the labels of
  that output and ``logits`` the clean prediction's logits. A `LogitsView`
  passed as the model is used as is. Objectives that do not look at the
  model's outputs set ``uses_model_outputs = False``.

  Args:
    name: prefix of the objective's metric names. Defaults to the subclass'
      default name.
    output: the logits output of a multi-output model (name or index).
      Defaults to `None` (the only output).
    inputs: the inputs to perturb of a multi-input model (name, index or a
      list of them). Defaults to `None` (every floating-point input).
    from_logits: False when the selected output is probabilities. Defaults
      to `True`.

  Example (a custom objective penalising the squared logits):

  ```python
  class LogitSquares(Objective):
    default_name = "logit_sq"

    def call(self, model, x, y, y_pred, sample_weight=None):
      per_example = tf.reduce_sum(tf.square(y_pred), axis=-1)
      loss = weighted_batch_mean(per_example, sample_weight)
      return loss, {"logit_sq": loss}
  ```
  """

  default_name = "objective"
  uses_model_outputs = True

  def __init__(self, name=None, *, output=None, inputs=None, from_logits=True):
    self.output, self.inputs, self.from_logits = logits_view.check_settings(
        output, inputs, from_logits)
    if name is None:
      name = self.default_name
    if not isinstance(name, str) or not name or "/" in name:
      raise ValueError(
          f"`name` must be a non-empty string without '/'. Received: name={name!r}")
    self.name = name
    self.built = False
    self._model_ref = None
    self._hyper_values = {}  # name -> Python float or a user variable
    self._hyper_vars = {}    # name -> keras.Variable (after build)
    self._state_vars = []    # subclass persistent state (after build)

  # -- hyper-parameters --------------------------------------------------

  def _add_hyperparameter(self, name, value, check):
    """Declares a schedulable hyper-parameter (a number checked by ``check``)."""
    if isinstance(value, (tf.Variable, keras.Variable)):
      self._hyper_values[name] = value
    else:
      self._hyper_values[name] = check(value, name)

  @property
  def hyperparameters(self):
    """Names of the hyper-parameters that `set_hyperparameter` accepts."""
    return tuple(self._hyper_values)

  def _check_hyperparameter_name(self, name):
    if name not in self._hyper_values:
      raise ValueError(
          f"`name` must be one of {self.hyperparameters} for "
          f"{type(self).__name__}. Received: name={name!r}")

  def set_hyperparameter(self, name, value):
    """Sets a hyper-parameter (e.g. from a schedule) without retracing.

    After ``build`` the value is assigned to the objective's variable, which a
    compiled train step reads at run time. ``epsilon`` may be set to 0 (a
    schedule ramping up from zero); ``weight`` to any value >= 0.

    Args:
      name: one of `hyperparameters`, e.g. ``'weight'`` or ``'epsilon'``.
      value: the new value (a Python number or a scalar tensor).

    Raises:
      ValueError: for an unknown name or an invalid value.
    """
    self._check_hyperparameter_name(name)
    if not tf.is_tensor(value):
      value = _checks.nonnegative_float(value, name)
    current = self._hyper_vars.get(name, self._hyper_values[name])
    if isinstance(current, (tf.Variable, keras.Variable)):
      current.assign(tf.cast(value, current.dtype))
    else:
      self._hyper_values[name] = float(value)

  def get_hyperparameter(self, name):
    """Returns the current value of a hyper-parameter as a Python float.

    Args:
      name: one of `hyperparameters`.

    Returns:
      The value (read from its variable after ``build``).

    Raises:
      ValueError: for an unknown name.
    """
    self._check_hyperparameter_name(name)
    current = self._hyper_vars.get(name, self._hyper_values[name])
    if isinstance(current, (tf.Variable, keras.Variable)):
      value = np.asarray(keras.ops.convert_to_numpy(current))
      # The shortest decimal that round-trips the float32 (0.1, not 0.100000001).
      return float(str(value.astype(np.float32))) if value.dtype == np.float32 else float(value)
    return float(current)

  def _hyperparameter(self, name):
    """The hyper-parameter as a float32 tensor (read from its variable)."""
    current = self._hyper_vars.get(name, self._hyper_values[name])
    return tf.cast(tf.convert_to_tensor(current), tf.float32)

  # -- state -----------------------------------------------------------------

  @property
  def variables(self):
    """All variables owned by the objective (hyper-parameters, then state)."""
    return list(self._hyper_vars.values()) + list(self._state_vars)

  def _add_state_variable(self, name, value, synchronization="auto"):
    """Creates a non-trainable float32 state variable owned by the objective.

    ``synchronization="on_read"`` gives every replica of a tf.distribute
    strategy its own copy, updated locally with ``assign`` inside the step (no
    cross-replica communication, XLA-compatible); use it for state that every
    replica updates identically (power iteration on mirrored weights).
    """
    var = keras.Variable(
        value, dtype="float32", trainable=False, name=f"{self.name}_{name}",
        synchronization=synchronization, aggregation="only_first_replica")
    self._state_vars.append(var)
    return var

  def build(self, model):
    """Creates the objective's persistent state for ``model``; idempotent.

    Call it outside ``tf.function`` (the adapters do, before the first step),
    under the model's distribution strategy (entered here when the model
    records one). Calling it again with the same model does nothing; with
    another model the model-dependent state is rebuilt.

    Args:
      model: the Keras model being trained.

    Raises:
      ValueError: if the model is unsuitable (e.g. it outputs probabilities).
    """
    user_model = logits_view.underlying_model(model)  # State belongs to the user's model.
    if self.built and self._model_ref is not None and self._model_ref() is user_model:
      return
    self._validate_model(model)
    model = user_model
    with _distribution_scope(model):
      for name, value in self._hyper_values.items():
        if name in self._hyper_vars:
          continue
        if isinstance(value, (tf.Variable, keras.Variable)):
          self._hyper_vars[name] = value
        else:
          self._hyper_vars[name] = keras.Variable(
              value, dtype="float32", trainable=False, name=f"{self.name}_{name}",
              aggregation="only_first_replica")
      self._state_vars = []
      self._build_state(model)
    try:
      self._model_ref = weakref.ref(model)
    except TypeError:
      self._model_ref = lambda: model
    self.built = True

  def _validate_model(self, model):
    """Checks the model before building; by default that it outputs logits."""
    if self.uses_model_outputs and (
        isinstance(model, keras.layers.Layer) or logits_view.is_view(model)):
      self.view(model)

  # -- the model as the objective sees it -------------------------------------

  @property
  def _default_view(self):
    return self.output is None and self.inputs is None and self.from_logits

  def view(self, model):
    """``model`` as a `keras_opnorm.LogitsView` with this objective's settings.

    Args:
      model: a Keras model, or a `LogitsView` (used as is).

    Returns:
      A `LogitsView`.

    Raises:
      ValueError: for a view together with settings of the objective, or a
        model the view refuses (probability outputs, an unknown output).
    """
    if logits_view.is_view(model):
      if not self._default_view:
        raise ValueError(
            f"{type(self).__name__} got a LogitsView and its own `output`/`inputs`/"
            f"`from_logits`: give them once. Received: output={self.output!r}, "
            f"inputs={self.inputs!r}, from_logits={self.from_logits!r}")
      return logits_view.as_view(model)
    return logits_view.LogitsView(model, output=self.output, inputs=self.inputs,
                                  from_logits=self.from_logits)

  @tf.autograph.experimental.do_not_convert
  def _prepare(self, model, x, y, y_pred):
    """``(fn, x, y, logits)`` for `call`; unchanged for a plain single-io model."""
    structured = logits_view.is_structured(x) or isinstance(y_pred, (dict, list, tuple))
    if self._default_view and not structured and not logits_view.is_view(model):
      return model, x, y, y_pred
    view = self.view(model)
    if y_pred is not None:
      y_pred = view.logits(y_pred)
    y = view.labels(y)
    if logits_view.is_structured(x):
      fn, x, _ = view.bind(x)
      return fn, x, y, y_pred
    return view, x, y, y_pred

  def _build_state(self, model):
    """Creates model-dependent persistent state (subclasses)."""
    del model

  # -- the loss term ---------------------------------------------------------

  @property
  def metric_names(self):
    """The keys of the metrics dict that `call` returns, or None if unknown.

    Declaring them lets the train step create its metric trackers before the
    step is traced, so that TensorFlow traces it once instead of twice.
    """
    return None

  @property
  def clean_loss_weight(self):
    """The factor applied to the compiled (clean) loss: 1.0 by default."""
    return 1.0

  def __call__(self, model, x, y, y_pred, sample_weight=None):
    """Returns ``(loss, metrics)`` for one batch; see the module docstring.

    Builds the objective first if needed (the adapters build it eagerly).

    Args:
      model: the network the term differentiates.
      x: the batch of inputs.
      y: the labels (None where the objective needs none).
      y_pred: the train step's clean prediction ``model(x, training=True)``.
      sample_weight: optional ``[batch]`` weights. Defaults to `None`.

    Returns:
      ``(loss, metrics)``: a scalar float32 tensor and a dict of scalar
      float32 tensors.
    """
    if not self.built:
      self.build(logits_view.underlying_model(model))
    if self.uses_model_outputs:
      model, x, y, y_pred = self._prepare(model, x, y, y_pred)
    loss, metrics = self.call(model, x, y, y_pred, sample_weight)
    loss = tf.cast(loss, tf.float32)
    metrics = {k: tf.cast(v, tf.float32) for k, v in metrics.items()}
    return loss, metrics

  def call(self, model, x, y, y_pred, sample_weight=None):
    """Computes ``(loss, metrics)``; implemented by subclasses."""
    raise NotImplementedError(f"{type(self).__name__} must implement `call`.")

  # -- serialisation ----------------------------------------------------------

  def get_config(self):
    """Returns the constructor arguments (current hyper-parameter values)."""
    config = {"name": self.name}
    if not self._default_view:  # Only when set: older configs stay as they were.
      config.update(output=self.output,
                    inputs=None if self.inputs is None else list(self.inputs),
                    from_logits=self.from_logits)
    return config

  def _hyper_config(self):
    return {name: self.get_hyperparameter(name) for name in self._hyper_values}

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  def __repr__(self):
    args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
    return f"{type(self).__name__}({args})"
