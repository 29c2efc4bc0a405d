"""Pure functions: extracted rows in, documents (and later Arrow tables) out.

No I/O, no clock, no environment: the export date and the requesting user are arguments.
Nothing here imports SQLAlchemy, Prefect, FastAPI or fsspec.
"""
