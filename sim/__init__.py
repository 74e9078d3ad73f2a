"""The simulator: the emulated robot's tasks and scripted experts, the lockstep clock and devices, `sim record` and
`eval`. It drives the controller's own loops (onboard) against the device emulators (drivers/emulated)."""
