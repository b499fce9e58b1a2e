"""Storage drivers, registered by name; importing this package registers the built-in ones."""

from typing import Any

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
    register,
)


@register("s3")
def _create_s3(parameters: dict[str, Any]) -> StorageDriver:
    # Imported on first use: boto3 adds a sixth of a second to every start that does not need it.
    from services.blobstore.drivers import s3

    return s3.create_driver(parameters)


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
