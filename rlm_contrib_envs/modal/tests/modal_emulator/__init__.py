"""An emulator of the Modal gRPC API used by ``modal.Sandbox`` (see :mod:`.server`)."""

from .server import Call, ModalEmulator

__all__ = ["Call", "ModalEmulator"]
