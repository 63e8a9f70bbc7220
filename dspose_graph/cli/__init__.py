"""The `dspose` command: sub-commands and the YAML config dataclasses (the only place configs are parsed)."""
