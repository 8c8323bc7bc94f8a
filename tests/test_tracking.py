"""MLflow tracking: one pipeline run per invocation, one run per stage under it with params
and tags; parallel writers never collide; `python -m repurify.compare` reports two pipeline runs."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repurify import compare, tracking
from repurify.params import load_params
from repurify.tracking import PIPELINE_ENV, flatten, git_commit, pipeline_key, stage_run, tracking_uri

ROOT = Path(__file__).resolve().parent.parent
IMPORTED_MS = time.time() * 1000  # this test process started before this line ran
PROCESS_START_MS = tracking.process_start_ms


@pytest.fixture(autouse=True)
def _no_inherited_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PIPELINE_ENV, raising=False)
    # a stage's clock starts with its process; here many "stages" share this process, so each
    # starts when its run is created (run order = start order, as between real stage processes)
    monkeypatch.setattr(tracking, "process_start_ms", lambda: int(time.time() * 1000))


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri: str, kind: str) -> list:
    client = _client(uri)
    exp = client.get_experiment_by_name("repurify")
    return client.search_runs([exp.experiment_id], f"tags.`repurify.kind` = '{kind}'")


def test_default_uri_is_absolute_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking_uri() == "sqlite:////elsewhere/x.db"


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]",
                                                             "d": "None"}


def test_stage_run_logs_params_metrics_tags(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("REPURIFY_ENGINE", "snakemake")
    params = load_params(ROOT / "params.yaml", profile="smoke")
    with stage_run("unit", params) as run:
        run.log_metrics({"loss": 2.0}, step=0)
        run.log_metrics({"loss": 1.0}, step=1)
        run.log_metric("clean_accuracy", 0.5)
        run.log_child("pgd:whitebox", {"attack": "pgd", "threat_model": "whitebox"},
                      {"accuracy": 0.25})
    runs = _client(uri).search_runs(
        [_client(uri).get_experiment_by_name(params.mlflow.experiment).experiment_id])
    assert len(runs) == 3
    (pipeline,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (r,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id]
    (child,) = [c for c in runs if c.data.tags.get("mlflow.parentRunId") == r.info.run_id]
    assert child.data.tags["attack"] == "pgd" and child.data.tags["stage"] == "unit"
    assert [x.data.tags["repurify.kind"] for x in (pipeline, r, child)] == ["pipeline", "stage", "row"]
    assert pipeline.info.run_name == "pipeline:smoke:snakemake" and pipeline.info.status == "FINISHED"
    assert child.data.metrics == {"accuracy": 0.25}
    assert r.info.status == "FINISHED"
    resources = {k: r.data.metrics.pop(k) for k in ("stage.seconds", "stage.peak_rss_mib")}
    assert r.data.metrics == {"loss": 1.0, "clean_accuracy": 0.5}
    assert resources["stage.peak_rss_mib"] > 10 and resources["stage.seconds"] > 0
    assert r.data.params["profile"] == "smoke"
    assert r.data.params["data.train_limit"] == "240"
    assert r.data.tags["stage"] == "unit"
    assert r.data.tags["engine"] == "snakemake"
    assert r.data.tags["profile"] == "smoke"
    assert "git_commit" in r.data.tags
    history = _client(uri).get_metric_history(r.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (1, 1.0)]


def test_failed_stage_is_recorded_as_failed(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = load_params(ROOT / "params.yaml", profile="smoke")
    with pytest.raises(ValueError, match="boom"), stage_run("unit", params):
        raise ValueError("boom")
    assert [r.info.status for r in _runs(uri, "stage")] == ["FAILED"]
    assert [r.info.status for r in _runs(uri, "pipeline")] == ["FAILED"]


def test_stages_of_one_invocation_share_a_pipeline_run(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = load_params(ROOT / "params.yaml", profile="smoke")
    ids = {}
    for stage, key in (("a", "inv-1"), ("b", "inv-1"), ("c", "inv-2")):
        monkeypatch.setenv(PIPELINE_ENV, key)
        with stage_run(stage, params):
            pass
        ids[stage] = _client(uri).get_run(_runs(uri, "stage")[0].info.run_id).data.tags["mlflow.parentRunId"]
    pipelines = {r.info.run_id: r for r in _runs(uri, "pipeline")}
    assert len(pipelines) == 2 and ids["a"] == ids["b"] != ids["c"]
    assert pipelines[ids["a"]].data.tags["repurify.pipeline_run"] == "inv-1"
    assert pipelines[ids["c"]].data.tags["repurify.pipeline_run"] == "inv-2"
    assert {r.data.tags["profile"] for r in pipelines.values()} == {"smoke"}


def test_a_failed_stage_marks_its_pipeline_run_failed(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(PIPELINE_ENV, "inv")
    params = load_params(ROOT / "params.yaml", profile="smoke")
    statuses = []
    for fail in (False, True, False):  # a later success does not clear the failure
        with pytest.raises(ValueError) if fail else contextlib.nullcontext(), stage_run("unit", params):
            if fail:
                raise ValueError("boom")
        (pipeline,) = _runs(uri, "pipeline")
        statuses.append(pipeline.info.status)
    assert statuses == ["FINISHED", "FAILED", "FAILED"]
    assert sorted(r.info.status for r in _runs(uri, "stage")) == ["FAILED", "FINISHED", "FINISHED"]


def _fake_proc(root: Path, procs: dict[int, tuple[int, str, list[str]]]) -> Path:
    """A /proc with ``pid -> (parent pid, start time, argv)``; command names hold spaces and ")"."""
    for pid, (ppid, start, argv) in procs.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "stat").write_text(f"{pid} (a) b) S {ppid} " + "0 " * 17 + f"{start} 0 0\n")
        (root / str(pid) / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    return root


@pytest.mark.parametrize("dvc_argv", [["/venv/bin/python3", "/venv/bin/dvc", "repro"],
                                      ["python", "-m", "dvc", "exp", "run"], ["dvc", "repro"]])
def test_pipeline_key_finds_the_dvc_ancestor(tmp_path: Path, dvc_argv: list[str]) -> None:
    host = socket.gethostname()
    proc = _fake_proc(tmp_path / "proc", {
        1: (0, "1", ["/sbin/init"]),
        40: (1, "400", dvc_argv),
        50: (40, "500", ["/bin/sh", "-c", "python -m stages.fetch_data --log logs/dvc"]),
        60: (50, "600", ["python", "-m", "stages.fetch_data"]),
        70: (1, "700", ["python", "-m", "stages.fetch_data", "--params", "dvc"]),
    })
    assert pipeline_key(60, proc) == f"dvc:{host}:40:400"
    assert pipeline_key(70, proc) == f"cli:{host}:70:700"
    assert pipeline_key(60, tmp_path / "no-proc").startswith(f"cli:{host}:60:")


def test_pipeline_key_env_wins_and_is_sanitised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PIPELINE_ENV, "snakemake:a b'c")
    assert pipeline_key() == "snakemake:a_b_c"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_pipeline_key_under_a_real_dvc_process(tmp_path: Path) -> None:
    """A script named ``dvc`` runs a shell that runs the stage: the key names the script's process."""
    dvc = tmp_path / "dvc"
    stage = "from repurify.tracking import pipeline_key; print(pipeline_key())"
    dvc.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                   f"sys.exit(subprocess.call(['/bin/sh', '-c', {f'{sys.executable} -c {stage!r}'!r}]))\n")
    dvc.chmod(0o755)
    proc = subprocess.Popen([str(dvc)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0
    assert out.strip().startswith(f"dvc:{socket.gethostname()}:{proc.pid}:")


def _writer(uri: str, i: int) -> None:
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ[PIPELINE_ENV] = "parallel"
    params = load_params(ROOT / "params.yaml", profile="smoke")
    with stage_run(f"parallel{i}", params) as run:
        run.log_metric("i", i)


def test_parallel_stages_share_one_sqlite_store(tmp_path: Path) -> None:
    """Fresh database, four processes at once (the first also creates the schema and the
    pipeline run, which the others then find)."""
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(uri, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=1800)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    runs = _runs(uri, "stage")
    assert sorted(r.data.metrics["i"] for r in runs) == [0, 1, 2, 3]
    (pipeline,) = _runs(uri, "pipeline")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {pipeline.info.run_id}


@pytest.fixture
def two_pipelines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, str]:
    """Pipeline runs A (smoke: classifier + hgd evaluation) and B (digits: classifier + report)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    for key, profile, acc in (("inv-a", "smoke", 0.5), ("inv-b", "digits", 0.75)):
        monkeypatch.setenv(PIPELINE_ENV, key)
        params = load_params(ROOT / "params.yaml", profile=profile)
        with stage_run("train_classifier", params) as run:
            run.log_metric("clean_accuracy", acc)
        with stage_run(*(("evaluate",) if profile == "smoke" else ("report",)), params,
                       **({"defense": "hgd"} if profile == "smoke" else {})) as run:
            run.log_metric("accuracy.whitebox.adaptive.pgd" if profile == "smoke" else "pages", 3)
        time.sleep(0.01)  # distinct start times
    ids = {r.data.tags["profile"]: r.info.run_id for r in _runs(tracking_uri(), "pipeline")}
    return ids["smoke"], ids["digits"]


def _table_rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}


def test_compare_reports_metrics_and_differing_params(two_pipelines: tuple[str, str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_pipelines
    for argv in ([], [a[:8], b], ["--profiles", "smoke", "digits"]):
        assert compare.main(argv) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"A: {a}  pipeline:smoke:cli") and f"\nB: {b}  pipeline:digits:cli" in out
        assert "only the stages that ran" in out
        rows = _table_rows(out)
        assert rows["train_classifier/clean_accuracy"] == ["0.5", "0.75", "+0.25"]
        assert rows["evaluate[hgd]/accuracy.whitebox.adaptive.pgd"] == ["3", "-", "-"]
        assert rows["report/pages"] == ["-", "3", "-"]
        assert rows["profile"] == ["smoke", "digits"] and "seed" not in rows
    assert compare.main(["--profiles", "digits", "smoke"]) == 0
    assert capsys.readouterr().out.startswith(f"A: {b}")
    assert compare.main(["--list"]) == 0
    listed = _table_rows(capsys.readouterr().out)
    assert listed[a][-4:] == ["smoke", "cli", "2", "FINISHED"] and listed[b][-4:-2] == ["digits", "cli"]


def test_compare_into_a_closed_pipe_ends_quietly(two_pipelines: tuple[str, str]) -> None:
    """`python -m repurify.compare | head`: the reader is gone before the table is written."""
    proc = subprocess.Popen([sys.executable, "-m", "repurify.compare", "--list"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # long before the child has imported MLflow and printed
    err = proc.stderr.read()
    assert proc.wait(timeout=600) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize(("argv", "message"), [
    (["nope", "nope2"], "'nope': unknown"),
    (["", ""], "ambiguous (2 runs match)"),
    (["--profiles", "smoke", "cifar10"], "no pipeline run of profile 'cifar10'"),
])
def test_compare_errors_exit_2(two_pipelines: tuple[str, str], capsys: pytest.CaptureFixture[str],
                               argv: list[str], message: str) -> None:
    assert compare.main(argv) == 2
    assert message in capsys.readouterr().err


def test_compare_without_runs_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'absent.db'}")
    assert compare.main([]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "absent.db").exists()
    params = load_params(ROOT / "params.yaml", profile="smoke")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'one.db'}")
    with stage_run("unit", params):
        pass
    assert compare.main([]) == 2
    assert "only one pipeline run" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        compare.main(["only-one-id"])


def test_process_start_is_read_from_proc(tmp_path: Path) -> None:
    """The stage's clock starts with its process: /proc/<pid>/stat field 22 against /proc/uptime."""
    import os

    process_start_ms = PROCESS_START_MS
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / str(os.getpid())).mkdir()
    (tmp_path / "uptime").write_text("1000.00 5.0\n")
    fields = ["S", "1", *(["0"] * 17), str(990 * ticks)]  # state, ppid, ..., starttime: 10 s ago
    (tmp_path / str(os.getpid()) / "stat").write_text(f"{os.getpid()} (py thon) " + " ".join(fields))
    assert abs(process_start_ms(tmp_path) - (time.time() - 10) * 1000) < 500
    assert abs(process_start_ms(tmp_path / "nowhere") - time.time() * 1000) < 500
    # this process, read from the real /proc: it started before it imported this module, after boot
    boot_ms = (time.time() - float(Path("/proc/uptime").read_text().split()[0])) * 1000
    assert boot_ms - 1000 < process_start_ms() < IMPORTED_MS


