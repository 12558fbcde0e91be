"""gunicorn settings for the s3blobs registry, behind nginx (deploy/nginx/s3blobs.conf):

    gunicorn -c deploy/gunicorn.conf.py

The app is ``s3blobs.registry:create_app()``, configured by ``S3BLOBS_*``. Values
below can be changed by the environment variables named, or on the command line
(``--bind``, ``--workers`` ... win over this file).
"""

import multiprocessing
import os

wsgi_app = "s3blobs.registry:create_app()"

# Loopback: nginx in front terminates TLS.
bind = os.environ.get("S3BLOBS_BIND", "127.0.0.1:5000")

# Threads, because a registry mostly waits on S3 (and hashing releases the GIL).
# Each worker builds its own S3 client and Redis pool after the fork: no preload_app.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
threads = int(os.environ.get("S3BLOBS_THREADS", "8"))

# A gthread worker's main loop keeps beating while its threads serve requests, so
# ``timeout`` only restarts a stuck worker: a PATCH streaming many GiB for many
# minutes is not one. Its heartbeat file lives in memory, where a slow disk
# cannot stall it.
timeout = 60
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# Graceful shutdown (SIGTERM, or SIGHUP for a reload): stop accepting, then give the
# requests in flight this long to finish. An upload cut short stays resumable from
# its last completed request; one that finishes needs no resume at all.
graceful_timeout = int(os.environ.get("S3BLOBS_GRACEFUL_TIMEOUT", "300"))

# Longer than nginx's upstream keepalive_timeout (60 s), so nginx closes an idle
# connection first and never sends a request on one gunicorn is closing.
keepalive = 75

# The same proxies the app believes for X-Forwarded-* (S3BLOBS_TRUSTED_PROXIES):
# gunicorn reads X-Forwarded-Proto only from these.
forwarded_allow_ips = os.environ.get("S3BLOBS_TRUSTED_PROXIES", "")

# gunicorn 25.1 and later open a control socket at one path per user, where two
# instances on one machine would collide: manage them with signals instead.
control_socket_disable = True

errorlog = "-"
loglevel = os.environ.get("S3BLOBS_GUNICORN_LOG_LEVEL", "info")


def when_ready(server):  # gunicorn calls it in the master once it listens
    """With S3BLOBS_METRICS_ADDR and PROMETHEUS_MULTIPROC_DIR set, the master serves
    the metrics of every worker, and the listener outlives worker restarts."""
    from s3blobs.registry.metrics import gunicorn_when_ready

    gunicorn_when_ready(server)
