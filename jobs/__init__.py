"""Thin Spark glue: read config, read input, map library functions over Arrow batches, write, validate, publish."""
