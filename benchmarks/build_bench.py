"""Build throughput: the rare_species builder vs a naive one-file-at-a-time Pillow loop over the same download.

    .venv/bin/python -m benchmarks.build_bench --work_dir=/tmp/rare_species_build_bench --num_images=600

The download is a replica (benchmarks.replica_data: real metadata rows, synthetic JPEGs with sides drawn from
400..2400 px like the real EOL full-size files), written once into --work_dir and reused. Then, alternating
for --rounds rounds so both see the same machine load:

(a) the whole `Builder(config=inception_342).download_and_prepare()` into a fresh data_dir: catalog, decoding
    on every core (tfds_rarespecies.preparing), hashes, splits, build report and the TFRecords; its decoding
    phase is also timed on its own;
(a-beam) the same build under Beam (`--beam_pipeline_options`, by default the DirectRunner in multi_processing
    mode with 2 workers, as `tfds build --beam_pipeline_options=...` runs it); its start-up cost is measured on
    its own, as the same Beam build of a 12-image download;
(b) the naive loop: for each file, Pillow open -> convert("RGB") -> resize to short side 342 (Pillow's default
    filter) -> JPEG quality 90 -> write; no hashing, splitting or TFRecords.

Every file is read once before timing, so both start from the page cache, and TensorFlow is imported before
timing, as `tfds build` has it imported before it builds. Prints one table: wall seconds and images/s per
measurement (totals over the rounds), the ratio to (b), and the CPU time per image (this process and its
worker processes) with the cores it kept busy: on a shared machine the wall ratio depends on how many cores
the builder's workers got, the CPU ratio on the work per image only (Beam's worker processes are not children
that have exited when its build returns, so its CPU column is left empty). Targets: (a) >= 3x (b); (a-beam) >=
0.7x (a).
"""

import contextlib
import io
import logging
import os
import pathlib
import shutil
import time

import tensorflow  # noqa: F401  (loaded before timing, as `tfds build` has it loaded before building)
import tensorflow_datasets as tfds
from absl import app, flags
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

import tfds_rarespecies
from benchmarks import replica_data, table
from tfds_rarespecies import preparing, replica

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/rare_species_build_bench", "Replica download and builds.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 600, "Images in the replica (about 10 per family).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds of (a) and (b); the table sums them.")
_CONFIG = flags.DEFINE_string("config", "inception_342", "Builder config; the naive loop uses its short side.")
_BEAM = flags.DEFINE_string("beam_pipeline_options",
                            "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing",
                            "Options of the (a-beam) build, as `tfds build` takes them; empty: no Beam row.")


def naive_loop(files: list[pathlib.Path], out_dir: pathlib.Path, short_side: int, quality: int) -> None:
    """What a first script does: full-size decode, resize with Pillow's default filter, encode, write."""
    out_dir.mkdir(parents=True)
    for index, path in enumerate(files):
        image = Image.open(path).convert("RGB")
        width, height = image.size
        scale = short_side / min(width, height)
        if scale < 1:
            image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        (out_dir / f"{index}.jpg").write_bytes(out.getvalue())


class PhaseTimer:
    """Wall and CPU time of the builder's parallel decoding phase (preparing.prepare_all, a generator whose
    worker processes have exited, and so count as children, by the time it is exhausted)."""

    def __init__(self):
        self.seconds = self.cpu = 0.0
        self._original = preparing.prepare_all

    def __enter__(self):
        def timed(*args, **kwargs):
            start, cpu = time.perf_counter(), table.cpu_seconds()
            yield from self._original(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.cpu += table.cpu_seconds() - cpu

        preparing.prepare_all = timed
        return self

    def __exit__(self, *exc):
        preparing.prepare_all = self._original


class Stopwatch:
    """Wall and CPU seconds (this process and its children) of the with-block, added to totals[name]."""

    def __init__(self, totals: dict, name: str):
        self.totals, self.name = totals, name

    def __enter__(self):
        self.start, self.cpu = time.perf_counter(), table.cpu_seconds()

    def __exit__(self, *exc):
        wall, cpu = self.totals.setdefault(self.name, [0.0, 0.0])
        self.totals[self.name] = [wall + time.perf_counter() - self.start, cpu + table.cpu_seconds() - self.cpu]


def build(download: pathlib.Path, data_dir: pathlib.Path, config: str, beam: str = "") -> None:
    shutil.rmtree(data_dir, ignore_errors=True)
    builder = tfds_rarespecies.Builder(config=config, data_dir=str(data_dir))
    options = PipelineOptions([f"--{option}" for option in beam.split(",")]) if beam else None
    with contextlib.redirect_stdout(io.StringIO()):  # the build report: one table is all this prints
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(download),
                                                                                  beam_options=options))


