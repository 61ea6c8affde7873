"""Two worker processes sharing one study on a real PostgreSQL server (optuna's RDBStorage and heartbeat)."""

import glob
import os
import shutil
import subprocess
import sys
import uuid
import warnings

import optuna
import pytest

from tests.tuning.common import REPO, assert_multi_worker_study, tune_args, tune_cli

POSTGRES_PORT = 55432


def _stop_postgres(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        data_dir = connection.execute(sqlalchemy.text("SHOW data_directory")).scalar()
    engine.dispose()
    [bindir] = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:]
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_postgres, f"{bindir}/pg_ctl", "-D", data_dir, "stop", "-m", "fast"], capture_output=True)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """RARE_SPECIES_POSTGRES_URL (set by .ci/run), else a server already on 127.0.0.1:55432, else one started
    with .ci/postgres for this session (and stopped after). Skips loudly when none can start."""
    url = os.environ.get("RARE_SPECIES_POSTGRES_URL")
    if url:
        yield url
        return
    default = f"postgresql+psycopg2://postgres@127.0.0.1:{POSTGRES_PORT}/optuna_test"
    if shutil.which("pg_isready") and subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p",
                                                      str(POSTGRES_PORT)]).returncode == 0:
        yield default
        return
    started = subprocess.run(["bash", ".ci/postgres", str(POSTGRES_PORT)], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    if started.returncode:
        message = (f"!!! PostgreSQL could not be started by .ci/postgres ({started.stderr.strip()[-300:]}): the "
                   "PostgreSQL tuner tests are SKIPPED; install it (apt-get install postgresql) or set "
                   "RARE_SPECIES_POSTGRES_URL !!!")
        print(message, file=sys.stderr)
        warnings.warn(message)
        pytest.skip(message)
    url = started.stdout.strip().splitlines()[-1]
    yield url
    _stop_postgres(url)


@pytest.mark.slow
@pytest.mark.xdist_group("tune_postgres")
def test_two_workers_share_a_study_on_postgresql(postgres_url, tiny_data_dir, tmp_path):
    name = f"tune_test_{uuid.uuid4().hex[:12]}"
    plain_url = postgres_url.replace("postgresql+psycopg2://", "postgresql://")  # as the README writes it
    done = tune_cli(*tune_args(tiny_data_dir, tmp_path, name, f"--storage={plain_url}", "--workers=2",
                               "--n_trials=3"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    try:
        study = optuna.load_study(study_name=name, storage=postgres_url)
        assert_multi_worker_study(study, 3, both_workers=False)  # 3 trials: one worker may start late
        assert (tmp_path / name / "best.flags").exists() and not (tmp_path / name / "journal.log").exists()
        assert "dashboard: optuna-dashboard postgresql" in done.stdout
        finished = [trial.number for trial in study.trials if trial.state.is_finished()
                    and not trial.user_attrs.get("surplus")]
        shown = [line for line in done.stdout.splitlines() if line.startswith("tune: trial ")]
        assert sorted(int(line.split()[2]) for line in shown) == sorted(finished)  # one line each, from the database
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)
