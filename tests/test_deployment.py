"""Deployment: after robust training the saved artifacts are the user's model only.

After ``fit`` with each training callback (and with `RobustModel`, whose
``model`` is the deployable artifact), ``model.save('m.keras')`` and
``model.export(path)`` are reloaded in a fresh process in which
``import keras_opnorm`` fails, and must give the same predictions.
"""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import tensorflow as tf

import keras_opnorm
from keras_opnorm import callbacks
from keras_opnorm import objectives
import training_testlib as tl

# Runs in a fresh interpreter: keras_opnorm is made unimportable first.
_RELOAD = r"""
import json, sys
sys.modules["keras_opnorm"] = None  # `import keras_opnorm` now raises ImportError
import numpy as np
import keras
import tensorflow as tf
try:
  import keras_opnorm  # noqa
  raise SystemExit("keras_opnorm is importable")
except ImportError:
  pass
data = np.load(sys.argv[1])
x = data["x"]
result = {}
for name in json.loads(sys.argv[2]):
  model = keras.saving.load_model(f"{sys.argv[3]}/{name}.keras")
  exported = tf.saved_model.load(f"{sys.argv[3]}/{name}_export")
  result[name] = {
      "keras": float(np.max(np.abs(model.predict(x, verbose=0) - data[name]))),
      "export": float(np.max(np.abs(exported.serve(x).numpy() - data[name]))),
  }
print("RESULT" + json.dumps(result))
"""


def _model():
  return tl.compile_ce(tl.mlp(batch_norm=True, dropout=0.2), metrics=["accuracy"])


class DeploymentTest(tf.test.TestCase):

  def test_saved_and_exported_models_reload_without_keras_opnorm(self):
    x, y = tl.classification_data(n=16)
    root = self.get_temp_dir()
    expected = {"x": x}
    trained = {}
    for name, cb in [
        ("adversarial", callbacks.AdversarialTraining(0.1, num_steps=2)),
        ("operator_norm", callbacks.OperatorNormRegularization(0.1, num_iters=2, weight=0.1)),
        ("spectral_norm", callbacks.SpectralNormRegularization(0.01)),
    ]:
      model = _model()
      model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
      trained[name] = model
    robust = keras_opnorm.RobustModel(_model(), [objectives.AdversarialTraining(0.1, num_steps=1)])
    tl.compile_ce(robust)
    robust.fit(x, y, batch_size=8, epochs=1, verbose=0)
    trained["robust_model"] = robust.model

    for name, model in trained.items():
      model.save(os.path.join(root, f"{name}.keras"))
      model.export(os.path.join(root, f"{name}_export"), verbose=False)
      expected[name] = model.predict(x, verbose=0)
      with zipfile.ZipFile(os.path.join(root, f"{name}.keras")) as z:
        for member in z.namelist():
          self.assertNotIn(b"keras_opnorm", z.read(member), f"{name}: {member}")
    robust.export(os.path.join(root, "robust_export"), verbose=False)  # delegates
    served = tf.saved_model.load(os.path.join(root, "robust_export"))
    self.assertAllClose(served.serve(x), expected["robust_model"], rtol=1e-6, atol=1e-6)

    data_path = os.path.join(root, "expected.npz")
    np.savez(data_path, **expected)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _RELOAD, data_path, json.dumps(sorted(trained)), root],
        env=env, capture_output=True, text=True, timeout=240, check=False)
    self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    result = json.loads(line[len("RESULT"):])
    self.assertEqual(set(result), set(trained))
    for name, diffs in result.items():
      self.assertLessEqual(diffs["keras"], 1e-6, name)
      self.assertLessEqual(diffs["export"], 1e-6, name)


if __name__ == "__main__":
  tf.test.main()
