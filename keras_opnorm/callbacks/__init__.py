"""Keras callbacks: robust training objectives, their schedules, and monitors.

Training callbacks (each attaches the `keras_opnorm.objectives` class of the
same name to one ``model.fit``; several combine into one train step):
`AdversarialTraining`, `OperatorNormRegularization`,
`SpectralNormRegularization`, and `ObjectiveCallback` for any objective.
Schedules for their hyper-parameters: `Schedule`, `LinearRamp`.
"""

# [training] callbacks and schedules.
from keras_opnorm.callbacks.adversarial_training import AdversarialTraining
from keras_opnorm.callbacks.objective_callback import ObjectiveCallback
from keras_opnorm.callbacks.operator_norm_regularization import OperatorNormRegularization
from keras_opnorm.callbacks.schedules import LinearRamp
from keras_opnorm.callbacks.schedules import Schedule
from keras_opnorm.callbacks.spectral_norm_regularization import SpectralNormRegularization
# [/training]

# [monitors] exports of keras_opnorm/callbacks/monitors.py (helper "evaluation").
from keras_opnorm.callbacks.monitors import AlignmentMonitor
from keras_opnorm.callbacks.monitors import OperatorNormMonitor
from keras_opnorm.callbacks.monitors import RobustAccuracy
# [/monitors]

import types as _types

__all__ = sorted(
    name for name, value in globals().items()
    if not name.startswith("_") and not isinstance(value, _types.ModuleType))
