"""The ``sandbox`` environment: the REPL worker under bubblewrap. See ``env.SandboxREPL``."""
