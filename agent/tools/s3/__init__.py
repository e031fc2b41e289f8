"""An S3-compatible server on loopback for the capture demo and tests (moto's standalone
server, from the ``tools`` extra).

Modules and their public names:

- ``local_server``: ``LocalS3Server``, ``S3ServerError``, ``ACCESS_KEY``, ``SECRET_KEY``,
  ``REGION``, ``moto_missing_reason``
"""
