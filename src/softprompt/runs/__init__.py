"""Run folders: create, log, write and read back (``folder``); load a finished run as a classifier or
reward model (``loading``); tables and plots (``reports``)."""

from .folder import RunFolder, model_name, new_run_dir

__all__ = ["RunFolder", "model_name", "new_run_dir"]
