"""Seeing a run: the ``rlm view`` trajectory viewer (a page served on 127.0.0.1) and the
``progress`` sink (one live status line on stderr for `rlm run`)."""
