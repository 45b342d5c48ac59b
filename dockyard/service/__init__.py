"""The Dockyard service: ingest, delivery, feedback, journal."""
