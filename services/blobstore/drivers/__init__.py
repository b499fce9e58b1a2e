"""Storage drivers, registered by name; importing this package registers the built-in ones."""
from services.blobstore.drivers import filesystem, inmemory  # noqa: F401  (registration)
from services.blobstore.drivers.base import (
    FileInfo,
    FileWriter,
    InvalidOffset,
    InvalidPath,
    PathNotFound,
    StorageDriver,
    StorageError,
    check_path,
    create,
)

__all__ = [
    "FileInfo",
    "FileWriter",
    "InvalidOffset",
    "InvalidPath",
    "PathNotFound",
    "StorageDriver",
    "StorageError",
    "check_path",
    "create",
]
