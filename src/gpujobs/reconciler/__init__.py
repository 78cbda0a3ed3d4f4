"""The control loop's second half: carry out what the store says, record what the executor sees.

``decide`` (pure) says, for one job and what the executor observes of it, what to do next; ``loop``
runs it on every pass over the jobs the store says hold resources.
"""

from .decide import Action, Step, decide
from .loop import Reconciler

__all__ = ["Action", "Reconciler", "Step", "decide"]
