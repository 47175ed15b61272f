"""Local emulators of the HTTP APIs cloud sandbox providers expose, so the providers' real SDKs
can be tested in CI without accounts (each emulator listens on 127.0.0.1 only).

What they share: sandbox processes confined by ``rlm_env_sandbox.bwrap.bwrap_command`` (the
``sandbox`` environment's own command line), scripted faults (:mod:`._faults`) and, for the
asynchronous servers (aiohttp, grpclib), an event loop in a thread of its own (:mod:`._loop`)."""
