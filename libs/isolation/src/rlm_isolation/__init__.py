"""Process isolation for rlm environments.

Subclass :class:`rlm_isolation.repl.IsolatedREPL` and implement ``launch()``; the modules here do
the rest (``worker``: the REPL worker, standard library only; ``channel``: the framed HMAC channel;
``leftovers``: per-run directories and their reaping; ``seccomp``: the one syscall policy).
"""
