"""MLflow stage runs: provenance tags, params, per-epoch metrics, ONNX models, parent trees, ledger logging."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from birdclef.track import NullRun, flatten, log_on_commit_run, params_digest, parent_run, stage_run
from birdclef.track.provenance import data_hash, declared_outputs, dirty_files, project_root

from track_fixtures import free_port, head, sh, tiny_project


def test_flatten_dots_nested_keys_and_json_encodes_lists():
    flat = flatten({"train": {"loop": {"epochs": 3, "ema": None}, "mels": ["a", "b"], "amp": True}, "seed": 0})
    assert flat == {
        "train.loop.epochs": "3",
        "train.loop.ema": "null",
        "train.mels": '["a", "b"]',
        "train.amp": "true",
        "seed": "0",
    }


def test_params_digest_ignores_key_order_but_not_values():
    assert params_digest({"a": 1, "b": {"c": 2}}) == params_digest({"b": {"c": 2}, "a": 1})
    assert params_digest({"a": 1}) != params_digest({"a": 2})


def _git_repo(root: Path) -> Path:
    root.mkdir()
    sh(["git", "init", "-q"], root)
    dvc_yaml = {
        "stages": {
            "train": {
                "foreach": [0, 1],
                "do": {"cmd": "x", "outs": ["build/train/it${item}"],
                       "metrics": [{"metrics/train/it${item}.json": {"cache": False}}]},
            }
        }
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    (root / "metrics" / "train").mkdir(parents=True)
    (root / "metrics" / "train" / "it0.json").write_text("{}")
    (root / "params.yaml").write_text("a: 1\n")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "init"], root)
    return root


def test_dirty_files_ignore_pipeline_outputs_but_not_params(tmp_path):
    root = _git_repo(tmp_path / "repo")
    assert "metrics/train/it*.json" in declared_outputs(root)
    (root / "metrics" / "train" / "it0.json").write_text('{"auc": 1}')
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert dirty_files(root) == []
    (root / "params.yaml").write_text("a: 2\n")
    assert dirty_files(root) == ["params.yaml"]


def test_project_root_sees_through_dvc_temp_workspaces(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    temp = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpabc"
    temp.mkdir(parents=True)
    assert project_root(temp) == tmp_path / "proj"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert project_root(temp) == tmp_path.resolve()


def test_stage_run_disabled_records_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never.db'}")
    with stage_run("train", {"a": 1}, {"enabled": False}) as run:
        assert isinstance(run, NullRun) and run.run_id is None
        run.log_metrics({"x": 1.0})
        run.log_onnx(tmp_path / "missing.onnx")
    assert not (tmp_path / "never.db").exists()


def _tiny_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


@pytest.mark.integration
def test_stage_runs_nest_under_parent_with_provenance_steps_and_onnx(tmp_path, monkeypatch, mlflow_server):
    from mlflow.tracking import MlflowClient

    root = tiny_project(tmp_path / "proj")
    store = mlflow_server
    monkeypatch.chdir(root)
    for var in ("DVC_ROOT", "DVC_STAGE", "MLFLOW_PARENT_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("DVC_EXP_NAME", "brave-wren")
    tracking = {"enabled": True, "experiment": "unit"}
    params = {"train": {"loop": {"epochs": 2}, "mels": ["mel128"]}}
    _tiny_onnx(tmp_path / "ens.onnx")
    (tmp_path / "submission.csv").write_text("row_id,a\nx_5,0.5\n")

    with parent_run("dvc repro", tracking, {"dvc_command": "dvc repro"}) as parent:
        monkeypatch.setenv("MLFLOW_PARENT_RUN_ID", parent.run_id)
        monkeypatch.setenv("DVC_STAGE", "export")
        with stage_run("ignored-name", params, tracking) as run:
            for epoch, loss in enumerate([0.9, 0.5], start=1):
                run.log_metrics({"train_loss": loss, "bad": float("nan"), "flag": True}, step=epoch)
            run.log_onnx(tmp_path / "ens.onnx", name="ensemble")
            run.log_artifact(tmp_path / "submission.csv")
        child_id = run.run_id
        monkeypatch.setenv("DVC_STAGE", "infer")
        with pytest.raises(RuntimeError), stage_run("infer", {}, tracking) as failing:
            raise RuntimeError("boom")

    client = MlflowClient(tracking_uri=store)
    child = client.get_run(child_id)
    tags = child.data.tags
    assert tags["mlflow.parentRunId"] == parent.run_id
    assert tags["git_commit"] == head(root)
    assert tags["git_dirty"] == "false"
    assert tags["dvc_stage"] == "export" and child.info.run_name == "export"
    assert tags["dvc_exp_name"] == "brave-wren"
    assert tags["params_digest"] == params_digest(params)
    assert tags["data_md5"] == data_hash(root) and tags["data_md5"].endswith(".dir")
    assert child.data.params == {"train.loop.epochs": "2", "train.mels": '["mel128"]'}
    history = client.get_metric_history(child_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.5)]
    assert "bad" not in child.data.metrics and "flag" not in child.data.metrics
    import mlflow.onnx

    model = mlflow.onnx.load_model(f"runs:/{child_id}/ensemble")
    assert model.graph.node[0].op_type == "Sigmoid"
    assert "submission.csv" in [a.path for a in client.list_artifacts(child_id)]
    assert client.get_run(failing.run_id).info.status == "FAILED"
    assert client.get_run(parent.run_id).data.tags["dvc_stage"] == "pipeline"

    # The ledger attaches a leaderboard score to the newest infer run of a commit; unknown commits find nothing.
    assert log_on_commit_run(head(root), {"lb_public": 0.81}, {"lb_note": "first"}) == failing.run_id
    assert client.get_run(failing.run_id).data.metrics["lb_public"] == 0.81
    assert log_on_commit_run("0" * 40, {"lb_public": 0.5}) is None


def _wait_http(url: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {seconds} s")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a sqlite store in a temporary folder; stopped afterwards."""
    import os
    import signal

    from track_fixtures import VENV_BIN, env

    tmp_path = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path, env=env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)  # uvicorn waits for the client's keep-alive connections; no need to
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


