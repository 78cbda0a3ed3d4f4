"""``gpujobs.widgets.Panel()``: the notebook panel (see ``gpujobs.client.widgets``)."""

from .client.widgets import GpuStatusView, JobTable, LogViewer, Panel, SubmitForm

__all__ = ["GpuStatusView", "JobTable", "LogViewer", "Panel", "SubmitForm"]
