"""Shared fixtures: the real metadata copied into the repo, and tiny built datasets from generated images."""

import fcntl
import json
import os
import pathlib
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import tfds_rarespecies  # noqa: E402
from tfds_rarespecies import replica  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data"
TINY_FAMILIES = ("acroporidae", "unionidae", "apidae", "cheloniidae")
TINY_PER_FAMILY = 20


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now, for local multi-worker clusters."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> pathlib.Path:
    """A directory every xdist worker of this session sees (this session's own temp dir without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once(shared_dir: pathlib.Path, name: str, make) -> dict:
    """make(shared_dir / name) -> a JSON-able result, computed by the first xdist worker that asks and read by the
    others (`--dist loadgroup` keeps a group on one worker only with pytest < 9.2: pytest-dev/pytest-xdist#1386)."""
    result = shared_dir / f"{name}.json"
    with open(shared_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            result.write_text(json.dumps(make(shared_dir / name)))
    return json.loads(result.read_text())


@pytest.fixture(scope="session")
def real_metadata() -> pd.DataFrame:
    """The course metadata.csv, byte for byte (11,983 rows)."""
    return pd.read_csv(DATA / "rare_species_metadata.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="session")
def real_taxonomy() -> pd.DataFrame:
    """Imageomics' taxonomy annotation of the same files."""
    return pd.read_csv(DATA / "rare_species_taxonomy.csv", dtype=str, keep_default_na=False)


def tiny_rows(metadata: pd.DataFrame, families=TINY_FAMILIES, per_family=TINY_PER_FAMILY) -> pd.DataFrame:
    frame = metadata[metadata["family"].isin(families)].sort_values(["family", "rare_species_id"])
    return frame.groupby("family", group_keys=False).head(per_family).reset_index(drop=True)


def build(manual_dir, data_dir, config="small_128", **overrides) -> tfds.core.DatasetBuilder:
    """Builds rare_species from manual_dir into data_dir; overrides make a custom config named config_custom."""
    if overrides:
        base = next(c for c in tfds_rarespecies.Builder.BUILDER_CONFIGS if c.name == config)
        fields = {name: getattr(base, name) for name in ("short_side", "jpeg_quality", "split_scheme")}
        config = tfds_rarespecies.RareSpeciesConfig(name=f"{config}_custom", **{**fields, **overrides})
    builder = tfds_rarespecies.Builder(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory, real_metadata, real_taxonomy) -> str:
    """A data_dir holding rare_species/small_128 built from 4 families x 20 learnable generated images
    (130..200 px, course layout with taxonomy): 16/2/2 per family in train/validation/test."""
    root = tmp_path_factory.mktemp("tiny")
    rows = tiny_rows(real_metadata)
    replica.write_replica(root / "download", rows, "course", real_taxonomy, min_side=130, max_side=200)
    build(root / "download", root / "data")
    return str(root / "data")


def pytest_collection_modifyitems(config, items):
    """Drops tf.test.TestCase.test_session, a session helper that TFDS's DatasetBuilderTestCase inherits and
    pytest would otherwise collect and report as a skipped test."""
    helpers = [item for item in items if item.name == "test_session"]
    if helpers:
        config.hook.pytest_deselected(items=helpers)
        items[:] = [item for item in items if item.name != "test_session"]


def user_env() -> dict:
    """The environment a user's shell gives a command: without the test session's TF_CPP_MIN_LOG_LEVEL, which
    asks the commands to show TensorFlow's start-up lines."""
    return {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
