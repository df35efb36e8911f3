# syntax=docker/dockerfile:1
# The Socktopus daemon in a container: the README's install and run command
# on a slim Python, as a non-root user, its data in a volume.
#
#   docker build -t socktopus .
#   docker run -p 8080:8080 -v socktopus-data:/var/lib/socktopus \
#       -e DEMO_SOCKTOPUS_SECRET=change-me socktopus
#
# Settings come from the environment (SOCKTOPUS_<OPTION>, PORT, and one
# <APP>_SOCKTOPUS_SECRET per app), or as options after the image name:
# `docker run socktopus /opt/socktopus/.venv/bin/twistd -n --pidfile= socktopus --help`.
# compose.yaml runs it with MariaDB. tests/deploy/test_container.py checks
# these commands against the README's.

# The Python the suite runs on, on a pinned Debian release. Every dependency
# has a wheel for it, so no compiler is needed.
FROM python:3.11-slim-bookworm

# Log lines reach `docker logs` as they are written; pip keeps no cache.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The README's "Run it" install, in a checkout at /opt/socktopus (.dockerignore
# sends only what `pip install .` reads). twistd --help writes Twisted's plugin
# cache now, as root, as "Operating it" says: the daemon's user cannot write
# into the virtualenv, and would log that it cannot at every start.
WORKDIR /opt/socktopus
COPY . .
RUN python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/twistd --help >/dev/null

# A system user with a fixed uid, so a volume's owner is the same in every
# build and an orchestrator can see that the image does not run as root.
RUN groupadd --system --gid 10001 socktopus \
    && useradd --system --uid 10001 --gid socktopus --no-create-home \
        --home-dir /var/lib/socktopus --shell /usr/sbin/nologin socktopus \
    && install -d -m 0700 -o socktopus -g socktopus /var/lib/socktopus

# The working directory is the data, as StateDirectory= is for the systemd
# unit: the default --database sqlite:socktopus.sqlite3 lands here, and so
# would a .env file. A new volume starts as a copy of this directory, owner
# and mode included, so the daemon's user can write to it.
WORKDIR /var/lib/socktopus
VOLUME /var/lib/socktopus
USER 10001:10001

# The daemon listens on tcp:$PORT (all interfaces) when --listen and
# SOCKTOPUS_LISTEN are not given.
ENV PORT=8080
EXPOSE 8080

# No curl in a slim image: the venv's Python asks GET /health on $PORT, and an
# error status, a refused connection or a timeout is a non-zero exit. With
# SOCKTOPUS_LISTEN or --listen elsewhere, set PORT to a port it listens on
# (or override the check).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/socktopus/.venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=4)"]

# The README's run command. --pidfile= : no twistd.pid, which would otherwise
# be written in the volume; after a SIGKILL (an OOM kill, docker kill) the next
# start would read pid 1 from it, find pid 1 alive (itself) and refuse to
# start. twistd handles SIGTERM (docker stop) as PID 1: CLOSE to every
# client, exit 0.
CMD ["/opt/socktopus/.venv/bin/twistd", "-n", "--pidfile=", "socktopus"]
