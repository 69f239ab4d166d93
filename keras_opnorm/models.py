"""A small model zoo for the experiments: piecewise-linear ReLU networks with logits.

The paper's theorem needs a piecewise-linear network (ReLU, max-pooling, and
batch norm in inference mode, which is affine), so every model here is one, and
every model outputs logits (no softmax): the attacks, the operator norm and
the compiled loss (``from_logits=True``) all work on logits.

========== ============================================================
name       architecture
========== ============================================================
``mlp``    Flatten -> Dense(256) -> ReLU -> Dense(256) -> ReLU -> Dense(d).
           On the 8x8 digits: the 64-256-256-10 network of the probe.
``cnn``    The paper's 7-layer ReLU CNN with batch norm (6 conv + 1 dense):
           [Conv3x3(w) -> BN -> ReLU] x 2 -> MaxPool, for w = 64, 128, 256,
           then Flatten -> Dense(d). For 32x32 (CIFAR-10) and 28x28 images;
           on 8x8 images the three poolings leave 1x1.
``small_cnn`` A smaller variant: [Conv3x3(w) -> BN -> ReLU -> MaxPool] for
           w = 32, 64, then Flatten -> Dense(128) -> ReLU -> Dense(d).
``mnist_cnn`` The CPU preset for 28x28 images (``mnist5k``, mnist,
           fashion_mnist): `small_cnn` with widths 8, 16 and Dense(32);
           26,770 parameters on 28x28x1 with 10 classes.
========== ============================================================

On 28x28 images ``cnn`` and ``small_cnn`` are too slow for the four-method
comparison on a CPU (PGD-10 training and the d.d. regulariser's power
iterations cost 10-20 forward-backward passes a step); ``mnist_cnn`` is the
preset there (`mnist_cnn`'s docstring gives its measured cost).

Weights are initialised from Keras' global seed: call
``keras.utils.set_random_seed(seed)`` before `build` for a reproducible (and,
across methods, identical) initialisation.
"""

import keras

from keras_opnorm import _checks

__all__ = ["MODELS", "build", "mlp", "cnn", "small_cnn", "mnist_cnn"]


def _shape(input_shape):
  try:
    shape = tuple(int(s) for s in input_shape)
  except (TypeError, ValueError):
    raise ValueError(
        "`input_shape` must be a tuple of positive integers (one example, no "
        f"batch axis). Received: input_shape={input_shape!r}") from None
  if not shape or any(s <= 0 for s in shape):
    raise ValueError(
        "`input_shape` must be a tuple of positive integers (one example, no "
        f"batch axis). Received: input_shape={input_shape!r}")
  return shape


def _image_shape(input_shape, name):
  shape = _shape(input_shape)
  if len(shape) != 3:
    raise ValueError(
        f"`input_shape` must be (height, width, channels) for the {name!r} model; "
        f"flat inputs need model='mlp'. Received: input_shape={input_shape!r}")
  return shape


def mlp(input_shape, num_classes, *, hidden=(256, 256), name="mlp"):
  """A ReLU multi-layer perceptron that outputs logits.

  ``x -> Flatten -> [Dense(h) -> ReLU for h in hidden] -> Dense(num_classes)``.

  Args:
    input_shape: shape of one example (any rank; it is flattened).
    num_classes: number of logits d.
    hidden: widths of the hidden layers. Defaults to `(256, 256)`.
    name: the model's name. Defaults to `"mlp"`.

  Returns:
    An uncompiled ``keras.Model``.

  Raises:
    ValueError: on a bad shape, class count or width.
  """
  shape = _shape(input_shape)
  num_classes = _checks.positive_int(num_classes, "num_classes")
  hidden = [_checks.positive_int(h, "hidden") for h in hidden]
  inputs = keras.Input(shape=shape, name="x")
  h = keras.layers.Flatten(name="flatten")(inputs)
  for i, width in enumerate(hidden):
    h = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(h)
  logits = keras.layers.Dense(num_classes, name="logits")(h)
  return keras.Model(inputs, logits, name=name)


def _conv_bn_relu(h, filters, name):
  h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                          name=f"{name}_conv")(h)
  h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
  return keras.layers.ReLU(name=f"{name}_relu")(h)


def cnn(input_shape, num_classes, *, filters=(64, 128, 256), name="cnn"):
  """The paper's 7-layer ReLU CNN with batch norm, outputting logits.

  ``[Conv3x3(w) -> BN -> ReLU -> Conv3x3(w) -> BN -> ReLU -> MaxPool2x2
  for w in filters] -> Flatten -> Dense(num_classes)``: with the default
  three widths, 6 convolutions and 1 dense layer. Max-pooling uses ``"same"``
  padding, so small images (8x8 digits) shrink to 1x1, never to zero.

  Args:
    input_shape: ``(height, width, channels)``.
    num_classes: number of logits d.
    filters: conv width of each of the blocks. Defaults to `(64, 128, 256)`.
    name: the model's name. Defaults to `"cnn"`.

  Returns:
    An uncompiled ``keras.Model``.

  Raises:
    ValueError: on a non-image shape, a bad class count or width.
  """
  shape = _image_shape(input_shape, "cnn")
  num_classes = _checks.positive_int(num_classes, "num_classes")
  filters = [_checks.positive_int(f, "filters") for f in filters]
  inputs = keras.Input(shape=shape, name="x")
  h = inputs
  for i, width in enumerate(filters):
    h = _conv_bn_relu(h, width, f"block{i}a")
    h = _conv_bn_relu(h, width, f"block{i}b")
    h = keras.layers.MaxPooling2D(2, padding="same", name=f"block{i}_pool")(h)
  h = keras.layers.Flatten(name="flatten")(h)
  logits = keras.layers.Dense(num_classes, name="logits")(h)
  return keras.Model(inputs, logits, name=name)


