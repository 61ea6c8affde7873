"""`python -m trainer.doctor` on this machine (CPU only): a run that passes with its CPU-only warnings, one run
whose flags make five checks FAIL at once (dataset not built, weights of another backbone, model_dir not
writable, unreachable PostgreSQL, TF_CONFIG naming a busy port), and the parity check failing on a strategy that
skips the cross-replica sum. Runs that split the CPU are subprocesses (devices are configured before TensorFlow
starts); the checks that need no fresh process (run directory states, TF_CONFIG shapes, Keras' weights cache,
the CUDA version rules) are called in-process."""

import json
import pathlib
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from pipelines import backbones
from tests.training.test_distributed import cpu_env
from trainer import doctor as doctor_command
from trainer import preflight
from trainer.preflight import cluster, model_dir, report, versions, weights
from trainer.training import config as config_lib
from trainer.training import models
from trainer.training.run_dir import RunFiles

REPO = pathlib.Path(__file__).parents[2]
# The demo recipe at 32 px (a small model: parity steps take well under a second), two parity steps of 2 images
# per replica.
SMALL = ["--flagfile=configs/demo.flags", "--image_size=32"]
QUICK_PARITY = ["--parity_steps=2", "--parity_batch_size=2"]
UNREACHABLE_DATABASE = "postgresql://nobody@127.0.0.1:1/none"


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The command as a user runs it: TF_CPP_MIN_LOG_LEVEL unset, so the doctor keeps TensorFlow's start-up lines
    off the console itself."""
    environment = cpu_env(**env)
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-m", "trainer.doctor", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def report_lines(done: subprocess.CompletedProcess) -> dict[str, tuple[str, str]]:
    """check name -> (status, message) of each report line printed."""
    lines = {}
    for line in done.stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status in (report.OK, report.WARN, report.FAIL):
            check, _, message = rest.strip().partition(" ")
            lines[check] = (status, message.strip())
    return lines


def test_doctor_passes_on_this_machine_with_cpu_only_warnings(tiny_data_dir, tmp_path):
    done = doctor(*SMALL, *QUICK_PARITY, f"--data_dir={tiny_data_dir}", f"--model_dir={tmp_path / 'run'}",
                  "--strategy=mirrored", "--cpu_devices=2")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = report_lines(done)
    assert list(lines) == ["versions", "cuda", "devices", "dataset", "weights", "model_dir", "storage", "cluster",
                           "parity", "throughput"]
    # throughput's verdict depends on this machine's load (tests/training/test_throughput.py judges it)
    assert {check for check, (status, _) in lines.items() if status != report.OK} - {"throughput"} == {"cuda",
                                                                                                      "devices"}
    assert "CPU only, no GPU" in lines["devices"][1] and "MirroredStrategy, 2 replicas" in lines["devices"][1]
    assert "rare_species/small_128/1.1.0" in lines["dataset"][1] and "train 64" in lines["dataset"][1]
    assert "one device and MirroredStrategy x2 agree" in lines["parity"][1]
    assert "s/step" in lines["parity"][1]
    assert "images/s" in lines["throughput"][1] and "-bound" in lines["throughput"][1]
    assert done.stdout.splitlines()[-1].startswith("trainer.doctor: nothing FAILs (0 FAIL, ")
    assert not (tmp_path / "run").exists()  # the doctor writes nothing


def test_each_problem_is_its_own_fail_line_and_the_exit_status_is_1(tmp_path):
    other_backbone = tmp_path / "mobilenetv2.weights.h5"
    models.build_backbone(backbones.get_backbone("mobilenetv2"), 32, "none").save_weights(other_backbone)
    (tmp_path / "a_file").write_text("")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}", "127.0.0.1:1"]},
                     "task": {"type": "worker", "index": 0}}
        done = doctor(*SMALL, "--skip_parity", "--strategy=auto", f"--data_dir={tmp_path / 'empty'}",
                      f"--weights={other_backbone}", f"--model_dir={tmp_path / 'a_file' / 'run'}",
                      f"--storage={UNREACHABLE_DATABASE}", TF_CONFIG=json.dumps(tf_config))
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = report_lines(done)
    failed = {check: message for check, (status, message) in lines.items() if status == report.FAIL}
    assert set(failed) == {"dataset", "weights", "model_dir", "storage", "cluster"}, done.stdout
    assert "rare_species/small_128 is not built in" in failed["dataset"] and "tfds build" in failed["dataset"]
    assert "does not load into baseline_cnn" in failed["weights"]
    assert f"--model_dir={tmp_path / 'a_file' / 'run'} is not writable" in failed["model_dir"]
    assert f"--storage={UNREACHABLE_DATABASE}: cannot open the database" in failed["storage"]
    assert f"port {port} of this task is busy" in failed["cluster"]
    assert lines["parity"][0] == report.WARN and "--skip_parity" in lines["parity"][1]
    assert lines["throughput"][0] == report.WARN and "fix the dataset FAIL" in lines["throughput"][1]
    assert "something FAILs: fix those lines first (5 FAIL" in done.stdout.splitlines()[-1]


def test_flags_trainer_main_refuses_are_refused_before_any_check(tmp_path, capsys):
    """A ConfigError, which cli.run turns into trainer.main's one line and exit status 2."""
    with pytest.raises(config_lib.ConfigError, match=r"--aux_loss_weight=0.3 with --heads=: give other ranks"):
        doctor_command.main(small_config(tmp_path, "--aux_loss_weight=0.3"), preflight.DoctorSettings())
    assert capsys.readouterr().out == ""


