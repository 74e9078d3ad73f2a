"""The onboard process: configuration, CLI, runtime, the two loops, chunk schedule, telemetry, service."""
