"""The audit on a replica with planted problems: how many images it flags and proposes, and how many of the
planted ones each list holds.

    .venv/bin/python -m benchmarks.audit_bench --work_dir=/tmp/rare_species_audit_bench \
        --weights=MOBILENETV2_NOTOP.weights.h5

MOBILENETV2_NOTOP.weights.h5: the ImageNet MobileNetV2 weights without top, by path (Keras downloads them to
~/.keras/models/ on `keras.applications.MobileNetV2(include_top=False)`; never committed).

A replica download (benchmarks.replica_data's rows: --families x --per_family real metadata rows, synthetic
pixels just above small_128's stored side) gets planted problems in distinct families: text pages, flat colour
fills, images whose pixels are another phylum's family pattern (mislabels) and exact copies of another image
of the family. It is built as small_128 and audited by `python -m trainer.audit`'s own path (flags parsed by
trainer.cli) with MobileNetV2 and the genuine ImageNet weights of --weights (never copied anywhere).
Prints one table: flagged and proposed images, planted recall in each list per kind, where the planted rank in
review.csv, the proposals' precision (a proposal is right when it is a planted image, either copy of a planted
pair counting) and the label-issue head's accuracy and macro-F1. A rerun reuses the replica and the feature
cache: only the scoring runs again.
Targets (issue 18): proposals <= 3% of the images, >= 90% of the planted among the flagged, precision >= 0.8.
"""

import datetime
import json
import pathlib
import shutil
import time

import numpy as np
from absl import app, flags
from PIL import Image

from benchmarks import replica_data, table
from tests.audit.pictures import text_page
from tfds_rarespecies import replica

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/rare_species_audit_bench", "Replica, dataset and audit output.")
_WEIGHTS = flags.DEFINE_string("weights", None, "MobileNetV2 ImageNet weights without top (.weights.h5).",
                               required=True)
_FAMILIES = flags.DEFINE_integer("families", 202, "Families in the replica.")
_PER_FAMILY = flags.DEFINE_integer("per_family", 8, "Images per family.")
_PLANTED = flags.DEFINE_list("planted", ["text=10", "flat=10", "other_phylum=16", "copy=8"],
                             "How many of each problem to plant (one per family at most).")
_SHARE = flags.DEFINE_float("max_proposed_share", 0.03, "The audit's --max_proposed_share.")
_FLOOR = flags.DEFINE_float("min_head_macro_f1", 0.7, "The audit's --min_head_macro_f1 (0: label issues with "
                            "agreeing evidence are proposed whatever the head's quality).")
CONFIG = "small_128"
KINDS = ("text", "flat", "other_phylum", "copy")


def plant(download: pathlib.Path, counts: dict[str, int], seed: int = 0) -> dict[str, list[tuple[str, ...]]]:
    """Overwrites replica JPEGs with the planted problems; per kind the rare_species_ids it concerns (a copy:
    the original and the copy)."""
    rng = np.random.default_rng(seed)
    rows = replica_data.select(families=_FAMILIES.value, per_family=_PER_FAMILY.value)
    families = rng.permutation(sorted(rows["family"].unique()))
    phylum = dict(zip(rows["family"], rows["phylum"]))
    planted, start = {}, 0
    for kind in KINDS:
        chosen, start = families[start:start + counts[kind]], start + counts[kind]
        planted[kind] = []
        for family in chosen:
            members = rows[rows["family"] == family]
            first, second = (download / path for path in members["file_path"].iloc[:2])
            ids = tuple(members["rare_species_id"].iloc[:2])
            with Image.open(first) as image:
                size = image.size
            if kind == "text":
                text_page(*size, rng).save(first, quality=85)
            elif kind == "flat":
                Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3))).save(first, quality=85)
            elif kind == "other_phylum":
                other = rng.choice(sorted(f for f in phylum if phylum[f] != phylum[family]))
                replica.family_pattern(other, *size, rng).save(first, quality=85)
            else:
                shutil.copyfile(first, second)
            planted[kind].append(ids if kind == "copy" else ids[:1])
    return planted


