"""What can go wrong with a volume, each error with its HTTP status."""

from __future__ import annotations

from .errors import CellhopError


class VolumeNotFound(CellhopError, KeyError):
    http_status = 404

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "volume not found"


class VolumeFileNotFound(CellhopError, FileNotFoundError):
    http_status = 404


class VolumeInUse(CellhopError):
    """Deleting a volume that a container mounts."""

    http_status = 409


class VolumeConflict(CellhopError):
    """A path that is a folder where a file is wanted (or the reverse), or a folder that is not empty."""

    http_status = 409


class VolumeQuotaExceeded(CellhopError):
    http_status = 413


class VolumeTrashLeft(CellhopError):
    """Deleted data could not all be removed from disk; what is left is kept under a trash name."""

    http_status = 500
