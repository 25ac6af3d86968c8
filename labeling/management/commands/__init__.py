"""One module per ``manage.py`` command; each parses arguments and calls one service."""
