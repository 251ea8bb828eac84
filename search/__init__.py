"""Search over stored codes: exact Hamming top-k, near-duplicates and (for notebooks) an in-memory index.

Search consumes codes as heads do, so it sits beside ``heads/`` on top of ``encoder/``: ``kernels`` and
``duplicates`` are pure numpy/torch functions over packed codes, ``index`` reads a published table, and ``queries``
turns query texts into codes with the table's own spec. No pyspark.
"""
