"""Prefect flows: thin recipes that call extract, transform and load.

The only package that imports Prefect, so the one-off CLI export and the endpoint start fast.
"""
