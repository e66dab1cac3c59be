"""The embedded stack on one machine (the operational layer, beside the CLI).

What each module does:

- ``processes``: one server as a child process (its log, health wait, stop), ports, pids.
- ``servers``: how each component starts (Prefect server and worker, the lakeFS-compatible server,
  ``bentoml serve``, the monitor, Prometheus, Alertmanager).
- ``ports``: the port plan, which component listens where and which setting moves it.
- ``credentials``: the stack's secrets (configured, or made once and kept in ``.env``).
- ``state``: ``<home>/stack.json``, read by ``driftloop status`` and ``down`` in any shell.
- ``health``: asking a running component whether it is healthy.
- ``deploy``: applying prefect.yaml (work pool, deployments, triggers).
- ``bootstrap``: the first model when there is none.
- ``supervisor``: ``LocalStack``, which starts, supervises and stops the whole stack.
- ``demo``: ``driftloop demo``, the loop closed on a fresh stack.

It may import flows, services and the core; the core never imports it (an import contract in
``pyproject.toml`` that ``scripts/dev.py lint`` runs).
"""
