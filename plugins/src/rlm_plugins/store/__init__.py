"""The trajectory store: a SQLite database of every run (the ``store`` sink), ``rlm logs`` and
``rlm keys``."""
