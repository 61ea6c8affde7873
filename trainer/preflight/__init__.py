"""The doctor's checks (`python -m trainer.doctor`, trainer/doctor.py): before a long run, on the machine it
will run on, one line per check (ok / warn / FAIL, with what to do), then a replica parity check on the run's
model and strategy. One module per concern:

  report         Result and its line, `guarded` (a check's error becomes its FAIL line), summary, exit status
  settings       DoctorSettings, the doctor's own flags (the rest are trainer.main's)
  versions       TensorFlow, Keras, TFDS against setup.cfg's pins; CUDA/cuDNN built with vs loaded
  cuda           what the process loaded of NVIDIA's libraries (versions, GPU memory), through ctypes
  devices        the strategy the run makes and its devices; the flags that strategy refuses
  data           the built dataset, its splits and size
  weights        the backbone weights: Keras' cached ImageNet file, or a weights file that loads
  model_dir      the run directory: writable, free disk, an existing run's flags
  tuner_storage  the tuner's --storage, opened as trainer.tune opens it
  cluster        TF_CONFIG: this worker's task, its port free, the Keras multi-worker workaround
  parity         a few steps on one replica and on all, compared
  checkup        the order they run in: `run_checks(config, settings)` yields each Result

It reuses the trainer's pieces (config, distribute, models, objectives, schedules, inputs, run_dir) and the
tuner's storage, so it sits above both rooms: doctor -> tuning -> training.
"""

from trainer.preflight.checkup import run_checks
from trainer.preflight.report import Result, exit_status, summary
from trainer.preflight.settings import DoctorSettings

__all__ = ["DoctorSettings", "Result", "exit_status", "run_checks", "summary"]
