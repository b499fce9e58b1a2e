"""The blobstore: owns bytes, upload sessions, digests and the small records that name them."""
