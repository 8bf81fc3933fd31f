"""Local infrastructure for development and tests: MinIO and a Fabric network."""
