"""Names the family of each photo given as a file, a folder (searched recursively) or a glob.

    python -m trainer.predict --model_dir=runs/incv3 photo1.jpg photos/ 'shots/*.png' --top_k=5
        --output=predictions.csv

Files are decoded by the builder's decoder (tfds_rarespecies.imaging), so anything the dataset accepts works:
grayscale, CMYK, 16-bit, transparent, PNG behind a .jpg name, EXIF-rotated. Folders and globs contribute
the files with an image suffix; a file named on its own is always tried. A file that cannot be read costs
one line on stderr (`trainer.predict: skipped PATH: REASON (detail)`) and the others go on.

Output: a table on stdout, or --output=FILE.csv (one row per image and rank: file, rank, family, phylum,
probability) or FILE.json (a list of {file, predictions: [{rank, family, phylum, probability}]}).
Exit status: 0 when at least one image was predicted; 1 when none could be (nothing matched, or every file
failed); 2 when the command cannot start (no inputs, an unknown --output suffix, no finished run in --model_dir).
"""

import csv
import dataclasses
import glob
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np
import tqdm

from tfds_rarespecies import imaging
from trainer import cli
from trainer.cli import field
from trainer.evaluation import serving

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
OUTPUT_SUFFIXES = ("", ".csv", ".json")
CSV_COLUMNS = ("file", "rank", "family", "phylum", "probability")
EXIT_NOTHING_PREDICTED = 1
EXIT_USAGE = cli.EXIT_USAGE
PROGRAM = "trainer.predict"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The top-k families of one file, surest first."""

    file: str
    families: tuple[str, ...]
    phyla: tuple[str, ...]
    probabilities: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A file (or an argument matching none) that could not be predicted, and why."""

    file: str
    reason: str
    detail: str

    def line(self) -> str:
        return f"{PROGRAM}: skipped {self.file}: {self.reason} ({self.detail})"


def collect_files(arguments: Sequence[str]) -> tuple[list[pathlib.Path], list[Skipped], bool]:
    """Expands files, folders and globs into image files, in order, without repeats.

    Returns (files, arguments that matched nothing, whether any folder or glob was expanded).
    """
    files, unmatched, expanded = [], [], False
    for argument in arguments:
        path = pathlib.Path(argument).expanduser()
        if glob.has_magic(argument):
            matches = [pathlib.Path(match) for match in sorted(glob.glob(str(path), recursive=True))]
            found = [file for match in matches for file in _images_under(match)]
            expanded = True
        elif path.is_dir():
            found = _images_under(path)
            expanded = True
        elif path.is_file():
            found = [path]
        else:
            found = []
        if not found:
            unmatched.append(Skipped(argument, "no_match", "no such file, or no image file in the folder/glob"))
        files.extend(found)
    return list(dict.fromkeys(files)), unmatched, expanded


def _images_under(path: pathlib.Path) -> list[pathlib.Path]:
    if path.is_file():
        return [path] if path.suffix.lower() in IMAGE_SUFFIXES else []
    return sorted(file for file in path.rglob("*") if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in file.relative_to(path).parts))


def classify_file(model: serving.ServingModel, path: pathlib.Path) -> Prediction:
    """Decodes one file with the builder's decoder and classifies it; raises OSError or imaging.DecodeError.

    JPEGs decode at a reduced scale that keeps at least the model's input size (huge photos stay cheap).
    """
    image = imaging.decode_rgb(path.read_bytes(), min_short_side=model.trained.input_size)
    result = model.classify_images(np.asarray(image)[None])
    return Prediction(str(path), tuple(name.decode() for name in result["families"].numpy()[0]),
                      tuple(name.decode() for name in result["phyla"].numpy()[0]),
                      tuple(float(p) for p in result["probabilities"].numpy()[0]))


