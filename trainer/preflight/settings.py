"""The doctor's own flags; every other flag of `python -m trainer.doctor` is trainer.main's
(trainer/training/config.py), so the same flagfile checks the same run."""

import dataclasses

from trainer.cli import field


@dataclasses.dataclass(frozen=True)
class DoctorSettings:
    skip_parity: bool = field(False, "Skip the replica parity check (the few training steps on one replica and "
                                     "on all): a fast check of the machine, data and run directory only.",
                              group="parity check")
    parity_steps: int = field(3, "Optimisation steps each side of the parity check takes.", lower=1, upper=50,
                              group="parity check")
    parity_batch_size: int = field(4, "Batch size per replica of the parity check; both sides train at this "
                                      "times the replicas (small, so one device holds the whole global batch).",
                                   lower=1, upper=1024, group="parity check")
    storage: str = field("", "The tuner's storage to reach, as trainer.tune's --storage: a database URL (e.g. "
                             "postgresql://user@db-host/optuna) or a journal file; empty = not checked.",
                         group="tuner storage", path=True)
    skip_throughput: bool = field(False, "Skip the throughput check (the training input alone against a few "
                                         "training steps alone: is the run input-bound?).", group="throughput check")
    throughput_seconds: float = field(5.0, "Seconds the training input is timed for, after its first batches.",
                                      lower=0.5, upper=600, group="throughput check")
    throughput_steps: int = field(5, "Training steps of each image-reading phase timed, after a first one "
                                     "(tracing).", lower=1, upper=100, group="throughput check")
