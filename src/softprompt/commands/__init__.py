"""Commands: the CLI and what it runs besides training: multi-stage configs (``stages``), sweeps,
``eval-gen``, ``compare``, ``convert-weights``, ``config-reference``."""
