"""The ``ipython`` environment: the REPL as a real IPython shell (see README.md).

Importing this package is cheap: IPython, ipykernel and jupyter_client load on first use.
"""
