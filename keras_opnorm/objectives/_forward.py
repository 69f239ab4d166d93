"""Forward passes of the objectives on perturbed inputs (shared helpers).

The train step computes the clean logits ``y_pred = f(x)`` once, in training
mode. An objective evaluates ``f`` again at a perturbed input ``x*`` (the
adversarial example, or ``x + eps v``) and compares or adds the result. That
extra pass runs in training mode by default (``training=True``), as in the
reference implementations of Madry et al. and TRADES and consistent with
``y_pred`` (batch norm normalises with batch statistics in both passes, so
``f(x*) - f(x)`` is 0 at ``x* = x``), but without moving the batch-norm
statistics: `perturbed_logits` runs the model in a ``keras.StatelessScope``,
drops the updates of ``BatchNormalization`` variables and applies every other
state update (the random-seed states of dropout, so that masks keep
advancing). ``update_batch_stats=True`` applies them all.

Dropout draws a new mask in every training-mode pass, so with dropout layers
``f(x*) - f(x)`` also contains the difference of two masks;
``forward_training=False`` compares two inference-mode passes instead.
"""

import keras

from keras_opnorm import _checks
from keras_opnorm import logits_view
from keras_opnorm.objectives import base


def _batch_norm_variable_ids(model):
  ids = set()
  for layer in base.all_layers(model):
    if isinstance(layer, keras.layers.BatchNormalization):
      ids.update(id(v) for v in layer.non_trainable_variables)
  return ids


def call_model(model, x, training):
  """``model(x, training=...)`` for Keras models and views, ``model(x)`` otherwise.

  A `keras_opnorm.LogitsView` (or one bound to a batch's fixed inputs, as
  `Objective.__call__` hands to ``call``) returns the selected logits.
  """
  if logits_view.is_view(model):
    return model(x, training=training)
  if isinstance(model, keras.layers.Layer) and getattr(model, "_call_has_training_arg", True):
    return model(x, training=training)
  return model(x)


def perturbed_logits(model, x, *, training, update_batch_stats):
  """Float32 logits ``f(x)`` of a perturbed batch, differentiable in the weights.

  Args:
    model: a Keras model, a `keras_opnorm.LogitsView` (or a callable
      ``x -> logits``).
    x: the perturbed batch.
    training: the ``training`` flag of the pass.
    update_batch_stats: with ``training=True``, let batch normalization update
      its moving statistics with this batch (otherwise its updates are dropped).

  Returns:
    ``[batch, d]`` float32 logits.
  """
  layer = logits_view.underlying_model(model)
  if not training or update_batch_stats or not isinstance(layer, keras.layers.Layer):
    return _checks.logits(call_model(model, x, training), None)
  with keras.StatelessScope(initialize_variables=False) as scope:
    out = call_model(model, x, True)
  bn_ids = _batch_norm_variable_ids(layer)
  for var in layer.non_trainable_variables:
    if id(var) in bn_ids:
      continue
    new_value = scope.get_current_value(var)
    if new_value is not None:
      var.assign(new_value)
  return _checks.logits(out, None)


def clean_logits(model, x, y_pred, *, training):
  """The clean logits to compare with: ``y_pred`` in training mode, else ``f(x)``.

  ``y_pred`` comes from the train step's own training-mode pass; a comparison
  with an inference-mode perturbed pass needs inference-mode clean logits too
  (batch norm would otherwise normalise the two passes differently).
  """
  if training and y_pred is not None:
    return _checks.logits(y_pred, None)
  return _checks.logits(call_model(model, x, False), None)
