"""`RobustModel`: a wrapper model whose ``train_step`` adds objectives."""

import keras

from keras_opnorm import logits_view
from keras_opnorm import training

__all__ = ["RobustModel"]


@keras.saving.register_keras_serializable(package="keras_opnorm")
class RobustModel(keras.Model):
  """Wraps a model so that ``fit`` trains it with `keras_opnorm.objectives`.

  ``RobustModel(model, objectives)`` calls ``model`` (``call`` delegates, so
  predictions are the inner model's) and trains it with the regularised step
  of `keras_opnorm.training`: the compiled loss of the wrapper plus every
  objective's term, the objectives differentiating the inner model. It is the
  alternative to the callbacks (`keras_opnorm.callbacks`) for users who prefer
  a model object; both use the same step.

  Deployment: the inner model ``robust.model`` is the artifact to deploy;
  ``robust.export(path)`` exports it (the SavedModel has the same ``serve``
  endpoint and needs no keras_opnorm), and ``robust.model.save('m.keras')``
  saves it without any keras_opnorm object. ``robust.save('r.keras')`` saves
  the wrapper too, and loading that file needs ``import keras_opnorm``.

  Several inputs or outputs, probability outputs: pass a
  `keras_opnorm.LogitsView` as ``model`` (``RobustModel(LogitsView(model,
  output="logits"), objectives)``): the wrapper calls (and exports) the
  view's model, whose outputs the compiled losses see; the objectives see
  the view (or give the objectives ``output=`` / ``inputs=`` /
  ``from_logits=`` themselves).

  Args:
    model: the ``keras.Model`` (or layer) mapping inputs to logits, or a
      `keras_opnorm.LogitsView` of it.
    objectives: an objective or a list of objectives
      (`keras_opnorm.objectives.Objective`), or their serialised configs.
    **kwargs: ``keras.Model`` arguments (``name``, ...).

  Raises:
    TypeError: for a ``model`` that is not a Keras layer or model, or an
      object that is not an objective.
    ValueError: for no objectives; at the first ``fit`` step construction
      (before any step runs) for a model the objectives cannot handle.

  Example:

  ```python
  robust = keras_opnorm.RobustModel(model, [
      keras_opnorm.objectives.OperatorNormRegularization(epsilon=1.0, weight=0.1)])
  robust.compile(optimizer="adam",
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 metrics=["accuracy"])
  robust.fit(x, y, epochs=10)
  robust.model.save("robust.keras")      # the user's model only
  ```
  """

  def __init__(self, model, objectives, **kwargs):
    super().__init__(**kwargs)
    if isinstance(model, dict):
      model = keras.saving.deserialize_keras_object(model)
    view = None
    if isinstance(model, logits_view.LogitsView):
      view, model = model, model.model
    if not isinstance(model, keras.layers.Layer):
      raise TypeError(f"`model` must be a keras.Model or keras.Layer. Received: "
                      f"model={model!r} of type {type(model).__name__}")
    if objectives is not None:  # None: `_check_objectives` raises ValueError.
      if not isinstance(objectives, (list, tuple)):
        objectives = [objectives]
      objectives = [
          keras.saving.deserialize_keras_object(o) if isinstance(o, dict) else o
          for o in objectives
      ]
    objectives = training._check_objectives(objectives)  # pylint: disable=protected-access
    self.model = model
    # Plain Python list: objectives are not Keras-tracked (not saved as weights).
    object.__setattr__(self, "_objectives", tuple(objectives))
    object.__setattr__(self, "_view", view)
    object.__setattr__(self, "_step", None)

  @property
  def objectives(self):
    """The objectives (a tuple)."""
    return self._objectives

  # Read by `keras_opnorm.training.install`: a callback on a RobustModel adds
  # its objectives to the wrapper's own.
  @property
  def _keras_opnorm_objectives(self):
    return self._objectives

  @property
  def _keras_opnorm_forward(self):
    return self.model if self._view is None else self._view

  @property
  def logits_view(self):
    """The `keras_opnorm.LogitsView` given as ``model``, or None."""
    return self._view

  def call(self, inputs, training=None):
    return self.model(inputs, training=training)

  def build(self, input_shape=None):
    if not self.model.built and input_shape is not None:
      self.model.build(input_shape)
    self.built = True

  def make_train_function(self, force=False):
    # Build the step (and the objectives' state) eagerly, before Keras traces
    # it; `compile` resets `train_function`, so a new compile gets a new step.
    if self._step is None or force or self.train_function is None:
      object.__setattr__(
          self, "_step", training.make_train_step(
              self, list(self._objectives), forward=self._keras_opnorm_forward))
    return super().make_train_function(force=force)

  def train_step(self, data):
    return self._step(data)

  def reset_metrics(self):
    super().reset_metrics()
    if self._step is not None:
      self._step.reset_metrics()

  def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):  # pylint: disable=redefined-builtin
    """Exports the inner model ``self.model`` (see ``keras.Model.export``)."""
    return self.model.export(
        filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)

  def get_config(self):
    config = {
        "name": self.name,
        "trainable": self.trainable,
        "model": keras.saving.serialize_keras_object(self.model),
        "objectives": [keras.saving.serialize_keras_object(o) for o in self._objectives],
    }
    if self._view is not None:
      config["logits_view"] = self._view.get_config()
    return config

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
    view_config = config.pop("logits_view", None)
    if view_config is not None:
      model = logits_view.LogitsView(model, **view_config)
    objectives = [
        keras.saving.deserialize_keras_object(o, custom_objects=custom_objects)
        for o in config.pop("objectives")
    ]
    return cls(model, objectives, **config)
