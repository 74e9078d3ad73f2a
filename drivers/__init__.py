"""Talking to hardware (servo bus, Go2 over DDS, RealSense cameras) and to its emulators.

Drivers know nothing of policies. They exchange the plain data types of `drivers.types`
and implement the protocols of `drivers.protocols`.
"""
