"""Scheduling: a pure policy (``policy.decide``) and the loop that runs it (``loop.SchedulerLoop``)."""
