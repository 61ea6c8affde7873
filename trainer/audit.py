r"""Audits a built dataset from the command line (README, "5. Audit the images"):

    python -m trainer.audit --data_dir=~/tensorflow_datasets --config=inception_342 --backbone=inceptionv3 \
        --weights=imagenet --out=audit/

Flags -> AuditConfig -> trainer.auditing.run.run. Any mistake in the flags or the data ends in one line on stderr
and exit status 2; `--help` lists the flags by topic.
"""

from trainer import cli

cli.quiet_native_logs()

from trainer.auditing import run, settings  # noqa: E402  (after the log level is set: importing TensorFlow prints)

PROGRAM = "trainer.audit"


def main(config: settings.AuditConfig) -> None:
    run.run(config)


if __name__ == "__main__":
    cli.run(PROGRAM, main, settings.AuditConfig)
