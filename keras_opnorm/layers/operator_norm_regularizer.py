"""`OperatorNormRegularizer`: a wrapper layer adding an operator-norm penalty."""

import keras

from keras_opnorm import _checks

__all__ = ["OperatorNormRegularizer"]


@keras.saving.register_keras_serializable(package="keras_opnorm")
class OperatorNormRegularizer(keras.layers.Layer):
  """Wraps a sub-network ``g`` and penalises ``||J_g(x)||_{p,q}`` in training.

  ``OperatorNormRegularizer(g, epsilon=...)(x)`` returns ``g(x)`` unchanged.
  In training mode (``training=True``, as in ``fit``) it also adds, with
  ``add_loss``, the term of `keras_opnorm.objectives.OperatorNormRegularization`
  computed on ``g`` at the layer's input: the data-dependent (p,q) operator
  norm of the sub-network's Jacobian (d.d. spectral norm regularisation for
  ``p = q = 2``; Roth et al. 2020)::

    weight/2 * sum_i ||g(x_i + eps v_i) - g(x_i)||_q^2 / batch_size

  with ``v_i`` from ``num_iters`` power iterations on ``J_g(x_i)``. In
  inference (``evaluate``, ``predict``, a deployed model) it is the identity
  wrapper: no extra computation.

  Use it inside a functional or Sequential model to regularise one part of
  the network, e.g. the whole classifier
  (``outputs = OperatorNormRegularizer(classifier, epsilon=1.0)(inputs)``) or a
  block. It is the regulariser-layer adapter of the same objective that the
  callback `keras_opnorm.callbacks.OperatorNormRegularization` attaches.

  Limitations:

  * Only label-free objectives fit a layer (``add_loss`` sees no labels): use
    the `keras_opnorm.callbacks.AdversarialTraining` callback for
    cross-entropy adversarial training.
  * ``g`` must map one float tensor ``[batch, ...]`` to one ``[batch, d]``
    tensor (logits or features) and be differentiable in its input; a ``g``
    ending in a softmax is rejected (the objective needs logits).
  * The term enters the total ``loss`` of the progress bar; it has no metric
    of its own (watch ``||J||`` with the monitor callbacks).
  * A model containing this layer needs ``import keras_opnorm`` to be
    loaded from a ``.keras`` file; the callback keeps deployment free of it.
  * The wrapped model's power iterations run per forward pass in training,
    so each training step costs about ``num_iters + 1`` extra passes of ``g``.

  Args:
    layer: the wrapped ``keras.Layer`` or ``keras.Model`` ``g``.
    epsilon: the radius ``eps > 0`` of the sum-of-squares form.
    p: the input norm. Defaults to `2`.
    q: the output norm. Defaults to `2`.
    weight: ``lambda >= 0``. Defaults to `2e-2`.
    num_iters: power iterations per step. Defaults to `10`.
    form: ``'sum_of_squares'`` or ``'jacobian'``. Defaults to
      `'sum_of_squares'`.
    direction: ``'power'``, ``'exact'`` (the closed form on the exact
      Jacobian of ``g``) or ``'auto'`` (by cost); see
      `keras_opnorm.objectives.OperatorNormRegularization`. Defaults to
      `'power'`.
    power_training: the ``training`` flag of the power iterations. Defaults
      to `False`.
    forward_training: the ``training`` flag of the penalty's forward pass.
      Defaults to `True`.
    update_batch_stats: let the penalty's forward pass update batch-norm
      moving statistics. Defaults to `False`.
    jvp_mode: ``'forward'`` or ``'double_backward'`` products of the power
      iterations. Defaults to `'forward'`.
    from_logits: False when ``layer`` outputs probabilities (see
      `keras_opnorm.LogitsView`; the penalty is then on ``log p``). Defaults
      to `True`.
    warm_start: must be False: the layer's penalty runs in every
      training-mode forward pass, also on inputs that are not training
      examples (a nested call, a validation pass in training mode), which
      would fill the per-example memory; use the callback
      `keras_opnorm.callbacks.OperatorNormRegularization(warm_start=True)`.
      Defaults to `False`.
    **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

  Raises:
    TypeError: if ``layer`` is not a Keras layer.
    ValueError: for invalid hyper-parameters (those of the objective), and
      for ``warm_start=True``.

  Example:

  ```python
  classifier = keras.Sequential([keras.layers.Dense(64, activation="relu"),
                                 keras.layers.Dense(10)])
  inputs = keras.Input((784,))
  outputs = keras_opnorm.layers.OperatorNormRegularizer(
      classifier, epsilon=1.0, weight=0.1)(inputs)
  model = keras.Model(inputs, outputs)
  ```
  """

  def __init__(self,
               layer,
               epsilon,
               p=2,
               q=2,
               weight=2e-2,
               num_iters=10,
               form="sum_of_squares",
               direction="power",
               power_training=False,
               forward_training=True,
               update_batch_stats=False,
               jvp_mode="forward",
               from_logits=True,
               warm_start=False,
               **kwargs):
    if warm_start:
      raise ValueError(
          "`warm_start=True` is not supported by the OperatorNormRegularizer "
          "layer (its penalty runs in every training-mode pass, not once per "
          "training example): use keras_opnorm.callbacks."
          "OperatorNormRegularization(warm_start=True). Received: "
          f"warm_start={warm_start!r}")
    super().__init__(**kwargs)
    if isinstance(layer, dict):
      layer = keras.saving.deserialize_keras_object(layer)
    if not isinstance(layer, keras.layers.Layer):
      raise TypeError(f"`layer` must be a keras.Layer or keras.Model. Received: "
                      f"layer={layer!r} of type {type(layer).__name__}")
    from keras_opnorm import objectives  # pylint: disable=g-import-not-at-top
    self.layer = layer
    self.objective = objectives.OperatorNormRegularization(
        epsilon=epsilon, p=p, q=q, weight=weight, num_iters=num_iters, form=form,
        direction=direction, power_training=power_training, forward_training=forward_training,
        update_batch_stats=update_batch_stats, jvp_mode=jvp_mode,
        from_logits=from_logits, name=f"{self.name}_opnorm")
    self._objective_config = self.objective.get_config()

  def build(self, input_shape):
    if not self.layer.built:
      self.layer.build(input_shape)
    self.objective.build(self.layer)
    self.built = True

  def compute_output_shape(self, input_shape):
    return self.layer.compute_output_shape(input_shape)

  def call(self, inputs, training=None):
    outputs = self.layer(inputs, training=training)
    if training:
      _checks.float_input(inputs, "inputs")
      term, _ = self.objective(self.layer, inputs, None, outputs)
      self.add_loss(term)
    return outputs

  def get_config(self):
    config = {k: v for k, v in self._objective_config.items()
              if k not in ("name", "warm_start", "warm_start_capacity",
                           "warm_start_max_bytes", "output", "inputs")}
    return {
        **super().get_config(),
        "layer": keras.saving.serialize_keras_object(self.layer),
        **config,
    }

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    config["layer"] = keras.saving.deserialize_keras_object(
        config["layer"], custom_objects=custom_objects)
    return cls(**config)
