"""Prefect flows: thin orchestration over functions of ``driftloop``; deployed by prefect.yaml."""
