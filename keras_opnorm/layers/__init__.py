"""Keras layers of keras_opnorm: `OperatorNormRegularizer`."""

from keras_opnorm.layers.operator_norm_regularizer import OperatorNormRegularizer

__all__ = ["OperatorNormRegularizer"]