def prepare(work_dir: pathlib.Path, counts: dict[str, int]) -> tuple[pathlib.Path, dict]:
    """The planted replica built as small_128 (reused when made the same way) and what was planted."""
    download = work_dir / "download"
    made = {"families": _FAMILIES.value, "per_family": _PER_FAMILY.value, "planted": counts}
    record = download / "planted.json"
    if not (record.exists() and json.loads(record.read_text())["made"] == made):
        stored = 128
        replica_data.write_download(download, families=_FAMILIES.value, per_family=_PER_FAMILY.value,
                                    min_side=stored + 2, max_side=round(stored * 2.35))
        planted = plant(download, counts)
        stamp = json.loads((download / replica_data.STAMP).read_text())
        (download / replica_data.STAMP).write_text(json.dumps({**stamp, "planted": counts}))
        record.write_text(json.dumps({"made": made, "planted": planted}))
    data_dir = replica_data.build(download, work_dir / "data", CONFIG)
    return data_dir, json.loads(record.read_text())["planted"]


def measure(scores, planted: dict) -> list[tuple[str, ...]]:
    """The table rows: per kind and overall, planted found among the flagged and among the proposed, and the
    median review rank of each problem's best-ranked image (review.csv's order, 1 = first)."""
    flagged = set(scores.index[scores["reasons"] != ""])
    proposed = set(scores.index[scores["excluded"]])
    ranks = scores["review_rank"].where(scores["review_rank"] > 0)
    rows = [("planted", "images", "flagged for review", "proposed", "median review rank")]
    for kind in (*KINDS, "all"):
        problems = [list(ids) for name in KINDS if kind in (name, "all") for ids in planted[name]]
        if not problems:
            continue
        rows.append((kind, str(len(problems)), f"{sum(bool(flagged & set(p)) for p in problems) / len(problems):.2f}",
                     f"{sum(bool(proposed & set(p)) for p in problems) / len(problems):.2f}",
                     f"{np.nanmedian([ranks[p].min() for p in problems]):.0f}"))
    right = {image for ids in planted.values() for pair in ids for image in pair}
    images = len(scores)
    rows.append(("images", str(images), f"{len(flagged)} ({len(flagged) / images:.1%})",
                 f"{len(proposed)} ({len(proposed) / images:.1%})", ""))
    rows.append(("proposals' precision", "", "", f"{len(proposed & right) / max(len(proposed), 1):.2f}", ""))
    return rows


def main(argv):
    del argv
    from trainer import cli  # noqa: PLC0415 (TensorFlow only once flags are parsed)
    from trainer.auditing import settings  # noqa: PLC0415
    from trainer.auditing.run import run  # noqa: PLC0415

    work_dir = pathlib.Path(_WORK_DIR.value)
    counts = {kind: 0 for kind in KINDS} | {k: int(v) for k, v in (item.split("=") for item in _PLANTED.value)}
    started = time.perf_counter()
    data_dir, planted = prepare(work_dir, counts)
    built = time.perf_counter()
    config = cli.parse([f"--data_dir={data_dir}", f"--config={CONFIG}", f"--out={work_dir / 'out'}",
                        "--backbone=mobilenetv2", f"--weights={_WEIGHTS.value}",
                        f"--max_proposed_share={_SHARE.value}", f"--min_head_macro_f1={_FLOOR.value}"],
                       settings.AuditConfig, program="trainer.audit")
    scores = run(config).set_index("rare_species_id")
    done = time.perf_counter()
    summary = json.loads((work_dir / "out" / "summary.json").read_text())
    head = summary["head"]
    print(f"\n{datetime.date.today()}: {_FAMILIES.value} families x {_PER_FAMILY.value} images, {CONFIG}, "
          f"MobileNetV2 ImageNet; replica + build {built - started:.0f} s, audit {done - built:.0f} s; head "
          f"accuracy {head['accuracy']:.2f}, macro-F1 {head['macro_f1']:.2f} (floor {_FLOOR.value}: label issues "
          f"{'propose' if head['label_issues_propose'] else 'review only'}); cap {summary['cap']}\n")
    print(table.markdown(measure(scores, planted)))


if __name__ == "__main__":
    app.run(main)
