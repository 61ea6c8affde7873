"""Exports a run: `python -m trainer.export --model_dir=runs/incv3 [--format=litert --quantize=int8]`.

The command's front door; the work is trainer/serving/export.py's (SavedModel for TF Serving: serving.py,
which documents the endpoints; LiteRT: litert_export.py, which documents conversion and parity).
"""

from trainer import cli

cli.quiet_native_logs()

import pipelines  # noqa: E402  (after the log level is set: importing TensorFlow prints)
from trainer.serving import export  # noqa: E402

PROGRAM = "trainer.export"


def main(settings: export.ExportSettings) -> None:
    export.export(settings)


if __name__ == "__main__":
    cli.run(PROGRAM, main, export.ExportSettings, errors=(pipelines.DatasetNotBuiltError,))
