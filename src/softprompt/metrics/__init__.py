"""Metrics: GLUE task metrics (``glue``), diversity and Pass@k of generated texts (``diversity``)."""
