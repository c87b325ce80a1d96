"""Prefect flows: orchestration only — which tasks run, in what order, how many at once.

prefect.yaml reaches them through the entrypoint files in the repository's top-level
``flows/`` folder, which re-export these flow objects.
"""
