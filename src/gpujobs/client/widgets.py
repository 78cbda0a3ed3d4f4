"""The notebook panel: GPU status, a submit form, your jobs and a log viewer (ipywidgets 8).

    from gpujobs.widgets import Panel
    Panel()

A thin layer over ``gpujobs.Client``: every action is one client call, and the API's own messages are
what you see (a refused field shows its message next to that field).  Refreshing happens in a
background thread, so the kernel stays free.
"""

from __future__ import annotations

import contextlib
import html
import os
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ipywidgets as W

from .client import TERMINAL, ApiError, Client, Job, describe

STATE_COLOURS = {
    "queued": "#9a6700",
    "pending": "#0969da",
    "running": "#1a7f37",
    "completed": "#57606a",
    "failed": "#cf222e",
    "cancelled": "#8250df",
}
_ERROR = "color:#cf222e;font-size:0.9em"


def _bar(used: int, free: int, queued: int) -> str:
    """A stacked bar: used (dark), free (light), and the queue's demand beyond it (hatched)."""
    total = max(used + free + queued, 1)

    def part(count: int, style: str) -> str:
        width = 240 * count // total
        return f'<span style="display:inline-block;height:12px;width:{width}px;{style}"></span>'

    return (
        part(used, "background:#1a7f37")
        + part(free, "background:#d1f0d9")
        + part(queued, "background:repeating-linear-gradient(45deg,#f6c343,#f6c343 3px,#fff 3px,#fff 6px)")
    )


def _demand(queued: int) -> str:
    return f", {queued} wanted by the queue" if queued else ""


def _age(timestamp: str, now: datetime | None = None) -> str:
    """``12 s ago``: how old the service's view is, as the person reads it (not a clock time in UTC)."""
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return html.escape(timestamp)
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - then).total_seconds()))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 90 * 60:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


class GpuStatusView(W.VBox):
    def __init__(self) -> None:
        self.summary = W.HTML("GPU status: loading…")
        self.table = W.HTML()
        super().__init__([self.summary, self.table])

    def update(self, status: dict[str, Any], now: datetime | None = None) -> None:
        stale = ", <b>stale</b>: the cluster has not been heard from" if status.get("stale") else ""
        self.summary.value = (
            f"<b>{status['available_gpus']} of {status['total_gpus']} GPUs free</b> "
            # On a cluster, synced_at is when the view last matched it (a quiet cluster changes nothing).
            f"<small>({html.escape(status['source'])}, updated "
            f"{_age(status.get('synced_at') or status['last_updated'], now)}"
            f"{stale})</small>"
        )
        rows = "".join(
            f"<tr><td><code>{html.escape(t['gpu_type'])}</code></td>"
            f"<td>{_bar(t['used'], t['available'], t.get('queued_demand', 0))}</td>"
            f"<td>{t['available']} free / {t['total']}, {t['used']} used"
            f"{_demand(t.get('queued_demand', 0))}</td></tr>"
            for t in status["gpu_types"]
        )
        self.table.value = f"<table>{rows}</table>" if rows else "<i>no GPUs here</i>"


