"""The doctor's own flags; every other flag of `python -m trainer.doctor` is trainer.main's (trainer/training/config.py),
so the same flagfile checks the same run."""

import dataclasses

from trainer.cli import field


@dataclasses.dataclass(frozen=True)
class DoctorSettings:
    skip_parity: bool = field(False, "Skip the replica parity check (the few training steps on one replica and "
                                     "on all): a fast check of the machine, data and run directory only.")
    parity_steps: int = field(3, "Optimisation steps each side of the parity check takes.", lower=1, upper=50)
    parity_batch_size: int = field(4, "Batch size per replica of the parity check; both sides train at this "
                                      "times the replicas (small, so one device holds the whole global batch).",
                                   lower=1, upper=1024)
    storage: str = field("", "The tuner's storage to reach, as trainer.tune's --storage: a database URL (e.g. "
                             "postgresql://user@db-host/optuna) or a journal file; empty = not checked.")