def test_a_per_defense_stage_run_is_named_after_its_slot(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = load_params(ROOT / "params.yaml", profile="smoke")
    with stage_run("evaluate", params, defense="hgd"):
        pass
    names = {r.info.run_name for r in _client(uri).search_runs(
        [_client(uri).get_experiment_by_name(params.mlflow.experiment).experiment_id])}
    assert "evaluate_hgd:smoke" in names
    assert "\nevaluate_hgd: " in capsys.readouterr().err


def test_git_commit_says_when_the_tree_differs(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.lock").write_text("x\n")
    git("add", ".")
    git("commit", "-qm", "c")
    head = git_commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    (tmp_path / "dvc.lock").write_text("rewritten by the run itself\n")
    (tmp_path / "new_untracked.txt").write_text("")
    assert git_commit(tmp_path) == head
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert git_commit(tmp_path) == f"{head}-dirty"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_stages_against_a_tracking_server_arrive_nested(tmp_path: Path) -> None:
    """The cluster setup: `mlflow server` on one host, MLFLOW_TRACKING_URI pointing at it."""
    import shutil
    import urllib.request

    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # a guard against a hang, not a timing
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(1)
        shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri, PIPELINE_ENV: "server-test"}
        for stage in ("fetch_data", "train_classifier"):
            subprocess.run([sys.executable, "-m", f"stages.{stage}", "--profile", "smoke"], cwd=tmp_path,
                           env=env, check=True, capture_output=True, timeout=1800)
        row_writer = ("from repurify.params import load_params; from repurify.tracking import stage_run\n"
                      "params = load_params('params.yaml', 'smoke')\n"
                      "with stage_run('evaluate', params, defense='none') as run:\n"
                      "    run.log_child('pgd:whitebox', {'attack': 'pgd'}, {'accuracy': 0.25})\n")
        subprocess.run([sys.executable, "-c", row_writer], cwd=tmp_path, env=env, check=True, timeout=1800)
        (pipeline,) = _runs(uri, "pipeline")
        stages = _runs(uri, "stage")
        assert sorted(r.info.run_name for r in stages) == ["evaluate_none:smoke", "fetch_data:smoke",
                                                           "train_classifier:smoke"]
        assert {r.data.tags["mlflow.parentRunId"] for r in stages} == {pipeline.info.run_id}
        (row,) = _runs(uri, "row")
        (evaluate,) = [r for r in stages if r.data.tags["stage"] == "evaluate"]
        assert row.data.tags["mlflow.parentRunId"] == evaluate.info.run_id
        assert pipeline.info.status == "FINISHED"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