def predict_files(model: serving.ServingModel, files: Sequence[pathlib.Path], progress: bool = False
                  ) -> tuple[list[Prediction], list[Skipped]]:
    """Classifies every file; each one that fails is reported on stderr at once, in one line."""
    predictions, skipped = [], []
    for path in tqdm.tqdm(files, desc="Predicting", unit=" images", disable=not progress, file=sys.stderr):
        outcome = _try_classify(model, path)
        if isinstance(outcome, Skipped):
            skipped.append(outcome)
            tqdm.tqdm.write(outcome.line(), file=sys.stderr)
        else:
            predictions.append(outcome)
    return predictions, skipped


def _try_classify(model: serving.ServingModel, path: pathlib.Path) -> Prediction | Skipped:
    try:
        return classify_file(model, path)
    except imaging.DecodeError as error:
        return Skipped(str(path), error.reason, str(error))
    except OSError as error:
        return Skipped(str(path), "unreadable", f"{type(error).__name__}: {error.strerror or error}")


def ranked(prediction: Prediction) -> list[dict]:
    """The rows of one prediction: rank (from 1), family, phylum, probability."""
    return [{"rank": rank, "family": family, "phylum": phylum, "probability": probability}
            for rank, (family, phylum, probability) in enumerate(
                zip(prediction.families, prediction.phyla, prediction.probabilities), 1)]


def write_predictions(predictions: Sequence[Prediction], output: str) -> None:
    """To stdout as a table (output empty), or to a .csv / .json file."""
    if not output:
        print(format_table(predictions))
        return
    path = pathlib.Path(output).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, CSV_COLUMNS)
            writer.writeheader()
            writer.writerows({"file": p.file, **row} for p in predictions for row in ranked(p))
    else:
        path.write_text(json.dumps([{"file": p.file, "predictions": ranked(p)} for p in predictions],
                                   indent=2) + "\n")


def format_table(predictions: Sequence[Prediction]) -> str:
    lines = []
    for prediction in predictions:
        lines.append(prediction.file)
        lines += [f"  {row['rank']}. {row['family']:<24} {row['phylum']:<14} {row['probability']:6.1%}"
                  for row in ranked(prediction)]
    return "\n".join(lines)


class PredictError(cli.UserError):
    """Predict cannot start (status 2) or predicted nothing (status 1); the message is the one line shown."""

    def __init__(self, message: str, status: int = EXIT_USAGE):
        super().__init__(message)
        self.status = status


def run(model_dir: str, inputs: Sequence[str], top_k: int = serving.DEFAULT_TOP_K, output: str = "") -> None:
    """The whole command; raises PredictError with the exit status of the module docstring."""
    if not model_dir:
        raise PredictError("--model_dir is empty: name the run to predict with, e.g. --model_dir=runs/incv3")
    if not inputs:
        raise PredictError("no inputs: name image files, folders or globs after the flags")
    if pathlib.Path(output).suffix.lower() not in OUTPUT_SUFFIXES:
        raise PredictError(f"--output={output}: unknown suffix; use a .csv or .json file, or leave it out for a "
                           "table")
    files, unmatched, expanded = collect_files(inputs)
    for miss in unmatched:
        print(miss.line(), file=sys.stderr)
    if not files:
        raise PredictError("no image files found in the inputs", EXIT_NOTHING_PREDICTED)
    model = serving.ServingModel(serving.load_trained(model_dir), top_k)
    predictions, skipped = predict_files(model, files, progress=expanded)
    if not predictions:
        raise PredictError(f"none of the {len(files)} files could be predicted (see the lines above)",
                           EXIT_NOTHING_PREDICTED)
    write_predictions(predictions, output)
    if output:
        print(f"{len(predictions)} images predicted, {len(skipped) + len(unmatched)} skipped: {output}",
              file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class PredictSettings:
    """The predict command's flags (the files, folders and globs follow them)."""

    model_dir: str = field("", "Run directory holding model.keras and labels.json.")
    top_k: int = field(serving.DEFAULT_TOP_K, "Families listed per image.", lower=1)
    output: str = field("", "A .csv or .json file to write; empty = a table on stdout.")
