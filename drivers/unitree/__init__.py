"""Unitree Go2 high-level ("sport") control over Cyclone DDS: the vendor's IDL types, the RPC client and
the `Base` driver. Topics, API ids and limits follow the vendor SDK (see `sport_api.py`)."""
