"""The envelope every command passes: limits, rate limits, NaN handling, health and staleness monitors,
latched faults, safe-stop and e-stop sequences."""
