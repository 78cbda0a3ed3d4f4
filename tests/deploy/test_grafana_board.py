"""The Grafana board queries only series the service really exports, with labels they really carry,
and covers what an operator watches; the ServiceMonitor finds the service where the manifests put it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from helpers import REPO, Api, script, wait_for

BOARD = REPO / "deploy" / "grafana" / "gpujobs.json"
# What the issue asks the board to show, as the series that show it.
WATCHED = {
    "gpujobs_gpus_total",  # GPUs by type and state
    "gpujobs_gpus_used",
    "gpujobs_queued_jobs",  # queue depth by priority
    "gpujobs_job_wait_seconds_bucket",  # wait time by priority
    "gpujobs_jobs_started_total",  # jobs started / ended by outcome
    "gpujobs_jobs_ended_total",
    "gpujobs_request_seconds_bucket",  # API latency
    "gpujobs_event_loop_lag_seconds",  # event-loop lag
}


def panels(board: dict) -> list[dict]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(board: dict) -> list[tuple[str, str, str]]:
    """(panel title, expression, legend) of every query on the board."""
    return [
        (panel["title"], target["expr"], target.get("legendFormat", ""))
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def exported(text: str) -> dict[str, set[str]]:
    """Each sample name on /metrics, with the label names its samples carry."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_the_board_is_well_formed() -> None:
    board = json.loads(BOARD.read_text())
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {variable["name"] for variable in board["templating"]["list"]}
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the board"
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]  # any Prometheus
            assert panel.get("targets"), f"{panel['title']} shows nothing"
    for title, expr, _ in queries(board):
        for used in re.findall(r"\$(\w+)", expr):
            assert used in variables or used.startswith("__"), f"{title}: ${used} is not a variable"


def test_every_series_the_board_queries_is_exported_with_its_labels(world, tmp_path: Path) -> None:
    """A job holds the one GPU while a second waits, then both run and end: the counters, the wait
    histogram and the queue gauge have samples, and every query of the board finds its series."""
    service = world.start_in_process("--simulate-gpus", "t4:1")
    alice = Api(service.client(world.hub.add_user("alice")))
    release = tmp_path / "release"
    hold = f"import os, time\nwhile not os.path.exists({str(release)!r}):\n    time.sleep(0.02)\n"
    first = alice.submit_ok(**script(hold, gpu_count=1))["job_id"]
    alice.wait_status(first, "running")
    second = alice.submit_ok(**script("print(2)", gpu_count=1))["job_id"]
    metrics = service.client(None)
    waiting = wait_for(
        lambda: (
            'gpujobs_queued_jobs{priority="normal"} 1.0' in (text := metrics.get("metrics").text) and text
        ),
        what="the queue per priority to show the waiting job",
    )
    release.touch()
    alice.wait_status(second, "completed")
    alice.wait_status(first, "completed")
    ended = wait_for(
        lambda: (
            'gpujobs_jobs_ended_total{outcome="completed"} 2.0' in (text := metrics.get("metrics").text)
            and text
        ),
        what="both ends to be counted",
    )
    assert 'gpujobs_jobs_started_total{priority="normal"} 2.0' in ended
    assert 'gpujobs_queued_jobs{priority="normal"} 0.0' in ended
    series = exported(waiting)
    for name, labels in exported(ended).items():
        series.setdefault(name, set()).update(labels)

    board = json.loads(BOARD.read_text())
    queried = set()
    for title, expr, legend in queries(board):
        names = set(re.findall(r"\bgpujobs_\w+", expr))
        assert names, f"{title}: {expr} queries no gpujobs series"
        for name in names:
            assert name in series, f"{title}: {name} is not on /metrics"
        labels = {label for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")}
        labels |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        labels |= set(re.findall(r"(\w+)\s*=~?", expr.split("{", 1)[-1])) if "{" in expr else set()
        for label in {label.strip() for label in labels} - {"le", "instance", ""}:
            assert any(label in series[name] for name in names), f"{title}: no series has label {label}"
        queried |= names
    assert queried >= WATCHED, f"the board does not show {sorted(WATCHED - queried)}"


def test_the_service_monitor_finds_the_service_and_its_metrics_path() -> None:
    monitor = yaml.safe_load((REPO / "deploy" / "prometheus" / "servicemonitor.yaml").read_text())
    documents = list(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "service.yaml").read_text()))
    (service,) = [d for d in documents if d and d["kind"] == "Service"]
    (deployment,) = [d for d in documents if d and d["kind"] == "Deployment"]
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["namespace"] in spec["namespaceSelector"]["matchNames"]
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    prefix = {e["name"]: e.get("value") for e in container["env"]}["JUPYTERHUB_SERVICE_PREFIX"]
    assert endpoint["path"] == prefix + "metrics"
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus" / "scrape-config.yaml").read_text())
    assert {job["metrics_path"] for job in scrape["scrape_configs"]} == {prefix + "metrics"}
