"""Prefect flows: the end-to-end pipeline (flows/pipeline.py)."""
