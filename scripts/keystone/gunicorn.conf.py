# Gunicorn settings for Keystone, shared by scripts/keystone-dev and tests/keystone.
# Keystone finds its config file through OS_KEYSTONE_CONFIG_FILES (set by the caller).
import os
import sys

# oslo.config parses sys.argv when Keystone configures itself: gunicorn's own arguments
# must not reach it.
sys.argv = sys.argv[:1]

bind = os.environ.get("KEYSTONE_BIND", "127.0.0.1:5000")
wsgi_app = "keystone.wsgi.api:application"
# One worker, one thread: with more threads a revoked token was intermittently still
# accepted (each thread's token cache answers for itself).
workers = 1
threads = 1
timeout = 120
