"""Schemathesis hooks for Herald (loaded through SCHEMATHESIS_HOOKS by tests/api/schemathesis.rs).

Zaqar's topic PATCH takes JSON under its own media type,
application/openstack-messaging-v2.0-json-patch; schemathesis serializes it as JSON.
"""

import schemathesis

schemathesis.serializer.alias("application/openstack-messaging-v2.0-json-patch", "application/json")
