"""The `vlm-playground` command line."""