@pytest.mark.integration
def test_birdclef_repro_makes_one_parent_and_a_child_per_stage_on_a_server(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    root = tiny_project(tmp_path / "proj", tracking=True, experiment="tiny")
    sh(["python", "-m", "birdclef.cli", "repro"], root, {"MLFLOW_TRACKING_URI": mlflow_server})

    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("dvc_stage") == "pipeline"]
    children = [r for r in runs if r is not parent]
    assert len(runs) == 3 and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    commit = head(root)
    assert sorted(r.data.tags["dvc_stage"] for r in children) == ["prepare", "train"]
    assert all(r.data.tags["git_commit"] == commit and r.data.tags["git_dirty"] == "false" for r in runs)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert parent.data.tags["dvc_command"].endswith("repro")
    [train] = [r for r in children if r.data.tags["dvc_stage"] == "train"]
    assert train.data.params == {"train.epochs": "3", "train.lr": "0.5"}
    assert sorted(m.step for m in client.get_metric_history(train.info.run_id, "val_auc")) == [0, 1, 2, 3]


@pytest.mark.slow
@pytest.mark.integration
def test_birdclef_repro_exp_tags_the_experiment_and_reruns_only_what_changed(tmp_path):
    from mlflow.tracking import MlflowClient

    root = tiny_project(tmp_path / "proj", tracking=True, experiment="tiny")
    sh(["dvc", "repro", "-q"], root, {"BIRDCLEF_TRACKING": "0"})
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "results"], root)
    sh(["python", "-m", "birdclef.cli", "repro", "--exp", "-S", "train.epochs=4", "-n", "four"], root)
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("dvc_stage") == "pipeline"]
    [train] = [r for r in runs if r is not parent]  # prepare is unchanged: no run
    assert train.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert train.data.tags["dvc_stage"] == "train" and train.data.tags["dvc_exp_name"] == "four"
    assert train.data.tags["git_dirty"] == "true"  # params.yaml carries the -S override
    assert parent.data.tags["dvc_exp_name"] == "four" and train.data.params["train.epochs"] == "4"


@pytest.mark.slow
@pytest.mark.integration
def test_birdclef_repro_passes_dvc_arguments_and_its_exit_code(tmp_path, monkeypatch):
    root = tiny_project(tmp_path / "proj")  # tracking off: no parent run, DVC still wrapped
    monkeypatch.chdir(root)
    dry = sh(["python", "-m", "birdclef.cli", "repro", "--dry", "prepare"], root)
    assert "python step.py prepare" in dry.stdout and not (root / "build" / "prep.txt").exists()
    (root / "step.py").write_text("raise SystemExit(3)\n")
    failed = sh(["python", "-m", "birdclef.cli", "repro"], root, check=False)
    assert failed.returncode != 0 and "failed to reproduce 'prepare'" in failed.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_temp_experiment_runs_land_in_the_project_store(tmp_path):
    """`dvc exp run --temp` runs stages in .dvc/tmp/exps/...; with no MLFLOW_TRACKING_URI the runs still go to
    <project>/mlflow.db, tagged with the experiment name."""
    from mlflow.tracking import MlflowClient

    root = tiny_project(tmp_path / "proj", tracking=True, experiment="temp")
    sh(["dvc", "exp", "run", "--temp", "-n", "tempexp", "-S", "train.epochs=2"], root)
    assert (root / "mlflow.db").exists() and not list((root / ".dvc" / "tmp").rglob("mlflow.db"))
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("temp").experiment_id])
    assert sorted(r.data.tags["dvc_stage"] for r in runs) == ["prepare", "train"]
    assert {r.data.tags["dvc_exp_name"] for r in runs} == {"tempexp"}
    assert {r.data.tags["git_commit"] for r in runs} == {head(root)}


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


