"""Checks a machine, the data and a run's flags before a long training run, then whether several replicas
train as one device does:

    python -m trainer.doctor --flagfile=configs/inceptionv3.flags --data_dir=~/tensorflow_datasets \
        --model_dir=runs/incv3 [--skip_parity] [--storage=postgresql://user@db-host/optuna]

Takes trainer.main's flags (so the same flagfile checks the same run) plus the doctor's own
(trainer/preflight/settings.py), and prints one line per check, ok / warn / FAIL with what to do
(trainer/preflight/). Exit status 0 when nothing FAILs, 1 when something does; flags trainer.main would refuse
are refused the same way, in one line with status 2, before any check runs.
"""

from trainer import cli

cli.quiet_native_logs()

from trainer import preflight  # noqa: E402  (after the log level is set: importing TensorFlow prints)
from trainer.training.config import Config, validate  # noqa: E402

PROGRAM = "trainer.doctor"


def main(config: Config, settings: preflight.DoctorSettings) -> int:
    validate(config)
    results = []
    for result in preflight.run_checks(config, settings):
        print(result.line(), flush=True)
        results.append(result)
    print(preflight.summary(results, PROGRAM))
    return preflight.exit_status(results)


if __name__ == "__main__":
    cli.run(PROGRAM, main, Config, preflight.DoctorSettings, interrupted="interrupted")
