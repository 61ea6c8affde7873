"""Names each photo given as a file, a folder (searched recursively) or a glob at the model's label rank
(labels.json's first head: family, species, ...), and with --rollup_precision at the deepest rank it is sure of.

    python -m trainer.predict --model_dir=runs/incv3 photo1.jpg photos/ 'shots/*.png' --top_k=5
        --output=predictions.csv [--backend=litert [--quantize=int8]] [--threads=N] [--batch_size=16]
        [--rollup_precision=0.95]

Files are decoded by the builder's decoder (tfds_rarespecies.imaging), so anything the dataset accepts works:
grayscale, CMYK, 16-bit, transparent, PNG behind a .jpg name, EXIF-rotated. Folders and globs contribute
the files with an image suffix; a file named on its own is always tried. A file that cannot be read costs
one line on stderr (`trainer.predict: skipped PATH: REASON (detail)`) and the others go on.

A pool of --threads threads decodes each file into the evaluation view (trained_model.center_square: the central
square at the model's input size, as every validation and test image is seen), a bounded number of files
ahead of the model, which classifies them in batches of --batch_size in the calling thread: decoding overlaps
inference, and a full-size photo costs one scaled-down JPEG decode. --backend=keras runs model.keras,
--backend=litert the run's LiteRT export (trainer/serving/predictors.py); the outputs are the same.

A model with several heads answers consistently with the tree (trainer/numbers/rollup.py: each label's score
is the product of its path's per-rank probabilities), so its top label never lies outside its predicted order;
a model of one head gives that head's softmax.

--rollup_precision=P adds, per image, the deepest rank whose calibrated consistent confidence reaches that
rank's threshold: the smallest confidence at which the validation images answered there were right at least P of
the time (<model_dir>/calibration.json, trainer/training/calibration_file.py: temperatures and validation
confidences, written by trainer.main at the end of a run, or by `trainer.evaluate --rollup_precision=P`), with
its name and probability, or none when no rank reaches its threshold.

Output: a table on stdout, or --output=FILE.csv (one row per image and top-k position: file, rank (the
position, from 1), the label rank's name column titled by the rank (e.g. family or species), phylum,
probability; with --rollup_precision also rollup_rank, rollup_name, rollup_probability, empty when none) or
FILE.json (a list of {file, predictions: [{rank, <label rank>, phylum, probability}], rollup: {rank, name,
probability} or null (with --rollup_precision)}).
Exit status: 0 when at least one image was predicted; 1 when none could be (nothing matched, or every file
failed); 2 when the command cannot start (no inputs, an unknown --output suffix, no finished run in --model_dir).
"""

import collections
import concurrent.futures
import csv
import dataclasses
import glob
import itertools
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np
import tqdm

from tfds_rarespecies import imaging
from trainer import cli
from trainer.cli import field
from trainer.numbers import calibration, rollup
from trainer.serving import litert, predictors, trained_model
from trainer.training import calibration_file
from trainer.training.run_dir import RunFiles

OUTPUT_SUFFIXES = ("", ".csv", ".json")
ROLLUP_COLUMNS = ("rollup_rank", "rollup_name", "rollup_probability")
EXIT_NOTHING_PREDICTED = 1
DEFAULT_BATCH_SIZE = 16
EXIT_USAGE = cli.EXIT_USAGE
PROGRAM = "trainer.predict"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The top-k names at the label rank of one file, surest first, and its roll-up when asked for (None:
    no rank reached its threshold, or none asked)."""

    file: str
    rank: str
    names: tuple[str, ...]
    phyla: tuple[str, ...]
    probabilities: tuple[float, ...]
    rolled: rollup.RolledUp | None = None


def csv_columns(rank: str, with_rollup: bool = False) -> tuple[str, ...]:
    """The CSV header of predictions at the label rank `rank`."""
    return ("file", "rank", rank, "phylum", "probability", *(ROLLUP_COLUMNS if with_rollup else ()))


@dataclasses.dataclass(frozen=True)
class Answering:
    """How a model's softmax rows become answers: the tree its heads are made consistent on, each name's
    phylum, and with a roll-up the run's calibration and the per-rank thresholds of the asked precision."""

    tree: rollup.Tree
    phylum_of: dict[str, str]
    calibrated: calibration.RollupCalibration | None = None
    thresholds: np.ndarray | None = None

    @classmethod
    def of(cls, predictor: predictors.Predictor, calibrated: calibration.RollupCalibration | None = None,
           precision: float = 0.0) -> "Answering":
        answering = cls(rollup.label_tree(predictor.label_names, predictor.taxonomy),
                        predictor.taxonomy.phylum_of(predictor.label_rank))
        return answering if calibrated is None else answering.rolling_up(calibrated, precision)

    def rolling_up(self, calibrated: calibration.RollupCalibration, precision: float) -> "Answering":
        """The same answers with the roll-up of that calibration at that precision."""
        return dataclasses.replace(self, calibrated=calibrated, thresholds=calibrated.thresholds(precision))


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
        return [path] if path.suffix.lower() in imaging.IMAGE_SUFFIXES else []
    return sorted(file for file in path.rglob("*") if file.is_file() and file.suffix.lower() in imaging.IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in file.relative_to(path).parts))


