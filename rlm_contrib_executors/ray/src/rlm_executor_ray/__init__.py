"""rlm-executor-ray: the ``ray`` executor (``rlm batch --executor ray``,
``RLM(subcall_executor="ray")``)."""
