"""Subprocess helper of test_distribute.py: one training step under tf.distribute.

Run as a script (logical devices and TF_CONFIG must be set before TensorFlow
initialises, hence a fresh process):

  python distribute_worker.py mirrored OUT.npz
      Two logical CPU devices; trains the same model from the same weights
      one step on the same global batch (a) on one device and (b) under
      MirroredStrategy over both, with the training callbacks, and writes
      both weight lists and logs to OUT.npz.
  python distribute_worker.py multiworker OUT.npz INDEX PORT0,PORT1
      One worker of a 2-worker MultiWorkerMirroredStrategy on localhost; the
      chief (INDEX 0) writes the weights after one step to OUT.npz.
  python distribute_worker.py single OUT.npz
      The single-device reference of the multi-worker run.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

GLOBAL_BATCH = 8


def _data_and_weights():
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  x = rng.uniform(-1, 1, size=(GLOBAL_BATCH, 4)).astype("float32")
  y = rng.randint(0, 3, size=(GLOBAL_BATCH,)).astype("int32")
  weights = [rng.normal(size=(4, 8)).astype("float32") * 0.5,
             rng.normal(size=(8,)).astype("float32") * 0.1,
             rng.normal(size=(8, 3)).astype("float32") * 0.5,
             rng.normal(size=(3,)).astype("float32") * 0.1]
  return x, y, weights


def _model(weights):
  import keras  # pylint: disable=g-import-not-at-top
  model = keras.Sequential([
      keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
  model.set_weights(weights)
  model.compile(optimizer=keras.optimizers.SGD(0.1),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _callbacks():
  from keras_opnorm import callbacks  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import training_testlib as tl  # pylint: disable=g-import-not-at-top
  # Deterministic objectives (no random start), so that both runs see the
  # same terms: PGD cross-entropy AT, global SNR (seeded vectors), and a
  # test objective whose metric trackers are made during tracing.
  return [
      callbacks.AdversarialTraining(0.1, p=2, num_steps=2, random_start=False),
      callbacks.SpectralNormRegularization(0.05, seed=0),
      callbacks.ObjectiveCallback(tl.SquaredLogits(0.1, declare_metrics=False)),
  ]


def _train(model):
  x, y, _ = _data_and_weights()
  history = model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0,
                      callbacks=_callbacks())
  return [w for w in model.get_weights()], {k: v[0] for k, v in history.history.items()}


def _train_custom_loop(model, strategy):
  """One step of keras_opnorm's train step in a custom loop (strategy.run).

  Keras 3.15's own `fit` does not run under MultiWorkerMirroredStrategy (its
  `_maybe_symbolic_build` and `reduce_per_replica` fail on PerReplica values
  and scalar logs: keras-team/keras#20585, open), whatever the train step;
  so the multi-worker check runs keras_opnorm's step the way a custom loop
  does, which is what `fit` would do per replica.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from keras_opnorm import training  # pylint: disable=g-import-not-at-top
  x, y, _ = _data_and_weights()
  objectives = [cb.objective for cb in _callbacks()]
  with strategy.scope():
    model(x[:1])
    model.optimizer.build(model.trainable_variables)
  step = training.make_train_step(model, objectives)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).with_options(options)
  batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

  @tf.function
  def run(data):
    logs = strategy.run(step, args=(data,))
    return {k: strategy.reduce("MEAN", v, axis=None) for k, v in logs.items()}

  logs = run(batch)
  return [w for w in model.get_weights()], {k: float(v) for k, v in logs.items()}


def _save(path, weights, logs, prefix=""):
  import numpy as np  # pylint: disable=g-import-not-at-top
  arrays = {f"{prefix}w{i}": w for i, w in enumerate(weights)}
  arrays[f"{prefix}logs"] = np.array(json.dumps({k: float(v) for k, v in logs.items()}))
  return arrays


def main(argv):
  mode, out = argv[1], argv[2]
  if mode == "multiworker":
    index, ports = int(argv[3]), argv[4].split(",")
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": index}})
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  keras.config.disable_traceback_filtering()
  _, _, w0 = _data_and_weights()
  arrays = {}
  if mode in ("mirrored", "single"):
    weights, logs = _train(_model(w0))
    arrays.update(_save(out, weights, logs, "single_"))
  if mode == "mirrored":
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
      model = _model(w0)
    weights, logs = _train(model)
    arrays.update(_save(out, weights, logs, "dist_"))
    arrays["replicas"] = np.array(strategy.num_replicas_in_sync)
  if mode == "multiworker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
      model = _model(w0)
    weights, logs = _train_custom_loop(model, strategy)
    if index != 0:
      return
    arrays.update(_save(out, weights, logs, "dist_"))
    arrays["replicas"] = np.array(strategy.num_replicas_in_sync)
  np.savez(out, **arrays)


if __name__ == "__main__":
  main(sys.argv)
