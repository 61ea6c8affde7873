"""A collection beyond the 202 families (labels="from_metadata"): build, train, evaluate, predict and serve with
its own names and tree, never the shipped lists."""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from tests.builder.test_from_metadata import foreign_download
from tests.conftest import build
from tests.training.test_end_to_end import tiny_config
from trainer.evaluation import evaluate
from trainer.serving import export, predict, predictors, savedmodel, trained_model
from trainer.training import train

FAMILIES = ["labacroporidae", "labapidae", "labcheloniidae", "labunionidae"]
PHYLUM = {"labacroporidae": "placozoa", "labapidae": "arthropoda", "labcheloniidae": "chordata",
          "labunionidae": "mollusca"}


@pytest.fixture(scope="module", params=["with_taxonomy", "without_taxonomy"])
def foreign_run(request, tmp_path_factory, real_metadata, real_taxonomy):
    """A run with phylum and family heads on a foreign export built from its metadata: with the lower ranks
    (a full tree) or without them (phylum -> family)."""
    root = tmp_path_factory.mktemp(request.param)
    with_taxonomy = request.param == "with_taxonomy"
    download = foreign_download(root / "download", real_metadata, real_taxonomy, with_taxonomy, per_family=10)
    build(download, root / "data", labels="from_metadata")
    config = tiny_config(str(root / "data"), root / "run", dataset_config="small_128_custom",
                         heads=("phylum", "family"), aux_loss_weight=0.3, phase2_epochs=2, steps_per_epoch=4)
    return download, root / "run", train.run(config), with_taxonomy


def test_the_run_names_the_collection_families_and_keeps_its_tree(foreign_run):
    _, run, results, with_taxonomy = foreign_run
    names = json.loads((run / "labels.json").read_text())
    assert names == {"family": FAMILIES, "phylum": ["arthropoda", "chordata", "mollusca", "placozoa"]}
    assert set(results["test_f1_per_family"]) == set(FAMILIES)
    trained = trained_model.load_trained(run)
    assert trained.taxonomy.phylum_of("family")["labacroporidae"] == "placozoa"
    assert list(trained.taxonomy.ancestors("family").columns) == (
        ["phylum", "class", "order"] if with_taxonomy else ["phylum"])


def test_evaluate_judges_mistakes_in_the_collection_tree(foreign_run):
    _, run, results, with_taxonomy = foreign_run
    report = evaluate.evaluate(evaluate.EvaluationConfig(str(run), split="test", resamples=10,
                                                         rollup_precision=0.9))
    assert report.metrics["accuracy"] == pytest.approx(results["test"]["accuracy"], abs=1e-9)
    assert list(report.metrics["consistent"]) == (["phylum", "class", "order", "family"] if with_taxonomy
                                                  else ["phylum", "family"])
    per_class = pd.read_csv(run / "eval" / "test" / "per_class.csv")
    assert set(per_class["family"]) == set(FAMILIES)
    severity = report.metrics["consistent_mistake_severity"]
    assert np.isnan(severity) or 1 <= severity <= (4 if with_taxonomy else 2)
    floor = report.metrics["consistent_mistake_severity_floor"]
    assert np.isnan(floor) == np.isnan(severity) and (np.isnan(floor) or 1 <= floor <= severity)


def test_predict_answers_with_the_collection_names_and_phyla(foreign_run, tmp_path):
    download, run, _, _ = foreign_run
    output = tmp_path / "predictions.csv"
    photos = sorted(pathlib.Path(download).rglob("*.jpg"))[:6]
    predict.run(predict.PredictSettings(str(run), 2, str(output), rollup_precision=0.9), [str(p) for p in photos])
    table = pd.read_csv(output)
    assert len(table) == 12 and set(table["family"]) <= set(FAMILIES)  # top 2 of each photo
    assert (table["phylum"] == table["family"].map(PHYLUM)).all()
    answered = table[table["rank"] == 1].dropna(subset=["rollup_rank"])
    assert set(answered["rollup_rank"]) <= {"phylum", "class", "order", "family"}


def test_serving_and_litert_carry_the_collection_tree(foreign_run):
    _, run, _, with_taxonomy = foreign_run
    model = savedmodel.ServingModel(trained_model.load_trained(run), 2)
    answer = model.classify_images(np.full((2, 40, 50, 3), 128, np.uint8))
    families = [name.decode() for name in answer["names"].numpy().ravel()]
    phyla = [name.decode() for name in answer["phyla"].numpy().ravel()]
    assert set(families) <= set(FAMILIES) and phyla == [PHYLUM[name] for name in families]
    if not with_taxonomy:
        return  # one export suffices: the LiteRT metadata carries the same tree either way
    export.export(export.ExportSettings(model_dir=str(run), format="litert", quantize="float32", min_agreement=0.0))
    litert_model = predictors.open_predictor(str(run), "litert")
    assert litert_model.names == tuple(FAMILIES)
    assert litert_model.taxonomy.phylum_of("family") == PHYLUM
    assert litert_model.metadata["label_phylum"] == PHYLUM
