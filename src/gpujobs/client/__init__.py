"""The user side: ``Client`` and ``Job`` (HTTP only), the CLI, the notebook panel and magics."""
