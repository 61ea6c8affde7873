"""One interface over the two ways predict and evaluate run a trained run: `--backend=keras` (model.keras in
TensorFlow, trained_model.TrainedModel) or `--backend=litert` (an exported .tflite, litert.LiteRTModel).

Both take 0..255 images of the model's input size, (batch, size, size, 3), and return each head's softmax
rows as numpy arrays; both know their input size, label names (head -> names, the label rank first), label rank
and its names, taxonomy and source file. So the decoding, batching,
top-k, reports and file formats around them are one code path, and a LiteRT model is judged by exactly what
judged Keras.
"""

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from tfds_rarespecies import labels
from trainer.cli import field
from trainer.serving import litert, trained_model

BACKENDS = ("keras", "litert")


class Predictor(Protocol):
    input_size: int
    label_rank: str  # the rank the model names: the first head of label_names
    names: tuple[str, ...]  # the label rank's names
    label_names: Mapping[str, tuple[str, ...]]
    taxonomy: labels.Taxonomy  # the dataset's tree the model was trained in
    source: str  # the file that answers: model.keras or the .tflite, named in reports

    def probabilities(self, images) -> dict[str, np.ndarray]: ...


def open_predictor(model_dir: str, backend: str = "keras", quantize: str = litert.AUTO,
                   threads: int = 0) -> Predictor:
    """The run's model.keras, or its LiteRT export (litert.find_export: --quantize's, auto's choice, or the only
    one)."""
    if backend == "litert":
        return litert.load(litert.find_export(model_dir, quantize), threads)
    return trained_model.load_trained(model_dir)


# The flags predict and evaluate share (each settings dataclass declares them with these).
def backend_field():
    return field("keras", "keras: model.keras in TensorFlow; litert: the run's LiteRT export "
                 "(model_dir/litert/, written by `trainer.export --format=litert`) on XNNPACK.", choices=BACKENDS,
                 group="backend")


def quantize_field():
    return field(litert.AUTO, f"With --backend=litert: which export ({', '.join(litert.QUANTIZATIONS)}); auto = "
                 f"the one `trainer.export --quantize=auto` chose (model_dir/litert/{litert.CHOICE_NAME}), else the "
                 "only one in model_dir/litert/.", choices=(litert.AUTO, *litert.QUANTIZATIONS),
                 group="backend")


def threads_field():
    return field(0, "Threads of the LiteRT interpreter and of predict's decoding; 0 = every core this process may "
                 "use. (Keras uses TensorFlow's own thread pools.)", lower=0, group="backend")
