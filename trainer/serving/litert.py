"""A run's LiteRT (TFLite) models: where they live, which interpreter runs them, and running them.

    model_dir/litert/<quantize>.tflite   uint8 pixels [batch, size, size, 3] (RGB, the evaluation view: the
                                         central square resized to the model's input size) -> a float32
                                         softmax per head, named by its rank (labels.json's heads)
    model_dir/litert/<quantize>.json     its metadata (trainer/serving/litert_export.py writes both): label
                                         names per head (the label rank first, as in labels.json), the
                                         label rank, input size, quantisation, dataset, calibration,
                                         parity with the Keras model, and the .tflite's sha256
    model_dir/litert/labels.txt          the label rank's names, one a line, in the order of its output (for
                                         mobile code that reads a labels file: Android's, MediaPipe's)
    model_dir/litert/auto.json           what `--quantize=auto` chose: the variant, its sha256 and every
                                         variant tried with its figures (predict and evaluate's auto reads it)

quantize is one of QUANTIZATIONS (litert_export.py describes each). The interpreter is the ai-edge-litert
package's where it is installed (`pip install -e '.[litert]'`), else tf.lite.Interpreter, the same runtime
inside TensorFlow: TensorFlow 2.21 warns on every construction that it "is deprecated and is scheduled for
deletion", which says nothing a user of this command can act on, so that warning alone is silenced. Both
delegate to XNNPACK by default (OpResolverType.AUTO) on `threads` threads. The runtime's one INFO line
("Created TensorFlow Lite XNNPACK delegate for CPU", written straight to file descriptor 2) is dropped like
TensorFlow's start-up lines unless TF_CPP_MIN_LOG_LEVEL=0 (trainer/cli.py).

A damaged, truncated or foreign .tflite, a missing or unreadable metadata file, or a .tflite that is not the
one its metadata describes (sha256) ends in one LiteRTError line that says to export again.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import time
import warnings
from collections.abc import Mapping

import numpy as np

from tfds_rarespecies import labels
from trainer import cli
from trainer.training import run_dir

QUANTIZATIONS = ("float32", "float16", "dynamic", "mixed", "int8")
FASTEST_FIRST = ("int8", "mixed", "dynamic", "float16", "float32")  # the order --quantize=auto tries them in
AUTO = "auto"
CHOICE_NAME = f"{AUTO}.json"
LABELS_NAME = "labels.txt"
SIGNATURE = "serving_default"
INPUT_NAME = "images"

# What the runtime and the converter write straight to file descriptor 2: the XNNPACK INFO line, and the
# quantiser's summary of each int8 conversion.
_NATIVE_NOTES = re.compile(r"INFO: Created TensorFlow Lite XNNPACK delegate|fully_quantize: ")
_DEPRECATION = r"\s*Warning: tf\.lite\.Interpreter is deprecated"


class LiteRTError(cli.UserError):
    """A LiteRT model that cannot be found or used; the message is the one line shown."""


@dataclasses.dataclass(frozen=True)
class LiteRTFiles:
    """One export's pair of files: litert_dir/<quantize>.tflite and its metadata <quantize>.json."""

    directory: pathlib.Path
    quantize: str

    @property
    def model(self) -> pathlib.Path:
        return self.directory / f"{self.quantize}.tflite"

    @property
    def metadata(self) -> pathlib.Path:
        return self.directory / f"{self.quantize}.json"


