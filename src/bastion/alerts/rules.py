"""Alert rule kinds, their parameters, and the validation of a rule's channels; the
channels' secrets (webhook signing keys) sealed under a root-derived key bound to the
organisation and the rule, so a ciphertext copied to another rule does not open.

Rule kinds (parameters, defaults):
- `failed_signins_account` — `threshold` (5) failed sign-ins for one user within
  `window_seconds` (900); attempts refused by throttling count as failed.
- `failed_signins_ip` — `threshold` (20) failed sign-ins from one address within
  `window_seconds` (900); likewise.
- `new_network_signin` — a user signs in from a network (IPv4 /24, IPv6 /48) none of
  their sign-ins used in the last `lookback_days` (90); a first sign-in is no alert.
- `not_found_burst` — `threshold` (50) not-found answers to one principal within
  `window_seconds` (300), counted from its `authz.not_found` events (enumeration).
- `access_spike` — `threshold` (100) data-access events (`event_types`) by one principal
  within `window_seconds` (300).
- `permission_change` — role, grant, key and user-role changes; a burst by one actor
  within `window_seconds` (300) is one alert.
- `data_export` — audit exports; a burst by one actor within `window_seconds` is one.
- `sink_failing` — an audit sink (an integration) has failed for `after_seconds` (600);
  resolved automatically when it delivers again.
- `api_key_new_network` — an API key is used from a network (IPv4 /24, IPv6 /48) it was
  never used from before (its first use sets the baseline).
- `approval_requested` — an agent's tool call needs human approval (one alert per
  request): how approvers hear of it by email or Slack.
- `approval_pending` — an agent's tool call has waited for human approval longer than
  `after_seconds` (900); one alert per approval, resolved when it is decided or expires.
- `mfa_failures` — `threshold` (5) wrong second-factor codes (sign-in, confirmation or
  step-up) by one person within `window_seconds` (900).
- `mfa_change` — a factor confirmed, removed or reset, new recovery codes, a recovery
  code used; a burst by one actor within `window_seconds` (300) is one alert.
- `step_up_refused` — `threshold` (3) actions refused for a stale verification by one
  person within `window_seconds` (300).
- `sso_failures` — `threshold` (10) refused SSO sign-ins (`sso.signin_failed`) in the
  organisation within `window_seconds` (300); one alert per burst.
- `scim_admin_deprovisioned` — an admin deactivated or deleted by SCIM (the identity
  provider): one alert per de-provisioned admin.
- `integration_disconnected` — an OAuth integration's token refresh was refused by its
  provider (`integration.disconnected`): one alert per integration until resolved.
- `control_failing` — a compliance control starts failing (`compliance_control.failing`,
  from the evaluation of live state), for the `frameworks` listed (all when empty); one
  alert per control, resolved when it passes again.
- `access_review_due` — reviewers of an open access review are reminded
  (`access_review.reminder`, once a day until its due date); one alert per reminder.
- `encryption_key_unavailable` — the organisation's customer-managed key refused, could
  not be reached or was destroyed (`org.encryption_key.unavailable`): one alert until
  the key answers again (`org.encryption_key.restored` resolves it).

Webhook and Slack destinations pass the SSRF guard when the rule is saved; plain
http:// only to destinations in `BASTION_OUTBOUND_PLAINTEXT_ALLOW` (checked again for
every send, see `bastion.alerts.deliver`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from bastion.core.errors import InvalidInput
from bastion.core.keyring import Keyring, seal, unseal
from bastion.core.netguard import OutboundRefused, check_plaintext, vetted_addresses

DEFAULTS: dict[str, dict[str, Any]] = {
    "failed_signins_account": {"threshold": 5, "window_seconds": 900},
    "failed_signins_ip": {"threshold": 20, "window_seconds": 900},
    "new_network_signin": {"lookback_days": 90},
    "not_found_burst": {"threshold": 50, "window_seconds": 300},
    "access_spike": {
        "threshold": 100,
        "window_seconds": 300,
        "event_types": ["audit.exported", "secret.revealed", "document.read"],
    },
    "permission_change": {"window_seconds": 300},
    "data_export": {"window_seconds": 300},
    "sink_failing": {"after_seconds": 600},
    "api_key_new_network": {},
    "approval_pending": {"after_seconds": 900},
    "approval_requested": {},
    "mfa_failures": {"threshold": 5, "window_seconds": 900},
    "mfa_change": {"window_seconds": 300},
    "step_up_refused": {"threshold": 3, "window_seconds": 300},
    "sso_failures": {"threshold": 10, "window_seconds": 300},
    "scim_admin_deprovisioned": {},
    "integration_disconnected": {},
    "control_failing": {"frameworks": []},
    "access_review_due": {},
    "encryption_key_unavailable": {},
}

_PURPOSE = "alert-channel-secrets:v1"


def _aad(org_id: str, rule_id: str) -> bytes:
    return f"alert-rule|{org_id}|{rule_id}".encode()


def seal_secrets(
    keys: Keyring, org_id: str, rule_id: str, secrets: Mapping[str, str]
) -> tuple[int, bytes]:
    """Encrypt a rule's channel secrets (by channel index); returns (key version,
    ciphertext) for the rule's row."""
    return seal(keys, _PURPOSE, json.dumps(secrets).encode(), _aad(org_id, rule_id))


