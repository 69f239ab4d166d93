"""tf.distribute: the regularised step gives the single-device update.

Logical devices and TF_CONFIG must be set before TensorFlow initialises, so
each check runs `distribute_worker.py` in fresh processes. The objectives are
deterministic (PGD without random start, seeded spectral-norm vectors, and a
test objective), the model has no batch statistics, and the global batch is
the same: the summed per-replica gradients (each term divided by the number
of replicas, as Keras divides its losses) must equal the single-device
gradient, so the weights after one SGD step agree to float tolerance.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribute_worker.py")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env.pop("TF_CONFIG", None)
  return env


def _run(args, timeout=240):
  proc = subprocess.run([sys.executable, _WORKER] + args, env=_env(), capture_output=True,
                        text=True, timeout=timeout, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


class DistributeTest(tf.test.TestCase):

  def _assert_same(self, single, dist, prefix_single="single_", prefix_dist="dist_"):
    for i in range(4):
      self.assertAllClose(dist[f"{prefix_dist}w{i}"], single[f"{prefix_single}w{i}"],
                          rtol=1e-5, atol=1e-6)
    logs_single = json.loads(str(single[f"{prefix_single}logs"]))
    logs_dist = json.loads(str(dist[f"{prefix_dist}logs"]))
    self.assertEqual(set(logs_single), set(logs_dist))
    for key, value in logs_single.items():
      self.assertAllClose(logs_dist[key], value, rtol=1e-5, msg=key)

  def test_mirrored_two_logical_cpus_matches_single_device(self):
    out = os.path.join(self.get_temp_dir(), "mirrored.npz")
    _run(["mirrored", out])
    result = np.load(out)
    self.assertEqual(int(result["replicas"]), 2)
    self._assert_same(result, result)
    logs = json.loads(str(result["dist_logs"]))
    self.assertContainsSubset(["adv_loss", "spectral_norm_max", "sq_sq"], logs)

  @pytest.mark.slow
  def test_multi_worker_two_processes_matches_single_device(self):
    out = os.path.join(self.get_temp_dir(), "multiworker.npz")
    ref = os.path.join(self.get_temp_dir(), "single.npz")
    ports = f"{_free_port()},{_free_port()}"
    workers = [
        subprocess.Popen([sys.executable, _WORKER, "multiworker", out, str(i), ports],
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    try:
      outputs = [w.communicate(timeout=240)[0] for w in workers]
    finally:
      for w in workers:
        if w.poll() is None:
          w.kill()
    for w, output in zip(workers, outputs):
      self.assertEqual(w.returncode, 0, output[-3000:])
    _run(["single", ref])
    result = np.load(out)
    self.assertEqual(int(result["replicas"]), 2)
    self._assert_same(np.load(ref), result)


if __name__ == "__main__":
  tf.test.main()