def user_scripts(root: Path, limit: int = 200) -> list[str]:
    """Python files under ``root`` (relative paths, hidden folders skipped), for the script picker."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and d not in ("node_modules", "__pycache__")
        )
        depth = Path(folder).relative_to(root).parts
        if len(depth) >= 3:
            dirs[:] = []
        found.extend(str(Path(folder, f).relative_to(root)) for f in sorted(files) if f.endswith(".py"))
        if len(found) >= limit:
            break
    return found[:limit]


LABEL_WIDTH = "7.5em"  # the longest label, "requirements", whole (the default width cuts it)


class SubmitForm(W.VBox):
    FIELDS = ("script_path", "gpu_type", "gpu_count", "cpu_limit", "memory_limit", "priority", "requirements")

    def __init__(self, client: Client, on_submitted: Callable[[Job], None] | None = None) -> None:
        self.client = client
        self.on_submitted = on_submitted
        home = Path(os.path.expanduser("~"))
        self.script = W.Combobox(
            placeholder="train.py", options=user_scripts(home), description="script", ensure_option=False
        )
        self.name = W.Text(placeholder="(optional)", description="name")
        self.gpu_type = W.Dropdown(options=["any"], value="any", description="GPU type")
        self.gpus = W.BoundedIntText(value=1, min=0, max=1024, description="GPUs")
        self.cpu = W.Text(placeholder="e.g. 4 or 500m", description="CPU")
        self.memory = W.Text(placeholder="e.g. 8Gi", description="memory")
        self.priority = W.Dropdown(options=["low", "normal", "high"], value="normal", description="priority")
        self.requirements = W.Textarea(
            placeholder="one PEP 508 requirement per line", description="requirements"
        )
        self.errors = {field: W.HTML() for field in self.FIELDS}
        self.submit_button = W.Button(description="Submit", button_style="primary", icon="play")
        self.message = W.HTML()
        self.submit_button.on_click(lambda _button: self.submit())
        inputs = {
            "script_path": self.script,
            "gpu_type": self.gpu_type,
            "gpu_count": self.gpus,
            "cpu_limit": self.cpu,
            "memory_limit": self.memory,
            "priority": self.priority,
            "requirements": self.requirements,
        }
        for labelled in (*inputs.values(), self.name):
            labelled.style.description_width = LABEL_WIDTH
        rows = [W.HBox([inputs[field], self.errors[field]]) for field in self.FIELDS]
        super().__init__([*rows[:1], self.name, *rows[1:], W.HBox([self.submit_button, self.message])])

    def set_priorities(self, names: list[str], default: str) -> None:
        """The service's priority names (its configuration decides them), lowest first."""
        if names and list(self.priority.options) != names:
            current = self.priority.value
            self.priority.options = names
            self.priority.value = current if current in names else (default if default in names else names[0])

    def set_gpu_types(self, types: list[str]) -> None:
        options = ["any", *sorted(set(types))]
        if list(self.gpu_type.options) != options:
            current = self.gpu_type.value
            self.gpu_type.options = options
            self.gpu_type.value = current if current in options else "any"

    def submit(self) -> Job | None:
        for error in self.errors.values():
            error.value = ""
        self.message.value = ""
        requirements = [line.strip() for line in self.requirements.value.splitlines() if line.strip()]
        try:
            job = self.client.submit(
                self.script.value.strip() or None,
                name=self.name.value.strip() or None,
                gpus=self.gpus.value,
                gpu_type=self.gpu_type.value,
                cpu=self.cpu.value.strip() or None,
                memory=self.memory.value.strip() or None,
                priority=self.priority.value,
                requirements=requirements,
            )
        except ApiError as exc:
            field = (exc.field or "").split(".")[0]
            target = self.errors.get(field)
            if target is not None:
                target.value = f'<span style="{_ERROR}">{html.escape(exc.message)}</span>'
            else:
                self.message.value = f'<span style="{_ERROR}">{html.escape(exc.message)}</span>'
            return None
        self.message.value = f"submitted <code>{job.id}</code>"
        if self.on_submitted:
            self.on_submitted(job)
        return job


class JobTable(W.VBox):
    def __init__(self, client: Client, on_logs: Callable[[str], None], on_change: Callable[[], None]) -> None:
        self.client = client
        self.on_logs = on_logs
        self.on_change = on_change
        self.rows: dict[str, dict[str, Any]] = {}
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns="10em 12em 9em 7em 1fr 6em 6em"))
        self.message = W.HTML()
        super().__init__([self.grid, self.message])

    def update(self, views: list[dict[str, Any]]) -> None:
        cells: list[W.Widget] = [
            W.HTML(f"<b>{h}</b>") for h in ("job", "name", "status", "GPUs", "why", "", "")
        ]
        self.rows = {}
        for view in views:
            colour = STATE_COLOURS.get(view["status"], "#000")
            position = f" #{view['queue_position']}" if view.get("queue_position") else ""
            why = view.get("reason") or view.get("message") or ""
            logs = W.Button(description="logs", layout=W.Layout(width="5.5em"))
            logs.on_click(lambda _b, job_id=view["job_id"]: self.on_logs(job_id))
            # An ended job has nothing to cancel: no button, rather than a red one that cannot be used.
            cancel: W.Widget = W.HTML("")
            if view["status"] not in TERMINAL:
                cancel = W.Button(description="cancel", button_style="danger", layout=W.Layout(width="5.5em"))
                cancel.on_click(lambda _b, job_id=view["job_id"]: self.cancel(job_id))
            status = W.HTML(
                f'<span style="color:{colour};font-weight:bold">{view["status"]}{position}</span>'
            )
            gpus = f"{view['gpu_count']} x {view['gpu_type']}" if view["gpu_count"] else "-"
            cells += [
                W.HTML(f"<code>{view['job_id']}</code>"),
                W.Label(view["name"][:24]),
                status,
                W.Label(gpus),
                W.Label(why[:80]),
                logs,
                cancel,
            ]
            self.rows[view["job_id"]] = {"view": view, "status": status, "cancel": cancel, "logs": logs}
        self.grid.children = cells

    def cancel(self, job_id: str) -> None:
        try:
            view = self.client.job(job_id).cancel()
            self.message.value = html.escape(describe(view))
        except ApiError as exc:
            self.message.value = f'<span style="{_ERROR}">{html.escape(exc.message)}</span>'
        self.on_change()


