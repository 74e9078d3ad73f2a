"""Emulators of the robot's devices that speak the real protocols (pty servo bus, DDS Go2) and synthetic
cameras, all optionally sharing one `World`."""