def default_dir(model_dir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(model_dir).expanduser() / run_dir.LITERT_DIR


def find_export(model_dir: str | pathlib.Path, quantize: str = AUTO) -> LiteRTFiles:
    """The export predict and evaluate use: --quantize's, or with "auto" the one `--quantize=auto` chose
    (auto.json), else the only one in model_dir/litert/."""
    directory = default_dir(model_dir)
    if quantize == AUTO and (directory / CHOICE_NAME).exists():
        return recorded_choice(directory)
    present = [name for name in QUANTIZATIONS if LiteRTFiles(directory, name).model.is_file()]
    export_one = (f"export one with `python -m trainer.export --model_dir={model_dir} --format=litert "
                  f"--quantize={'int8' if quantize == AUTO else quantize}`")
    if quantize != AUTO:
        if quantize not in present:
            raise LiteRTError(f"--quantize={quantize}: {LiteRTFiles(directory, quantize).model} not found; "
                              f"{export_one}")
        return LiteRTFiles(directory, quantize)
    if len(present) > 1:
        raise LiteRTError(f"{directory} holds {', '.join(f'{name}.tflite' for name in present)}: choose one with "
                          f"--quantize={'|'.join(present)}")
    if not present:
        raise LiteRTError(f"--backend=litert: {directory} holds no .tflite; {export_one}")
    return LiteRTFiles(directory, present[0])


def recorded_choice(directory: pathlib.Path) -> LiteRTFiles:
    """The export auto.json names, when it is still the very file auto chose (sha256)."""
    record_path, again = directory / CHOICE_NAME, (f"export again with `python -m trainer.export --model_dir="
                                                   f"{directory.parent} --format=litert --overwrite`, or name one "
                                                   f"with --quantize")
    try:
        record = json.loads(record_path.read_text())
        if record["chosen"] not in QUANTIZATIONS:
            raise ValueError(f"chosen {record['chosen']!r} is none of {', '.join(QUANTIZATIONS)}")
        files = LiteRTFiles(directory, record["chosen"])
        content = files.model.read_bytes()
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise LiteRTError(f"{record_path}: cannot read the choice of --quantize=auto or its model "
                          f"({_first_line(error)}); {again}") from None
    if record.get("sha256") != sha256(content):
        raise LiteRTError(f"{files.model} is not the model {record_path.name} chose (replaced since, or the record "
                          f"was edited); {again}")
    return files


def labels_text(names) -> str:
    """labels.txt: one name a line, in the order of the label rank's output."""
    return "".join(f"{name}\n" for name in names)


def default_threads() -> int:
    """All the cores this process may run on."""
    return len(os.sched_getaffinity(0))


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class LiteRTModel:
    """One .tflite in an interpreter, answering like TrainedModel.probabilities (trainer/evaluation/predictors).

    Not thread-safe (an interpreter runs one batch at a time): callers run it from one thread and decode
    elsewhere.
    """

    def __init__(self, content: bytes, metadata: Mapping, threads: int = 0, source: str = "the model"):
        self.metadata, self.source = dict(metadata), source
        try:
            self.label_names = {head: tuple(names) for head, names in self.metadata["labels"].items()}
            self.label_rank = next(iter(self.label_names))
            self.names = self.label_names[self.label_rank]
            self.input_size = int(self.metadata["input"]["size"])
            # The tree the model was trained in; exports made before exports carried it used the shipped one.
            self.taxonomy = (labels.Taxonomy.from_text(self.metadata["taxonomy"]) if "taxonomy" in self.metadata
                             else labels.shipped())
            self.busy_seconds, self.answered = 0.0, 0
            with quiet_runtime():
                interpreter = interpreter_class()(model_content=content, num_threads=threads or default_threads())
                self._runner = interpreter.get_signature_runner(SIGNATURE)
                self.probabilities(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))
            self.busy_seconds, self.answered = 0.0, 0  # inference time since loading, for the export's speed
        except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as error:
            raise LiteRTError(f"{source}: not a LiteRT model of this project ({_first_line(error)}); "
                              "export it again with `python -m trainer.export --format=litert --overwrite ...`"
                              ) from None

    def probabilities(self, images) -> dict[str, np.ndarray]:
        """0..255 images (batch, input_size, input_size, 3) -> each head's softmax rows. Float images (the
        evaluation pipeline's, test-time views) are rounded to the uint8 the model takes."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        start = time.perf_counter()
        outputs = self._runner(**{INPUT_NAME: images})
        self.busy_seconds, self.answered = self.busy_seconds + time.perf_counter() - start, self.answered + len(images)
        return {head: np.asarray(outputs[head]) for head in self.label_names}


def load(files: LiteRTFiles, threads: int = 0) -> LiteRTModel:
    """The export's .tflite in an interpreter, checked against its metadata; one LiteRTError line if not usable."""
    export_again = (f"export it again with `python -m trainer.export --model_dir={files.directory.parent} "
                    f"--format=litert --quantize={files.quantize} --overwrite`")
    try:
        metadata = dict(json.loads(files.metadata.read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise LiteRTError(f"{files.metadata}: cannot read the export's metadata ({_first_line(error)}); "
                          f"{export_again}") from None
    try:
        content = files.model.read_bytes()
    except OSError as error:
        raise LiteRTError(f"{files.model}: cannot read it ({_first_line(error)}); {export_again}") from None
    if metadata.get("sha256") != sha256(content):
        raise LiteRTError(f"{files.model} is not the model {files.metadata.name} describes (its sha256 differs: "
                          f"damaged, or replaced); {export_again}")
    return LiteRTModel(content, metadata, threads, source=str(files.model))


def interpreter_class() -> type:
    """ai_edge_litert's Interpreter where the `litert` extra is installed, else TensorFlow's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (an optional extra)
    except ImportError:
        import tensorflow as tf  # noqa: PLC0415

        return tf.lite.Interpreter
    return Interpreter


@contextlib.contextmanager
def quiet_runtime():
    """Around loading an interpreter or a conversion: the runtime's native notes dropped (unless
    TF_CPP_MIN_LOG_LEVEL=0 asks for every line), and the deprecation warning of the tf.lite interpreter (which
    int8 calibration runs inside the converter) silenced."""
    every_line = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0"
    notes = contextlib.nullcontext() if every_line else cli.native_lines_dropped(_NATIVE_NOTES)
    with notes, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION)
        yield


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else 'no detail'}"
