"""S3 driver: Amazon S3 and S3-compatible stores (MinIO, Ceph, moto), through boto3.

One job per module:

- ``driver``: the StorageDriver, mapping paths to keys and operations to requests;
- ``multipart``: appendable writes, a multipart upload plus a marker object per path being written;
- ``locks``: locks shared between processes, as objects written with conditional requests;
- ``bucket``: requests on the bucket, boto3's errors turned into StorageErrors;
- ``client``: the boto3 client built from the ``storage.s3`` parameters.

Imported on first use (drivers/__init__.py): boto3 adds a sixth of a second to every start that
does not need it.
"""

from services.blobstore.drivers.s3.driver import S3Driver, create_driver

__all__ = ["S3Driver", "create_driver"]
