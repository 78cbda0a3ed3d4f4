"""Executors run admitted jobs: ``local`` (processes on this machine) and, later, ``kubernetes``."""
