"""
The daemon as it is deployed: C{twistd} and the C{socktopus} command as real
processes, systemd socket activation, nginx in front, TLS from the daemon.
"""
