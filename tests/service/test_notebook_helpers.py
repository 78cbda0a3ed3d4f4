"""The widget panel and the cell magic, exercised in Python against the real service."""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta

import ipywidgets as widgets
import pytest
from IPython.core.interactiveshell import InteractiveShell

from gpujobs import Client
from gpujobs.client.magic import register, run_cell
from gpujobs.client.widgets import GpuStatusView
from gpujobs.widgets import Panel
from helpers import wait_for


@pytest.fixture(scope="module")
def client(module_world) -> Client:
    service = module_world.start(
        "--simulate-gpus",
        "a100-80gb:2,t4:1",
        env={
            "GPUJOBS_PRIORITIES": '{"batch": 0, "standard": 1, "urgent": 5}',
            "GPUJOBS_DEFAULT_PRIORITY": "standard",
        },
    )
    (module_world.homes / "alice" / "hello.py").write_text("print('hello from the form')\n")
    token = module_world.hub.add_user("alice")
    return Client(env={"GPUJOBS_URL": service.url, "JUPYTERHUB_API_TOKEN": token})


@pytest.fixture
def panel(client: Client):
    created = Panel(client, autostart=False)
    yield created
    created.close()


def test_the_panel_shows_gpu_status_per_type(panel: Panel) -> None:
    assert "3 of 3 GPUs free" in panel.gpus.summary.value
    assert re.search(r"\(simulated, updated \d+ s ago\)", panel.gpus.summary.value)
    assert "a100-80gb" in panel.gpus.table.value and "t4" in panel.gpus.table.value
    assert list(panel.form.gpu_type.options) == ["any", "a100-80gb", "t4"]


def test_the_view_is_confirmed_as_time_passes_and_the_panel_says_how_old_it_is(client: Client) -> None:
    first = client.gpu_status()["last_updated"]
    wait_for(lambda: client.gpu_status()["last_updated"] > first, timeout=60, what="a newer last_updated")
    view = GpuStatusView()
    status = client.gpu_status()
    then = datetime.fromisoformat(status["last_updated"].replace("Z", "+00:00"))
    view.update(status, now=then + timedelta(seconds=125))
    assert "updated 2 min ago" in view.summary.value


def test_the_form_offers_the_priorities_the_service_is_configured_with(panel: Panel, client: Client) -> None:
    assert list(panel.form.priority.options) == ["batch", "standard", "urgent"]
    assert panel.form.priority.value == "standard"
    panel.form.script.value = "hello.py"
    panel.form.gpus.value = 0
    panel.form.priority.value = "urgent"
    panel.form.submit_button.click()
    job_id = panel.form.message.value.split("<code>")[1].split("</code>")[0]
    assert client.job(job_id).status()["priority"] == "urgent"


def test_submitting_through_the_form_adds_the_job_to_the_table(panel: Panel, client: Client) -> None:
    panel.form.script.value = "hello.py"
    panel.form.name.value = "from-the-form"
    panel.form.gpu_type.value = "t4"
    panel.form.gpus.value = 1
    panel.form.submit_button.click()
    assert "submitted" in panel.form.message.value
    job_id = panel.form.message.value.split("<code>")[1].split("</code>")[0]
    assert job_id in panel.jobs.rows  # the table refreshed itself after the submit
    client.job(job_id).wait(show=False, poll=0.1, timeout=60)
    panel.refresh()
    assert "completed" in panel.jobs.rows[job_id]["status"].value
    assert not isinstance(panel.jobs.rows[job_id]["cancel"], widgets.Button)  # nothing to cancel
    panel.jobs.rows[job_id]["logs"].click()
    assert panel.logs.text.value == "hello from the form\n"
    assert panel.tabs.selected_index == 2


def test_a_refused_field_shows_its_message_next_to_it(panel: Panel) -> None:
    panel.form.script.value = "hello.py"
    panel.form.memory.value = "lots"
    panel.form.submit_button.click()
    assert "not a memory quantity" in panel.form.errors["memory_limit"].value
    assert panel.form.errors["gpu_type"].value == ""
    panel.form.memory.value = ""
    panel.form.script.value = "missing.py"
    panel.form.submit_button.click()
    assert "no such file" in panel.form.errors["script_path"].value
    assert panel.form.errors["memory_limit"].value == ""  # old errors are cleared


def test_cancel_from_the_table_and_follow_a_running_job(panel: Panel, client: Client, tmp_path) -> None:
    release = tmp_path / "release"
    code = (
        "import os, time\nprint('waiting', flush=True)\n"
        f"while not os.path.exists({str(release)!r}): time.sleep(0.05)\n"
    )
    running = client.submit(code=code, name="follow-me")
    wait_for(lambda: running.status()["status"] == "running", what="job to run")
    panel.refresh()
    follower = panel.logs.show(running.id)
    wait_for(lambda: "waiting" in panel.logs.text.value, what="followed output")
    release.touch()
    assert follower is not None
    follower.join(timeout=60)
    assert "completed" in panel.logs.title.value

    blocker = client.submit(code="import time; time.sleep(300)", name="to-cancel")
    panel.refresh()
    panel.jobs.rows[blocker.id]["cancel"].click()
    assert blocker.status()["status"] == "cancelled"
    assert "cancelled" in panel.jobs.rows[blocker.id]["status"].value


def test_the_cell_magic_runs_a_cell_as_a_job(client: Client) -> None:
    out = io.StringIO()
    job = run_cell(
        client,
        "--follow --name magic-cell --gpus 1 --gpu-type a100",
        "import os\nprint('gpus:', os.environ['CUDA_VISIBLE_DEVICES'])",
        out=out,
    )
    assert "gpus: " in out.getvalue() and "completed" in out.getvalue()
    view = job.status()
    assert view["status"] == "completed" and view["gpu_type"] == "a100"
    assert job.logs().startswith("gpus: ")


def test_the_magics_in_a_real_ipython_shell(client: Client, capsys) -> None:
    shell = InteractiveShell.instance()
    register(shell, client)
    shell.run_cell_magic("gpujob", "--follow --name shell-cell", "print(6 * 7)")
    printed = capsys.readouterr().out
    assert "42" in printed and "completed" in printed
    assert shell.user_ns["_gpujob"].state in ("completed", "running")
    shell.run_line_magic("gpujobs", "")
    listing = capsys.readouterr().out
    assert "shell-cell" in listing and "STATUS" in listing
    shell.run_cell_magic("gpujob", "--memory lots", "print(1)")
    assert "not a memory quantity" in capsys.readouterr().err
    InteractiveShell.clear_instance()
