"""Where a scheduled export (or a backup before a bulk apply) goes: a folder, SFTP or S3.

`destination_for(settings)` builds the `Destination` a `[[exports]] destination` (or a store's
`backup_destination`) describes; `deliver(local_file, name)` puts a finished file there whole or
not at all, `rotate(prefix, keep)` keeps the newest `keep` files of that export. `base` holds the
shared rules (names, retries, errors); docs/export.md (Destinations) is the operator's guide.

    destination = destination_for(export.destination)
    name = export_file_name(export.name, started, ".csv")
    delivered = await destination.deliver(local_file, name)
    removed = await destination.rotate(export.name, export.keep)
"""

from __future__ import annotations

from bridge_agent.config.exports import (
    DestinationSettings,
    FolderDestinationSettings,
    S3DestinationSettings,
    SftpDestinationSettings,
)
from bridge_agent.export.destinations.base import (
    Delivered,
    Destination,
    export_file_name,
    newest_first,
)
from bridge_agent.export.destinations.folder import FolderDestination

__all__ = [
    "Delivered",
    "Destination",
    "FolderDestination",
    "destination_for",
    "export_file_name",
    "newest_first",
]


def destination_for(settings: DestinationSettings) -> Destination:
    """The destination `settings` describe. SFTP and S3 import their clients only when used."""
    if isinstance(settings, FolderDestinationSettings):
        return FolderDestination(settings)
    if isinstance(settings, SftpDestinationSettings):
        from bridge_agent.export.destinations.sftp import SftpDestination  # noqa: PLC0415 - asyncssh only when used

        return SftpDestination(settings)
    if isinstance(settings, S3DestinationSettings):
        from bridge_agent.export.destinations.s3 import S3Destination  # noqa: PLC0415 - boto3 only when used

        return S3Destination(settings)
    raise TypeError(f"not a destination's settings: {type(settings).__name__}")