def small_cnn(input_shape, num_classes, *, filters=(32, 64), dense=128, name="small_cnn"):
  """A smaller ReLU CNN with batch norm, outputting logits.

  ``[Conv3x3(w) -> BN -> ReLU -> MaxPool2x2 for w in filters] -> Flatten ->
  Dense(dense) -> ReLU -> Dense(num_classes)``.

  Args:
    input_shape: ``(height, width, channels)``.
    num_classes: number of logits d.
    filters: conv width of each block. Defaults to `(32, 64)`.
    dense: width of the hidden dense layer. Defaults to `128`.
    name: the model's name. Defaults to `"small_cnn"`.

  Returns:
    An uncompiled ``keras.Model``.

  Raises:
    ValueError: on a non-image shape, a bad class count or width.
  """
  shape = _image_shape(input_shape, "small_cnn")
  num_classes = _checks.positive_int(num_classes, "num_classes")
  filters = [_checks.positive_int(f, "filters") for f in filters]
  dense = _checks.positive_int(dense, "dense")
  inputs = keras.Input(shape=shape, name="x")
  h = inputs
  for i, width in enumerate(filters):
    h = _conv_bn_relu(h, width, f"block{i}")
    h = keras.layers.MaxPooling2D(2, padding="same", name=f"block{i}_pool")(h)
  h = keras.layers.Flatten(name="flatten")(h)
  h = keras.layers.Dense(dense, activation="relu", name="dense")(h)
  logits = keras.layers.Dense(num_classes, name="logits")(h)
  return keras.Model(inputs, logits, name=name)


def mnist_cnn(input_shape, num_classes, *, filters=(8, 16), dense=32, name="mnist_cnn"):
  """A narrow ReLU CNN with batch norm for 28x28 images on a CPU, outputting logits.

  ``[Conv3x3(w) -> BN -> ReLU -> MaxPool2x2 for w in filters] -> Flatten ->
  Dense(dense) -> ReLU -> Dense(num_classes)``: `small_cnn` at a quarter of
  its widths (32, 64 and 128). The preset for the four-method comparison on
  28x28 images on a CPU (``--dataset=mnist5k --model=mnist_cnn``).

  Size: 26,770 parameters on 28x28x1 inputs with 10 classes (26,722
  trainable, 48 batch-norm moving statistics); 0.31 M multiply-adds per
  image on 28x28, against 4.2 M for `small_cnn` and 116 M for `cnn`.

  Measured on ``mnist5k`` (3,750 training images, batch 64, Adam 1e-3;
  shared 2-core CPU machine, 2026-12-02, under a load of about 10): standard
  training 1.6-1.9 s per epoch, 0.975 clean test accuracy after 30 epochs
  (seed 0); PGD-10 adversarial training 9.2 s per epoch, d.d. operator-norm
  regularisation (10 power iterations) 17.3 s per epoch.

  Args:
    input_shape: ``(height, width, channels)``.
    num_classes: number of logits d.
    filters: conv width of each block. Defaults to `(8, 16)`.
    dense: width of the hidden dense layer. Defaults to `32`.
    name: the model's name. Defaults to `"mnist_cnn"`.

  Returns:
    An uncompiled ``keras.Model``.

  Raises:
    ValueError: on a non-image shape, a bad class count or width.
  """
  return small_cnn(_image_shape(input_shape, "mnist_cnn"), num_classes, filters=filters,
                   dense=dense, name=name)


_BUILDERS = {"mlp": mlp, "cnn": cnn, "small_cnn": small_cnn, "mnist_cnn": mnist_cnn}

#: Names accepted by `build`.
MODELS = tuple(_BUILDERS)


def build(name, input_shape, num_classes, **kwargs):
  """Builds a model of the zoo by name.

  Args:
    name: one of `MODELS`.
    input_shape: shape of one example, without the batch axis.
    num_classes: number of logits d.
    **kwargs: passed to the model's function (e.g. ``hidden`` for ``mlp``).

  Returns:
    An uncompiled ``keras.Model`` that outputs logits.

  Raises:
    ValueError: on an unknown name, or an input shape the model cannot take.

  Example:

  >>> model = build("mlp", (8, 8, 1), 10)
  >>> model.output.shape
  (None, 10)
  """
  if not isinstance(name, str) or name not in _BUILDERS:
    raise ValueError(f"`name` must be one of {', '.join(MODELS)}. Received: name={name!r}")
  return _BUILDERS[name](input_shape, num_classes, **kwargs)