class FirstReplicaOnly(tf.distribute.ReductionToOneDevice):
    """Cross-device ops that skip the cross-replica sum of a batch of values (the gradients): every replica
    gets the first replica's own instead, so the model trains on one replica's share of each batch."""

    def batch_reduce_implementation(self, reduce_op, value_destination_pairs, options):
        return [self.broadcast_implementation(value.values[0], destinations)
                for value, destinations in value_destination_pairs]


_PARITY_WITH_THE_DOUBLE = """
import sys
from trainer import cli
cli.quiet_native_logs()
import tensorflow as tf
from trainer.training import config as config_lib, distribute
from trainer.preflight import parity
from tests.training.test_doctor import FirstReplicaOnly
distribute.split_cpu(2)
devices = [device.name for device in tf.config.list_logical_devices("CPU")]
broken = tf.distribute.MirroredStrategy(devices, cross_device_ops=FirstReplicaOnly())
print(parity.check(config_lib.parse(sys.argv[1:]), broken, steps=2, batch_size=2, weights="none").line())
"""


def test_parity_fails_on_a_strategy_that_skips_the_cross_replica_sum(tmp_path):
    done = subprocess.run([sys.executable, "-c", _PARITY_WITH_THE_DOUBLE, *SMALL, f"--model_dir={tmp_path}"],
                          cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("FAIL  parity") and "MirroredStrategy x2 does not train as one device" in line
    assert "keras#19891" in line and "--strategy=one_device" in line


def small_config(tmp_path, *args: str) -> config_lib.Config:
    return config_lib.parse([*SMALL, f"--model_dir={tmp_path / 'run'}", *args])


def test_a_run_directory_holding_other_flags_fails_as_trainer_main_would_refuse_it(tmp_path):
    files = RunFiles(tmp_path / "run")
    files.model_dir.mkdir()
    files.flagfile.write_text(config_lib.flagfile_text(small_config(tmp_path, "--seed=7")))
    result = report.guarded("model_dir", model_dir.check, small_config(tmp_path))
    assert result.status == report.FAIL and "holds a run with other flags (now --seed=0)" in result.message


def test_a_resumable_run_that_stopped_on_a_nan_is_a_warning_naming_where(tmp_path):
    config, files = small_config(tmp_path), RunFiles(tmp_path / "run")
    files.model_dir.mkdir()
    files.flagfile.write_text(config_lib.flagfile_text(config))
    files.failure.write_text(json.dumps({"reason": "non-finite training loss", "loss": "nan", "phase": "phase2",
                                         "epoch": 3, "step": 7}))
    result = model_dir.check(config)
    assert result.status == report.WARN
    assert "an unfinished run with these flags, no phase done: trainer.main resumes it" in result.message
    assert "stopped on a non-finite training loss (nan) in phase2 epoch 3 step 7" in result.message


@pytest.mark.parametrize("tf_config, strategy, status, message", [
    ({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}, "auto", report.FAIL,
     "this task, worker:1, is not in the cluster (worker x1)"),
    ({"cluster": {"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}},
     "auto", report.FAIL, "the cluster has ps tasks"),
    ({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}, "one_device", report.WARN,
     "--strategy=one_device trains on this machine alone"),
], ids=["task_outside_cluster", "parameter_servers", "ignored_by_the_strategy"])
def test_tf_config_problems(tmp_path, monkeypatch, tf_config, strategy, status, message):
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    result = cluster.check(small_config(tmp_path, f"--strategy={strategy}"))
    assert result.status == status and message in result.message


@pytest.mark.parametrize("loaded, failure, warning", [
    ({"driver": "12.8", "runtime": "12.5", "cudnn": "9.3.0"}, None, None),
    ({"driver": "11.8", "runtime": "12.5", "cudnn": "9.3.0"}, "the driver supports CUDA 11.8", None),
    ({"driver": "12.2", "runtime": "12.5", "cudnn": "9.3.0"}, None, "minor version compatibility only"),
    ({"driver": "12.8", "runtime": "12.5", "cudnn": "8.9.7"}, "cuDNN 8.9.7 loaded", None),
    ({"driver": None, "runtime": None, "cudnn": None}, None, None),
], ids=["matching", "old_driver", "older_minor_driver", "cudnn_major", "nothing_loaded"])
def test_cuda_libraries_against_what_tensorflow_was_built_with(loaded, failure, warning):
    failures, warnings = versions.library_mismatches({"cuda_version": "12.5.1", "cudnn_version": "9"}, loaded)
    assert any(failure in line for line in failures) if failure else failures == []
    assert any(warning in line for line in warnings) if warning else warnings == []


@pytest.mark.parametrize("backbone, found, status, message", [
    ("mobilenetv2", None, report.WARN, "is not in Keras' cache: trainer.main downloads it at start"),
    ("mobilenetv2", b"torn", report.FAIL, "does not load into mobilenetv2"),  # Keras keeps no hash for it
    ("inceptionv3", b"torn", report.WARN, "does not have the hash Keras expects"),
])
def test_imagenet_weights_are_looked_up_in_keras_cache_without_downloading(tmp_path, monkeypatch, backbone, found,
                                                                            status, message):
    """The file name, cache folder and hash are Keras' own (its get_file only reports them)."""
    monkeypatch.setattr(weights.keras_config, "keras_home", lambda: str(tmp_path))
    config = small_config(tmp_path, f"--backbone={backbone}", "--image_size=75", "--weights=imagenet")
    path = pathlib.Path(weights.imagenet_file(config.backbone_spec, 75)[0])
    assert path.parent == tmp_path / "models" and path.name.startswith(backbone.replace("v", "_v"))
    if found:
        path.parent.mkdir()
        path.write_bytes(found)
    result = weights.check_weights(config)
    assert result.status == status and message in result.message, result.message
