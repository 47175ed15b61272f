"""First-party executors: ``threads`` (the default of ``rlm.batch`` and ``rlm batch``)."""
