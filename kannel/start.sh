#!/bin/bash
# bearerbox, then smsbox once bearerbox accepts boxes; prints the access log (one line per
# SMS sent or received) and stops when either box exits. Console output is warnings only
# (Kannel debug output dumps the configuration, passwords included).
set -euo pipefail
conf="${KANNEL_CONF:-/etc/kannel/herald.conf}"
mkdir -p /var/log/kannel
touch /var/log/kannel/access.log
bearerbox -v 2 "$conf" &
until (exec 3<>/dev/tcp/127.0.0.1/13001) 2>/dev/null; do sleep 0.2; done
smsbox -v 2 "$conf" &
tail -n 0 -F /var/log/kannel/access.log &
wait -n
