"""Entrypoint files for prefect.yaml; the flows themselves are in ``mt5_sync/flows/``.

Prefect loads ``flows/<file>.py:<flow>`` by file path from the project folder (``prefect
deploy``, and the worker after the pull step changes into the checkout). Each file re-exports
the flow object from the installed ``mt5_sync.flows`` package, so the entrypoints, the CLI
and the tests all run the same object. This folder is not installed: ``pip install`` adds only
``mt5_sync`` to an environment, never a top-level ``flows`` package that another Prefect
project's own ``flows`` could shadow (or be shadowed by).
"""
