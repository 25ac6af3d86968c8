"""Every multi-model write and workflow of the human side, as ``<entity>_<action>`` functions.

Each service takes keyword-only typed arguments, owns its transaction and writes its audit event.
"""
