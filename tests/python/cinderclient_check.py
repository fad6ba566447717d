#!/usr/bin/env python3
"""Drives the real, unmodified python-cinderclient against a running Herald.

Usage: cinderclient_check.py BASE_URL PROJECT SEED_JSON_FILE

SEED_JSON_FILE holds {"mine": [message, ...] (oldest first), "foreign": "<id>"}, the
messages the caller (tests/api/cinderclient.rs) created. Checks the `cinder` CLI in
noauth mode (message-list, message-show, message-delete: printed tables and exit codes)
and the Python API at 3.5 (filters, sort, limit, marker). Exits 1 on the first failure.
"""

import json
import os
import subprocess
import sys

from cinderclient import client as cinder_client
from cinderclient.contrib import noauth
from keystoneauth1 import session as ks_session

CINDER = os.path.join(os.path.dirname(sys.executable), "cinder")
LIST_COLUMNS = ["ID", "Resource Type", "Resource UUID", "Event ID", "User Message"]
SHOW_KEYS = {
    "created_at", "event_id", "guaranteed_until", "id", "message_level",
    "request_id", "resource_type", "resource_uuid", "user_message",
}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def cli(base, project, *args):
    cmd = [CINDER, "--os-auth-type", "noauth", "--os-endpoint", f"{base}/v3",
           "--os-user-id", "tester", "--os-project-id", project, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    for bad in ("downgrad", "Traceback"):
        check(bad not in p.stderr.lower() and bad not in p.stdout.lower(),
              f"{args}: unexpected {bad!r} in output:\n{p.stdout}\n{p.stderr}")
    return p


def table(out):
    """A prettytable as (header, rows)."""
    rows = [[c.strip() for c in line.strip()[1:-1].split("|")]
            for line in out.splitlines() if line.startswith("|")]
    check(rows, f"no table in output:\n{out}")
    return rows[0], rows[1:]


def check_cli(base, project, mine, foreign):
    # message-list: the CLI's columns, every message of the project, none of another's
    p = cli(base, project, "message-list")
    check(p.returncode == 0, f"message-list exit {p.returncode}: {p.stderr}")
    header, rows = table(p.stdout)
    check(header == LIST_COLUMNS, f"message-list columns {header}")
    by_id = {m["id"]: m for m in mine}
    check([r[0] for r in rows] == sorted(by_id), f"message-list ids {rows}")
    for r in rows:
        m = by_id[r[0]]
        check(r[1:] == [m["resource_type"], m.get("resource_uuid", ""), m["event_id"],
                        m["user_message"]], f"message-list row {r} vs {m}")
    check(foreign not in p.stdout, "another project's message is listed")

    # filters, sort and limit through the CLI (3.71 negotiated from discovery)
    p = cli(base, project, "message-list", "--event_id", mine[-1]["event_id"])
    _, rows = table(p.stdout)
    want = sorted(m["id"] for m in mine if m["event_id"] == mine[-1]["event_id"])
    check(p.returncode == 0 and [r[0] for r in rows] == want, f"--event_id: {rows}")
    p = cli(base, project, "message-list", "--sort", "created_at:asc", "--limit", "2")
    _, rows = table(p.stdout)
    check([r[0] for r in rows] == [m["id"] for m in mine[:2]], f"--sort --limit: {rows}")

    # message-show: every field but links
    m = mine[0]
    p = cli(base, project, "message-show", m["id"])
    check(p.returncode == 0, f"message-show exit {p.returncode}: {p.stderr}")
    header, rows = table(p.stdout)
    check(header == ["Property", "Value"], f"message-show header {header}")
    shown = dict(rows)
    check(set(shown) == SHOW_KEYS, f"message-show properties {sorted(shown)}")
    for k in SHOW_KEYS:
        check(shown[k] == str(m[k]), f"message-show {k}: {shown[k]!r} != {m[k]!r}")

    # another project's message: not found, exit 1
    p = cli(base, project, "message-show", foreign)
    check(p.returncode == 1, f"foreign message-show exit {p.returncode}")
    check("No message with a name or ID of" in p.stderr, f"foreign show: {p.stderr}")

    # message-delete, then it is gone
    gone = mine[-1]["id"]
    p = cli(base, project, "message-delete", gone)
    check(p.returncode == 0, f"message-delete exit {p.returncode}: {p.stderr}")
    p = cli(base, project, "message-show", gone)
    check(p.returncode == 1, f"show after delete exit {p.returncode}")
    p = cli(base, project, "message-list")
    check(gone not in p.stdout, "deleted message still listed")
    p = cli(base, project, "message-delete", gone)
    check(p.returncode == 1, f"second delete exit {p.returncode}")
    return mine[:-1]


def check_python_api(base, project, mine):
    auth = noauth.CinderNoAuthPlugin("tester", project, endpoint=f"{base}/v3")
    cs = cinder_client.Client("3.5", session=ks_session.Session(auth=auth))
    ids = [m["id"] for m in mine]

    got = [m.id for m in cs.messages.list()]
    check(got == list(reversed(ids)), f"default order is created_at desc: {got}")
    got = [m.id for m in cs.messages.list(sort="created_at:asc")]
    check(got == ids, f"sort asc: {got}")
    got = [m.id for m in cs.messages.list(sort="created_at:asc", limit=2)]
    check(got == ids[:2], f"limit: {got}")
    got = [m.id for m in cs.messages.list(sort="created_at:asc", marker=ids[0])]
    check(got == ids[1:], f"marker: {got}")
    r = mine[1]["resource_uuid"]
    got = [m.id for m in cs.messages.list(search_opts={"resource_uuid": r})]
    check(got == [m["id"] for m in reversed(mine) if m.get("resource_uuid") == r],
          f"resource_uuid filter: {got}")
    got = [m.id for m in cs.messages.list(search_opts={"message_level": "INFO"})]
    check(got == [], f"message_level filter: {got}")
    one = cs.messages.get(ids[0])
    check(one.event_id == mine[0]["event_id"] and one.created_at == mine[0]["created_at"],
          f"get: {one._info}")

    old = cinder_client.Client("3.3", session=ks_session.Session(auth=auth))
    got = [m.id for m in old.messages.list()]
    check(sorted(got) == sorted(ids), f"3.3 list: {got}")
    cs.messages.delete(ids[0])
    got = [m.id for m in cs.messages.list()]
    check(ids[0] not in got, "Python API delete")


def main():
    base, project, seed_file = sys.argv[1:4]
    with open(seed_file) as f:
        seed = json.load(f)
    remaining = check_cli(base, project, seed["mine"], seed["foreign"])
    check_python_api(base, project, remaining)
    print("all cinderclient checks passed")


if __name__ == "__main__":
    main()