def open_secrets(
    keys: Keyring, org_id: str, rule_id: str, key_version: int | None, ciphertext: bytes
) -> dict[str, str]:
    """The channel secrets `seal_secrets` sealed for this org and rule."""
    secrets: dict[str, str] = json.loads(
        unseal(keys, _PURPOSE, key_version, ciphertext, _aad(org_id, rule_id))
    )
    return secrets


def validate_params(kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` over the kind's defaults; an unknown name or a bad value is refused
    before the rule is stored, so evaluation never meets one."""
    defaults = DEFAULTS[kind]
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        # The parameters it takes, not the ones it was given: errors echo no input.
        raise InvalidInput.field("params", f"{kind} takes only {', '.join(defaults) or 'none'}")
    params = {**defaults, **given}
    for name in ("threshold", "window_seconds", "lookback_days", "after_seconds"):
        if name in params and (not isinstance(params[name], int) or params[name] < 1):
            raise InvalidInput.field(f"params.{name}", "must be a positive integer")
    if "frameworks" in params and (
        not isinstance(params["frameworks"], list)
        or not all(isinstance(t, str) for t in params["frameworks"])
    ):
        raise InvalidInput.field("params.frameworks", "must be a list of framework ids")
    if "event_types" in params and (
        not isinstance(params["event_types"], list)
        or not all(isinstance(t, str) for t in params["event_types"])
    ):
        raise InvalidInput.field("params.event_types", "must be a list of event types")
    return params


def keep_secrets(
    given: Sequence[Mapping[str, Any]],
    current: Sequence[Mapping[str, Any]],
    secrets: Mapping[str, str],
) -> list[dict[str, Any]]:
    """`given` channels (an update), where a webhook channel without a `secret` takes the
    saved secret of the current webhook channel with the same URL (none: it stays
    without one, and `validate_channels` refuses it)."""
    saved = {
        str(c.get("url")): secrets[str(i)]
        for i, c in enumerate(current)
        if c.get("type") == "webhook" and str(i) in secrets
    }
    channels: list[dict[str, Any]] = []
    for channel in given:
        entry = dict(channel)
        url = entry.get("url")
        if entry.get("type") == "webhook" and "secret" not in entry and str(url) in saved:
            entry["secret"] = saved[str(url)]
        channels.append(entry)
    return channels


def validate_channels(
    channels: Sequence[Mapping[str, Any]], allow: Sequence[str], plaintext: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Validated channels without secrets, and the secrets by channel index."""
    public: list[dict[str, Any]] = []
    secrets: dict[str, str] = {}
    for i, channel in enumerate(channels):
        field = f"channels[{i}]"
        kind = channel.get("type")
        if kind in ("webhook", "slack"):
            url = str(channel.get("url") or "")
            parsed = httpx.URL(url) if url else None
            if parsed is None or parsed.scheme not in ("https", "http") or not parsed.host:
                raise InvalidInput.field(f"{field}.url", "must be an absolute https:// URL")
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                addresses = vetted_addresses(parsed.host, port, allow)
                if parsed.scheme != "https":
                    check_plaintext(parsed.host, port, plaintext, addresses)
            except OutboundRefused as exc:
                raise InvalidInput.field(f"{field}.url", exc.reason) from None
            entry: dict[str, Any] = {"type": kind, "url": url}
            if kind == "webhook":
                secret = channel.get("secret")
                if not isinstance(secret, str) or not secret.startswith("whsec_"):
                    raise InvalidInput.field(f"{field}.secret", "a whsec_… signing secret")
                secrets[str(i)] = secret
            public.append(entry)
        elif kind == "email":
            to = channel.get("to")
            if not isinstance(to, list) or not to or not all("@" in str(a) for a in to):
                raise InvalidInput.field(f"{field}.to", "a list of email addresses")
            public.append({"type": "email", "to": [str(a) for a in to]})
        else:
            raise InvalidInput.field(f"{field}.type", "one of webhook, slack, email")
    return public, secrets
