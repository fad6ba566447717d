"""A native NATS client (nats-py) with a Keystone token as its password, for
tests/keystone/callout.rs. Prints one JSON object:

- own_seq: the JetStream sequence of a message published to OWN_SUBJECT (or an error);
- errors: the asynchronous errors the server sent (permissions violations) after a core
  publish to FOREIGN_SUBJECT and a subscription to FOREIGN_LISTEN, each confirmed by a
  flush (the server answers PING after it processed what came before);
- bad_token, bad_token_errors: how a connection with BAD_TOKEN ended.

Usage: nats_keystone_client.py URL TOKEN BAD_TOKEN OWN_SUBJECT FOREIGN_SUBJECT FOREIGN_LISTEN
"""

import asyncio
import json
import sys

import nats


async def until(check, timeout=10.0):
    """Polls `check` until it holds or `timeout` passes: nats-py runs the error callback
    as a task of its own, which may not have run yet when a flush returns."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


async def main(url, token, bad_token, own, foreign, foreign_listen):
    out = {"errors": []}

    async def on_error(e):
        out["errors"].append(str(e))

    nc = await nats.connect(
        url,
        user="keystone",
        password=token,
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=5,
    )
    try:
        ack = await nc.jetstream().publish(own, b'{"native": true}', timeout=5)
        out["own_seq"] = ack.seq
    except Exception as e:  # noqa: BLE001 - reported to the test
        out["own_seq"] = f"{type(e).__name__}: {e}"
    await nc.publish(foreign, b'{"native": "foreign"}')
    await nc.flush(timeout=5)
    await until(lambda: any("publish" in e for e in out["errors"]))
    await nc.subscribe(foreign_listen)
    await nc.flush(timeout=5)
    await until(lambda: any("subscription" in e for e in out["errors"]))
    await nc.close()

    bad_errors = []

    async def on_bad_error(e):
        bad_errors.append(str(e))

    try:
        bad = await nats.connect(
            url,
            user="keystone",
            password=bad_token,
            error_cb=on_bad_error,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=5,
        )
        out["bad_token"] = "connected"
        await bad.close()
    except Exception as e:  # noqa: BLE001 - reported to the test
        out["bad_token"] = f"{type(e).__name__}: {e}"
    out["bad_token_errors"] = bad_errors
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