def decode_view(path: pathlib.Path, size: int) -> np.ndarray:
    """One file decoded by the builder's decoder into the model's uint8 view; raises OSError or
    imaging.DecodeError."""
    return decode_bytes_view(path.read_bytes(), size)


def decode_bytes_view(data: bytes, size: int) -> np.ndarray:
    """Encoded bytes into the model's uint8 view, as predict sees a file. JPEGs decode at a reduced scale that
    keeps at least `size` (huge photos stay cheap); raises imaging.DecodeError."""
    image = imaging.decode_rgb(data, min_short_side=size)
    return trained_model.center_square(np.asarray(image)[None], size)[0].numpy()


def predict_files(predictor: predictors.Predictor, files: Sequence[pathlib.Path],
                  top_k: int = trained_model.DEFAULT_TOP_K, batch_size: int = DEFAULT_BATCH_SIZE, threads: int = 0,
                  progress: bool = False, answering: Answering | None = None
                  ) -> tuple[list[Prediction], list[Skipped]]:
    """Classifies every file (answering: Answering.of(predictor) unless given, e.g. with a roll-up); each
    file that fails is reported on stderr at once, in one line."""
    answering = answering or Answering.of(predictor)
    predictions, skipped, batch = [], [], []
    workers = threads or litert.default_threads()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool, tqdm.tqdm(
            total=len(files), desc="Predicting", unit=" images", disable=not progress, file=sys.stderr) as bar:
        for path, view in _ahead(pool, lambda path: _try_view(path, predictor.input_size), files,
                                 batch_size + 2 * workers):
            if isinstance(view, Skipped):
                skipped.append(view)
                tqdm.tqdm.write(view.line(), file=sys.stderr)
            else:
                batch.append((path, view))
            if len(batch) == batch_size:
                predictions += _classify(predictor, answering, batch, top_k)
                batch = []
            bar.update()
        predictions += _classify(predictor, answering, batch, top_k)
    return predictions, skipped


def _ahead(pool: concurrent.futures.Executor, function, items: Sequence, ahead: int):
    """(item, function(item)) in order, at most `ahead` computed before they are consumed (Executor.map would
    submit every file at once and keep every decoded view of a slow consumer in memory)."""
    remaining = iter(items)
    pending = collections.deque((item, pool.submit(function, item)) for item in itertools.islice(remaining, ahead))
    while pending:
        item, future = pending.popleft()
        pending.extend((following, pool.submit(function, following))
                       for following in itertools.islice(remaining, 1))
        yield item, future.result()


def _try_view(path: pathlib.Path, size: int) -> np.ndarray | Skipped:
    try:
        return decode_view(path, size)
    except imaging.DecodeError as error:
        return Skipped(str(path), error.reason, str(error))
    except OSError as error:
        return Skipped(str(path), "unreadable", f"{type(error).__name__}: {error.strerror or error}")


def _classify(predictor: predictors.Predictor, answering: Answering,
              batch: list[tuple[pathlib.Path, np.ndarray]], top_k: int) -> list[Prediction]:
    """The top-k names of each decoded view by the label rank's consistent probabilities (ties: the lower id
    first, as tf.math.top_k), and the roll-up of its calibrated consistent path when asked for."""
    if not batch:
        return []
    heads = predictor.probabilities(np.stack([view for _, view in batch]))
    probabilities = answering.tree.probabilities(heads)[-1]
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :max(1, min(top_k, probabilities.shape[1]))]
    names = predictor.names
    rolled = _rolled_up(answering, heads, len(batch))
    return [Prediction(str(path), predictor.label_rank, tuple(names[i] for i in row),
                       tuple(answering.phylum_of[names[i]] for i in row), tuple(float(value) for value in scores[row]),
                       answer)
            for (path, _), row, scores, answer in zip(batch, best, probabilities, rolled)]


def _rolled_up(answering: Answering, heads: dict[str, np.ndarray], count: int) -> list[rollup.RolledUp | None]:
    """Each image's roll-up under the run's calibration (all None without one)."""
    if answering.calibrated is None:
        return [None] * count
    tree = answering.tree
    ids, confidences = tree.predictions(answering.calibrated.scaled(heads))
    return [rollup.roll_up(tree.ranks, [tree.rank_names[r][i] for r, i in enumerate(path)], row,
                           answering.thresholds)
            for path, row in zip(ids, confidences)]


def ranked(prediction: Prediction) -> list[dict]:
    """The rows of one prediction: rank (the position, from 1), the name under its rank, phylum, probability."""
    return [{"rank": position, prediction.rank: name, "phylum": phylum, "probability": probability}
            for position, (name, phylum, probability) in enumerate(
                zip(prediction.names, prediction.phyla, prediction.probabilities), 1)]


def rolled_up(prediction: Prediction) -> dict | None:
    """The roll-up of one prediction as written: {rank, name, probability}, or None."""
    return None if prediction.rolled is None else dataclasses.asdict(prediction.rolled)