@pytest.mark.integration  # a fresh sqlite store: ~10 s of mlflow import and migrations
def test_a_run_left_running_by_a_killed_stage_is_marked_killed_by_the_next_run(tmp_path, monkeypatch):
    import socket

    from mlflow.tracking import MlflowClient

    from birdclef.track.runs import OWNER_TAG, owner_token

    monkeypatch.chdir(tmp_path)
    for var in ("DVC_STAGE", "MLFLOW_PARENT_RUN_ID", "DVC_ROOT"):
        monkeypatch.delenv(var, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("unit")
    host = socket.gethostname()
    owners = {
        "orphan": f"{host}:{_dead_pid()}:123",  # SIGKILLed: its pid is gone
        "reused": f"{host}:{os.getpid()}:1",  # its pid now names another process (this one, started later)
        "alive": owner_token(),  # a run of the same stage beside this one
        "remote": "another-host:1:1",  # cannot be checked from here
    }
    ids = {}
    for name, owner in owners.items():
        ids[name] = client.create_run(experiment, tags={"dvc_stage": "train@0", OWNER_TAG: owner}).info.run_id
    other = client.create_run(experiment, tags={"dvc_stage": "infer", OWNER_TAG: owners["orphan"]}).info.run_id

    with stage_run("train@0", {"train": {"lr": 0.1}}, {"enabled": True, "experiment": "unit"}) as run:
        pass
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"orphan": "KILLED", "reused": "KILLED", "alive": "RUNNING", "remote": "RUNNING"}
    assert client.get_run(other).info.status == "RUNNING"  # another stage's run: closed by that stage's next run
    new = client.get_run(run.run_id)
    assert new.info.status == "FINISHED" and new.data.tags[OWNER_TAG] == owner_token()
    assert "its process died" in client.get_run(ids["orphan"]).data.tags["birdclef_closed"]


def test_masked_uri_hides_passwords_and_tokens_only():
    from birdclef.track.runs import masked_uri

    assert masked_uri("https://alice:s3cret@mlflow.example:5000/x?token=t0k&run=1") == (
        "https://alice:***@mlflow.example:5000/x?token=***&run=1"
    )
    assert masked_uri("postgresql://u:p%40ss@db/mlflow") == "postgresql://u:***@db/mlflow"
    assert masked_uri("http://ghp_abc123@host:5000") == "http://***@host:5000"  # a bare token as the user
    for plain in ("sqlite:////work/proj/mlflow.db", "http://127.0.0.1:5000", "databricks"):
        assert masked_uri(plain) == plain


@pytest.mark.integration
def test_a_password_in_the_tracking_uri_is_never_printed(tmp_path, monkeypatch, capfd, mlflow_server):
    monkeypatch.chdir(tmp_path)
    for var in ("DVC_STAGE", "MLFLOW_PARENT_RUN_ID", "DVC_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "false")  # restored afterwards
    secret_uri = mlflow_server.replace("http://", "http://alice:s3cret@")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret_uri)
    with stage_run("export", {"export": {}}, {"enabled": True, "experiment": "secret"}) as run:
        run.log_metrics({"x": 1.0})
    out, err = capfd.readouterr()
    assert run.run_id and "s3cret" not in out + err


def test_a_sqlite_store_is_opened_under_its_lock_file(tmp_path, monkeypatch):
    """MLflow migrates a fresh sqlite store on first use with no lock of its own; _connect holds <db>.lock."""
    import fcntl

    import mlflow

    from birdclef.track import runs

    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    seen = []

    def probe(name):
        with open(f"{db}.lock", "a") as other:  # a second open file description: flock does not share with it
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                seen.append(("held", name))
            else:
                fcntl.flock(other, fcntl.LOCK_UN)
                seen.append(("free", name))

    monkeypatch.setattr(mlflow, "set_tracking_uri", lambda uri: None)
    monkeypatch.setattr(mlflow, "set_experiment", probe)
    runs._connect({"experiment": "locked"})
    assert seen == [("held", "locked")]
    with runs._store_lock("http://127.0.0.1:5000"):  # a server store needs no file lock and gets none
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db.lock"]


_OPEN_TOGETHER = """
import sys, time
from pathlib import Path
from birdclef.track import stage_run
import mlflow  # imported before the barrier so that every process reaches the store at once
go = Path(sys.argv[1])
(go.parent / f"ready-{sys.argv[2]}").touch()
while not go.exists():
    time.sleep(0.01)
with stage_run(sys.argv[2], {"i": sys.argv[2]}, {"experiment": "race"}) as run:
    run.log_metrics({"x": 1.0})
"""


@pytest.mark.integration  # three mlflow imports and one store migration: ~15 s
def test_stages_opening_a_fresh_sqlite_store_together_all_record(tmp_path):
    """Queued `dvc exp run`s start their first stages together on a fresh mlflow.db: before the store lock the
    second died in MLflow's migrations ("duplicate column name: step")."""
    from mlflow.tracking import MlflowClient

    db, go = tmp_path / "mlflow.db", tmp_path / "go"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "BIRDCLEF_TRACKING": "1"}
    env.pop("DVC_STAGE", None)
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_TOGETHER, str(go), f"stage{i}"], cwd=tmp_path, env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # every process past its imports, waiting on the barrier
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(errors)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["stage0", "stage1", "stage2"]
