"""Local emulators of the HTTP APIs cloud sandbox providers expose, so the providers' real SDKs
can be tested in CI without accounts (each emulator listens on 127.0.0.1 only)."""
