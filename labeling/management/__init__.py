"""The labeling app's management commands (import_items, export, load_demo, ...)."""
