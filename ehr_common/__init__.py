"""The ground every ehr-abe package stands on: the API contract (generated
stubs), typed errors and their gRPC mapping, caller identity, configuration
and paths. It imports no other ehr-abe package; the services and the shell
(`ehr_abe`: CLI, server, demo, infrastructure) import it, never the reverse."""
