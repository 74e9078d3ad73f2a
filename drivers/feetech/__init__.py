"""Feetech STS3215 bus servos: control table, bus layer over scservo_sdk, calibration, the SO-101 arm.

Ticks, 0.1 V and the other raw register units exist only inside this package; everything it hands out is SI.
"""
