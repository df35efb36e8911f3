"""
Many daemons, one relay (SPEC §6): the cluster registry over Redis.

L{socktopus_tw.cluster.registry.ClusterRegistry} serves the same
L{socktopus_tw.relay.registry.IRegistry} as the registry of one process;
L{socktopus_tw.cluster.redis} is the connection to Redis it talks through,
and L{socktopus_tw.cluster.scripts} the Lua that runs each step there in one
round trip.
"""