def write_predictions(predictions: Sequence[Prediction], output: str, with_rollup: bool = False) -> None:
    """To stdout as a table (output empty), or to a .csv / .json file; with_rollup adds each image's roll-up."""
    if not output:
        print(format_table(predictions, with_rollup))
        return
    path = pathlib.Path(output).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, csv_columns(predictions[0].rank, with_rollup))
            writer.writeheader()
            writer.writerows({"file": p.file, **row, **(_rollup_cells(p) if with_rollup else {})}
                             for p in predictions for row in ranked(p))
    else:
        path.write_text(json.dumps([{"file": p.file, "predictions": ranked(p),
                                     **({"rollup": rolled_up(p)} if with_rollup else {})} for p in predictions],
                                   indent=2) + "\n")


def _rollup_cells(prediction: Prediction) -> dict:
    answer = rolled_up(prediction) or {"rank": "", "name": "", "probability": ""}
    return {f"rollup_{key}": value for key, value in answer.items()}


def format_table(predictions: Sequence[Prediction], with_rollup: bool = False) -> str:
    lines = []
    for prediction in predictions:
        lines.append(prediction.file)
        lines += [f"  {row['rank']}. {row[prediction.rank]:<24} {row['phylum']:<14} {row['probability']:6.1%}"
                  for row in ranked(prediction)]
        if with_rollup:
            answer = prediction.rolled
            lines.append("  roll-up: " + ("none (no rank reaches its threshold)" if answer is None else
                                          f"{answer.rank} {answer.name} {answer.probability:.1%}"))
    return "\n".join(lines)


class PredictError(cli.UserError):
    """Predict cannot start (status 2) or predicted nothing (status 1); the message is the one line shown."""

    def __init__(self, message: str, status: int = EXIT_USAGE):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class PredictSettings:
    """The predict command's flags (the files, folders and globs follow them)."""

    model_dir: str = field("", "Run directory holding model.keras and labels.json.", group="run", path=True)
    top_k: int = field(trained_model.DEFAULT_TOP_K, "Names at the model's label rank listed per image.", lower=1,
                       group="answers")
    output: str = field("", "A .csv or .json file to write; empty = a table on stdout.", group="outputs", path=True)
    backend: str = predictors.backend_field()
    quantize: str = predictors.quantize_field()
    threads: int = predictors.threads_field()
    batch_size: int = field(DEFAULT_BATCH_SIZE, "Images per model call.", lower=1, group="backend")
    rollup_precision: float = field(0.0, "Roll-up: also answer each image at the deepest rank whose calibrated "
                                    "confidence reaches the threshold giving this precision on validation (the "
                                    "run's calibration.json), e.g. 0.95; 0 = off.", lower=0.0, upper=1.0,
                                    group="answers")


def run(settings: PredictSettings, inputs: Sequence[str]) -> None:
    """The whole command; raises PredictError with the exit status of the module docstring."""
    if not settings.model_dir:
        raise PredictError("--model_dir is empty: name the run to predict with, e.g. --model_dir=runs/incv3")
    if not inputs:
        raise PredictError("no inputs: name image files, folders or globs after the flags")
    output = settings.output
    if pathlib.Path(output).suffix.lower() not in OUTPUT_SUFFIXES:
        raise PredictError(f"--output={output}: unknown suffix; use a .csv or .json file, or leave it out for a "
                           "table")
    if output and RunFiles(pathlib.Path(settings.model_dir).expanduser()).owns(pathlib.Path(output).expanduser()):
        raise PredictError(f"--output={output} is a file of the run in --model_dir={settings.model_dir}, which "
                           "predict never overwrites: write the predictions elsewhere")
    files, unmatched, expanded = collect_files(inputs)
    for miss in unmatched:
        print(miss.line(), file=sys.stderr)
    if not files:
        raise PredictError("no image files found in the inputs", EXIT_NOTHING_PREDICTED)
    predictor = predictors.open_predictor(settings.model_dir, settings.backend, settings.quantize, settings.threads)
    answering = Answering.of(predictor)
    if settings.rollup_precision:
        calibrated = calibration_file.read_matching(settings.model_dir, answering.tree, predictor.label_names)
        if calibrated.shortfall(settings.rollup_precision):
            print(f"{PROGRAM}: note: {calibrated.shortfall(settings.rollup_precision)}", file=sys.stderr)
        answering = answering.rolling_up(calibrated, settings.rollup_precision)
    predictions, skipped = predict_files(predictor, files, settings.top_k, settings.batch_size, settings.threads,
                                         progress=expanded, answering=answering)
    if not predictions:
        raise PredictError(f"none of the {len(files)} files could be predicted (see the lines above)",
                           EXIT_NOTHING_PREDICTED)
    write_predictions(predictions, output, with_rollup=bool(settings.rollup_precision))
    if output:
        print(f"{len(predictions)} images predicted, {len(skipped) + len(unmatched)} skipped: {output}",
              file=sys.stderr)
