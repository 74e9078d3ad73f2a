"""Engines that run a policy behind one interface (`PolicyEngine`). Importing this package imports neither
torch nor tensorrt: each engine module imports its own framework."""
