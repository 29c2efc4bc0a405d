"""Reads the learning platform's source database, and only reads it.

`tables` declares the four source tables of the contract, `engine` opens a read-only connection,
`queries` builds the SELECT statements and `reader` runs them in one snapshot per call.
"""
