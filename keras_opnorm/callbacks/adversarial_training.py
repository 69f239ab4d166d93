"""`AdversarialTraining` callback: lp PGD adversarial training inside ``fit``."""

import keras

from keras_opnorm.callbacks import objective_callback
from keras_opnorm.objectives import adversarial_training

__all__ = ["AdversarialTraining"]


@keras.saving.register_keras_serializable(package="keras_opnorm")
class AdversarialTraining(objective_callback._EpsilonObjectiveCallback):  # pylint: disable=protected-access
  """Adversarial training (Madry et al. 2018; Roth et al. 2020) for one ``fit``.

  Wraps `keras_opnorm.objectives.AdversarialTraining` (see it for the loss
  forms ``'crossentropy'``, ``'logit'`` = the paper's lq logit distance
  ``lambda * ||f(x*) - f(x)||_q``, and ``'kl'`` = TRADES) and attaches it to
  the user's compiled model for the duration of ``fit``; see
  `ObjectiveCallback` for the mechanics. The model must output logits.

  Args:
    epsilon: radius of the lp ball of the attack (> 0; schedulable).
    start_epoch: epoch index from which adversarial training is applied
      (plain training before). Defaults to `0`.
    warmup_epochs: epsilon grows linearly over the first ``warmup_epochs``
      active epochs, ``epsilon * (i + 1) / warmup_epochs`` in the i-th, then
      stays at ``epsilon``. Defaults to `0` (no warm-up).
    epsilon_schedule: a `Schedule` (or callable ``epoch -> value``) for
      epsilon instead of ``warmup_epochs``. Defaults to `None`.
    weight_schedule: a `Schedule` for the objective's weight. Defaults to
      `None`.
    backup_dir: see `ObjectiveCallback`. Defaults to `None`.
    **objective_kwargs: the other arguments of
      `keras_opnorm.objectives.AdversarialTraining` (``p``, ``num_steps``,
      ``step_size`` or ``step_size_factor`` (``alpha / epsilon``, follows
      the warm-up), ``loss``, ``q``, ``weight``, ``squared``,
      ``replace_clean_loss``, ``random_start``, ``clip``,
      ``attack_training``, ``warm_start`` (persistent perturbations, ATTA:
      each example's attack starts from its perturbation of the previous
      epoch, projected onto the current ball), ``warm_start_capacity``
      (memory slots, default 65536; about ``exp(-N / capacity)`` of ``N``
      examples hit per epoch), ``warm_start_max_bytes`` (default 1 GiB),
      ...). The warm-start memory is the objective's state: ``backup_dir``
      backs it up, the saved model does not contain it; the
      ``{name}_warm_hits`` metric shows the fraction of hits.

  Raises:
    ValueError, TypeError: for invalid arguments (raised by the objective
      for its own arguments), before training starts.

  Example:

  ```python
  model.compile(optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x, y, epochs=10, callbacks=[
      keras_opnorm.callbacks.AdversarialTraining(
          epsilon=0.1, p="inf", num_steps=10, warmup_epochs=3)])
  model.save("robust.keras")     # the user's model only
  ```

  Fast AT (Wong, Rice & Kolter, ICLR 2020; see `fast`):
  ``AdversarialTraining.fast(epsilon=0.1, p="inf", warmup_epochs=3)``.
  ATTA (Zheng et al., CVPR 2020), few steps from persistent perturbations:
  ``AdversarialTraining(epsilon=0.1, p="inf", num_steps=2, warm_start=True)``
  or ``AdversarialTraining.fast(epsilon=0.1, warm_start=True)``.
  """

  _objective_class_name = "AdversarialTraining"

  @classmethod
  def fast(cls, epsilon, p=float("inf"), *, step_size_factor=1.25, **kwargs):
    """Fast AT (Wong, Rice & Kolter, ICLR 2020) for one ``fit``.

    One FGSM step of size ``alpha = step_size_factor * epsilon`` (1.25: the
    paper's) from a uniform random start in the lp ball, projected back
    (l-inf in the paper; ``p = 2`` uses the l2 ball); ``alpha`` follows
    ``warmup_epochs`` / ``epsilon_schedule``, since it is relative to the
    current epsilon. See `keras_opnorm.objectives.AdversarialTraining.fast`.

    Args:
      epsilon: radius of the lp ball (> 0; schedulable).
      p: the norm of the threat model. Defaults to `inf`.
      step_size_factor: ``alpha / epsilon``. Defaults to `1.25`.
      **kwargs: the callback's other arguments (``warmup_epochs``,
        ``weight``, ``clip``, ...) except ``num_steps``, ``step_size`` and
        ``random_start``.

    Returns:
      An `AdversarialTraining` callback (its config is a plain one:
      ``num_steps=1``, ``step_size_factor``, ``random_start=True``).

    Raises:
      ValueError: for ``num_steps``, ``step_size`` or ``random_start`` in
        ``kwargs``, and as the callback.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        keras_opnorm.callbacks.AdversarialTraining.fast(
            epsilon=0.1, p="inf", warmup_epochs=3, clip=(0.0, 1.0))])
    ```
    """
    return cls(epsilon, **adversarial_training.fast_config(p, step_size_factor, kwargs))
