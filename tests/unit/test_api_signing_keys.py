"""Rotating webhook signing keys through the admin API, without a restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks

from tests.unit.test_api_harness import EVENTS, Harness, assert_envelope, running_api
from timefuse.plugins.signing_keys import SigningKeyring
from timefuse.plugins.webhook_signing import WebhookSigner
from timefuse.webhooks import new_secret, new_signing_key, verify

KEYS = f"{EVENTS}/admin/signing-keys"
FIXED_SECRET = new_secret()
OUT_FIELDS = {
    "id", "source", "algorithm", "origin", "active", "not_before", "expires_at", "created_at",
    "public_key",
}  # fmt: skip


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "signing-keys.json"


@pytest.fixture
async def api(tmp_path: Path, keyring_path: Path) -> AsyncIterator[Harness]:
    env = {
        "TIMEFUSE_SIGNING_KEYS_FILE": str(keyring_path),
        "TIMEFUSE_WEBHOOK_SECRETS": json.dumps({"legacy": [FIXED_SECRET]}),
    }
    async with running_api(tmp_path, env=env) as harness:
        yield harness


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def signed_now(signer: WebhookSigner, source: str) -> dict[str, str]:
    timestamp = int(datetime.now(UTC).timestamp())
    signature = signer.signature(source, "msg_1", timestamp, b"{}")
    assert signature is not None
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


async def add(api: Harness, **body: Any) -> dict[str, Any]:
    response = await api.client.post(KEYS, json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_a_generated_key_is_shown_once_and_signs_at_once(
    api: Harness, keyring_path: Path
) -> None:
    # A dispatcher elsewhere, sharing the keyring file.
    signer = WebhookSigner({}, SigningKeyring(keyring_path, reload_interval=0))

    response = await api.client.post(KEYS, json={"source": "billing"})

    assert response.status_code == 201, response.text
    assert_envelope(response.json(), success=True)
    data = response.json()["data"]
    assert set(data) == OUT_FIELDS | {"secret"}
    assert (data["source"], data["algorithm"], data["origin"], data["active"]) == (
        "billing", "v1", "keyring", True
    )  # fmt: skip
    assert "shown this once" in response.json()["message"]
    secret = data["secret"]
    standardwebhooks.Webhook(secret).verify(b"{}", signed_now(signer, "billing"))
    listed = (await api.client.get(KEYS)).text
    assert secret not in listed
    assert data["id"] in listed


async def test_an_overlap_then_retiring_the_old_key_completes_a_rotation(
    api: Harness, keyring_path: Path
) -> None:
    signer = WebhookSigner({}, SigningKeyring(keyring_path, reload_interval=0))
    old = await add(api, source="billing")
    new = await add(api, source="billing")

    during = signed_now(signer, "billing")
    standardwebhooks.Webhook(old["secret"]).verify(b"{}", during)
    standardwebhooks.Webhook(new["secret"]).verify(b"{}", during)

    response = await api.client.delete(f"{KEYS}/{old['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["id"] == old["id"]
    after = signed_now(signer, "billing")
    standardwebhooks.Webhook(new["secret"]).verify(b"{}", after)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(old["secret"]).verify(b"{}", after)
    assert (await api.client.delete(f"{KEYS}/{old['id']}")).status_code == 404


async def test_an_ed25519_key_gives_receivers_only_its_public_key(
    api: Harness, keyring_path: Path
) -> None:
    data = await add(api, source="billing", algorithm="v1a")

    assert data["secret"] is None
    assert data["public_key"].startswith("whpk_")
    signer = WebhookSigner({}, SigningKeyring(keyring_path, reload_interval=0))
    verify(b"{}", signed_now(signer, "billing"), data["public_key"])
    assert "whsk_" not in (await api.client.get(KEYS)).text


async def test_a_supplied_secret_is_used_and_never_echoed(api: Harness, keyring_path: Path) -> None:
    secret = new_secret()
    signing_key, public = new_signing_key()

    for given in (secret, signing_key):
        response = await api.client.post(KEYS, json={"source": "billing", "secret": given})
        assert response.status_code == 201, response.text
        assert given not in response.text
        assert response.json()["data"]["secret"] is None

    signer = WebhookSigner({}, SigningKeyring(keyring_path, reload_interval=0))
    headers = signed_now(signer, "billing")
    standardwebhooks.Webhook(secret).verify(b"{}", headers)
    verify(b"{}", headers, public)


async def test_dated_keys_are_listed_with_whether_they_sign_now(api: Harness) -> None:
    later = await add(api, source="billing", not_before=at(3600), expires_at=at(7200))
    ending = await add(api, source="billing", expires_at=at(60))

    response = await api.client.get(KEYS, params={"source": "billing"})

    listed = {key["id"]: key for key in response.json()["data"]}
    assert set(listed) == {later["id"], ending["id"]}
    assert listed[later["id"]]["active"] is False
    assert listed[ending["id"]]["active"] is True
    assert all(set(key) == OUT_FIELDS for key in listed.values())


async def test_changing_dates_ends_an_overlap_at_a_set_time(api: Harness) -> None:
    key = await add(api, source="billing", not_before=at(-60))
    end = at(3600)

    response = await api.client.patch(f"{KEYS}/{key['id']}", json={"expires_at": end})

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert datetime.fromisoformat(data["expires_at"]) == datetime.fromisoformat(end)
    assert data["not_before"] == key["not_before"]  # left out: kept
    cleared = await api.client.patch(f"{KEYS}/{key['id']}", json={"not_before": None})
    assert cleared.json()["data"]["not_before"] is None
    assert cleared.json()["data"]["expires_at"] == data["expires_at"]


async def test_settings_keys_are_listed_but_change_only_with_the_setting(api: Harness) -> None:
    listed = (await api.client.get(KEYS, params={"source": "legacy"})).json()["data"]

    [fixed] = listed
    assert (fixed["id"], fixed["origin"], fixed["active"]) == (
        "settings:legacy:0",
        "settings",
        True,
    )
    assert FIXED_SECRET not in json.dumps(listed)
    for response in (
        await api.client.delete(f"{KEYS}/{fixed['id']}"),
        await api.client.patch(f"{KEYS}/{fixed['id']}", json={"expires_at": at(60)}),
    ):
        assert response.status_code == 409
        assert response.json()["error_code"] == "SIGNING_KEY_FROM_SETTINGS"


async def test_a_star_key_is_added_with_a_warning(api: Harness) -> None:
    response = await api.client.post(KEYS, json={"source": "*"})

    assert response.status_code == 201
    assert "the receiver of any one of them can sign" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": ""}, "source"),
        ({"source": "   "}, "source"),
        ({"source": "billing", "secret": "whsec_c2hvcnQ="}, "secret"),
        ({"source": "billing", "secret": "sk_live_not_a_webhook_secret"}, "secret"),
        ({"source": "billing", "secret": FIXED_SECRET, "algorithm": "v1a"}, "algorithm"),
        ({"source": "billing", "algorithm": "v2"}, "algorithm"),
        ({"source": "billing", "not_before": "tomorrow"}, "not_before"),
        ({"source": "billing", "not_before": at(60), "expires_at": at(30)}, "expires_at"),
        ({"source": "billing", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"source": "billing", "colour": "blue"}, "colour"),
    ],
)
async def test_a_bad_key_is_a_400_naming_the_field_never_quoting_a_secret(
    api: Harness, body: dict[str, Any], field: str
) -> None:
    response = await api.client.post(KEYS, json=body)

    assert response.status_code == 400, response.text
    named = [f"{error['field']}: {error['message']}" for error in response.json()["errors"]]
    assert any(field in text for text in named), named
    secret = body.get("secret")
    if secret is not None:
        assert secret not in response.text


async def test_unknown_keys_answer_404(api: Harness) -> None:
    for response in (
        await api.client.delete(f"{KEYS}/key_nope"),
        await api.client.patch(f"{KEYS}/key_nope", json={"expires_at": None}),
    ):
        assert response.status_code == 404
        assert response.json()["error_code"] == "SIGNING_KEY_NOT_FOUND"


async def test_without_a_keyring_file_keys_are_listed_but_not_added(tmp_path: Path) -> None:
    env = {"TIMEFUSE_WEBHOOK_SECRETS": json.dumps({"legacy": [FIXED_SECRET]})}
    async with running_api(tmp_path, env=env) as api:
        listed = await api.client.get(KEYS)
        added = await api.client.post(KEYS, json={"source": "billing"})

    assert [key["id"] for key in listed.json()["data"]] == ["settings:legacy:0"]
    assert added.status_code == 409
    assert added.json()["error_code"] == "SIGNING_KEYRING_NOT_CONFIGURED"
    assert "TIMEFUSE_SIGNING_KEYS_FILE" in added.json()["message"]


async def test_a_keyring_file_spoilt_on_disk_is_a_503_not_a_lost_keyring(
    api: Harness, keyring_path: Path
) -> None:
    key = await add(api, source="billing")
    with open(keyring_path, "w") as file:
        file.write("{ spoilt by hand")

    response = await api.client.post(KEYS, json={"source": "billing"})

    assert response.status_code == 503
    assert "keyring file can't be changed" in response.json()["message"]
    with open(keyring_path) as file:
        assert file.read() == "{ spoilt by hand"  # left for the operator to mend
    assert key["secret"] not in response.text