def main(argv):
    del argv
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # its workers' INFO lines, hundreds per build
    work_dir = pathlib.Path(_WORK_DIR.value)
    download = replica_data.write_download(work_dir / "download", num_images=_NUM_IMAGES.value)
    files = sorted(download.rglob(f"*{replica.FILE_SUFFIX}"))
    for path in files:  # into the page cache, for both measurements alike
        path.read_bytes()
    config = tfds_rarespecies.Builder.builder_configs[_CONFIG.value]
    totals, phase = {}, PhaseTimer()
    if _BEAM.value:
        small = replica_data.write_download(work_dir / "download_12", families=2, per_family=6)
        with Stopwatch(totals, "beam_startup"):
            build(small, work_dir / "data_beam", config.name, _BEAM.value)
    for round_ in range(_ROUNDS.value):
        print(f"round {round_ + 1}/{_ROUNDS.value}: builder ...", flush=True)
        with phase, Stopwatch(totals, "builder"):
            build(download, work_dir / "data", config.name)
        if _BEAM.value:
            print(f"round {round_ + 1}/{_ROUNDS.value}: builder under Beam ...", flush=True)
            with Stopwatch(totals, "beam"):
                build(download, work_dir / "data_beam", config.name, _BEAM.value)
        print(f"round {round_ + 1}/{_ROUNDS.value}: naive loop ...", flush=True)
        shutil.rmtree(work_dir / "naive", ignore_errors=True)
        with Stopwatch(totals, "naive"):
            naive_loop(files, work_dir / "naive", config.short_side, config.jpeg_quality)
    totals["decoding"] = [phase.seconds, phase.cpu]
    print(f"\n{replica_data.describe(download)}; {_ROUNDS.value} rounds (totals), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(results(totals, len(files) * _ROUNDS.value, config))


def results(totals: dict, images: int, config) -> str:
    naive_rate = images / totals["naive"][0]

    def row(name, key):
        wall, cpu = totals[key]
        return (name, f"{wall:.1f}", f"{images / wall:.1f}", f"{images / wall / naive_rate:.2f}",
                f"{cpu / images * 1000:.1f}", f"{cpu / wall:.2f}")

    rows = [("measurement", "wall s", "images/s", "x (b)", "CPU ms/image", "cores busy"),
            row(f"(a) Builder({config.name}).download_and_prepare", "builder"),
            row("    its parallel decode/resize/encode/hash phase", "decoding")]
    if "beam" in totals:
        wall = totals["beam"][0]
        rows.append(("(a-beam) the same under Beam: " + _BEAM.value, f"{wall:.1f}", f"{images / wall:.1f}",
                     f"{images / wall / naive_rate:.2f}", "", ""))
    rows.append(row(f"(b) naive Pillow loop: full decode, resize to {config.short_side}, encode", "naive"))
    ratio = images / totals["builder"][0] / naive_rate
    work = totals["naive"][1] / totals["builder"][1]
    text = (table.markdown(rows) + f"\n\n(a)/(b) = {ratio:.2f} (target >= 3); CPU work per image (b)/(a) = "
            f"{work:.2f}")
    if "beam" in totals:
        text += (f"; (a-beam)/(a) = {totals['builder'][0] / totals['beam'][0]:.2f} (target >= 0.7); Beam start-up "
                 f"(the same Beam build of 12 images): {totals['beam_startup'][0]:.1f} s")
    return text


if __name__ == "__main__":
    app.run(main)
