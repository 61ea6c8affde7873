"""The doctor's checks (`python -m trainer.doctor`, trainer/doctor.py): before a long run, on the machine it
will run on, one line per check (ok / warn / FAIL, with what to do), then a replica parity check on the run's
model and strategy."""

from trainer.preflight.checkup import run_checks
from trainer.preflight.report import Result, exit_status, summary
from trainer.preflight.settings import DoctorSettings

__all__ = ["DoctorSettings", "Result", "exit_status", "run_checks", "summary"]
