"""IoMT edge gateway: MQTT readings in, validated FHIR R4 Observations sealed into
segments, durably spooled, streamed to the StorageService (see edge.gateway)."""
