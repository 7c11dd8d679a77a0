"""Configuration: YAML with line numbers, pydantic models, and a loader that reports
every problem with its file, line and field."""