class LogViewer(W.VBox):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.title = W.HTML("<i>choose a job's “logs”</i>")
        self.text = W.Textarea(layout=W.Layout(width="100%", height="20em"), disabled=True)
        self._generation = 0
        self._lock = threading.Lock()
        super().__init__([self.title, self.text])

    def show(self, job_id: str, *, follow: bool = True) -> threading.Thread | None:
        """Show a job's output; while it runs, follow it in the background."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        job = self.client.job(job_id)
        self.title.value = f"<b>{html.escape(describe(job.view))}</b>"
        self.text.value = ""
        if not follow or job.state in TERMINAL:
            self.text.value = job.logs()
            return None

        def stream() -> None:
            try:
                for line in job.logs(follow=True):
                    if generation != self._generation:
                        return  # another job was chosen
                    self.text.value += line
                self.title.value = f"<b>{html.escape(describe(job.status()))}</b>"
            except ApiError as exc:
                self.title.value = f'<span style="{_ERROR}">{html.escape(exc.message)}</span>'

        thread = threading.Thread(target=stream, name=f"gpujobs-logs-{job_id}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        with self._lock:
            self._generation += 1


class Panel(W.VBox):
    """GPU status, submit form, job table and log viewer in one widget."""

    def __init__(
        self, client: Client | None = None, *, refresh_seconds: float = 5.0, autostart: bool = True
    ) -> None:
        self.client = client or Client()
        self.refresh_seconds = refresh_seconds
        self.gpus = GpuStatusView()
        self.logs = LogViewer(self.client)
        self.jobs = JobTable(self.client, on_logs=self._show_logs, on_change=self.refresh)
        self.form = SubmitForm(self.client, on_submitted=lambda job: self.refresh())
        self.banner = W.HTML()
        self.tabs = W.Tab(children=[self.form, self.jobs, self.logs])
        for index, title in enumerate(("Submit", "My jobs", "Logs")):
            self.tabs.set_title(index, title)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__([W.HTML("<h3>gpujobs</h3>"), self.gpus, self.banner, self.tabs])
        with contextlib.suppress(ApiError):  # an old service without them: the form keeps its defaults
            info = self.client.service_info()
            self.form.set_priorities(info.get("priorities") or [], info.get("default_priority") or "")
        self.refresh()
        if autostart:
            self.start()

    def _show_logs(self, job_id: str) -> None:
        self.tabs.selected_index = 2
        self.logs.show(job_id)

    def refresh(self) -> None:
        """Fetch GPU status and jobs once, and update every part."""
        try:
            status = self.client.gpu_status(nodes=False)
            jobs = self.client.jobs(limit=25)
        except ApiError as exc:
            self.banner.value = f'<span style="{_ERROR}">{html.escape(exc.message)}</span>'
            return
        self.banner.value = ""
        self.gpus.update(status)
        self.form.set_gpu_types([t["gpu_type"] for t in status["gpu_types"]])
        self.jobs.update([job.view for job in jobs])

    def start(self) -> None:
        """Refresh every ``refresh_seconds`` in a background thread (the kernel stays free)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.refresh_seconds):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="gpujobs-panel", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.logs.stop()

    def close(self) -> None:
        self.stop()
        super().close()
