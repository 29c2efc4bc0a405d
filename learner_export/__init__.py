"""The application shell: typed settings, the command line, the demo database.

The stage packages (`extract`, `transform`, `load`, `flows`) hold the pipeline; this package wires
them to a user.
"""
