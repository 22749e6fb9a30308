"""The configuration layer: YAML files and overrides (``loading``), typed sections (``typed``),
fields with help and ranges (``fields``) and the registries components are chosen from
(``registry``). Imports nothing above it."""

from .fields import Range, check_instance, check_ranges, field_help, field_range, hfield
from .loading import (
    PACKAGE_CONFIGS,
    Override,
    Sweep,
    apply_overrides,
    config_description,
    config_dirs,
    config_names,
    deep_merge,
    dump_yaml,
    expand_sweeps,
    find_config,
    flatten,
    load_config,
    load_yaml,
    parse_override,
    parse_value,
)
from .registry import Registry
from .typed import build, check_folder_name, to_dict

__all__ = [
    "PACKAGE_CONFIGS", "Override", "Range", "Registry", "Sweep", "apply_overrides", "build", "check_folder_name",
    "check_instance", "check_ranges", "config_description", "config_dirs", "config_names", "deep_merge",
    "dump_yaml", "expand_sweeps", "field_help", "field_range", "find_config", "flatten", "hfield", "load_config",
    "load_yaml", "parse_override", "parse_value", "to_dict",
]
