"""The discovery documents (RFC 7643 §5 to §7): what this service provider supports, its
resource types and their schemas. The schemas are scim2-models' own (RFC 7643 §8.7),
cut to the attributes Bastion keeps."""

from __future__ import annotations

from functools import cache
from typing import Any

from scim2_models import EnterpriseUser, Group, User

from bastion.scim.service import ENTERPRISE_URN, GROUP_URN, MAX_COUNT, USER_URN

SPC_URN = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE_URN = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA_URN = "urn:ietf:params:scim:schemas:core:2.0:Schema"

# What Bastion keeps of each schema (the rest is not offered).
_USER_ATTRIBUTES = frozenset(
    {
        "userName",
        "name",
        "displayName",
        "nickName",
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
        "active",
        "emails",
        "phoneNumbers",
        "groups",
    }
)
_GROUP_ATTRIBUTES = frozenset({"displayName", "members"})
_ENTERPRISE_ATTRIBUTES = frozenset(
    {"employeeNumber", "costCenter", "organization", "division", "department"}
)


def _schema(model: Any, keep: frozenset[str], base_url: str) -> dict[str, Any]:
    doc: dict[str, Any] = model.to_schema().model_dump(mode="json", exclude_none=True)
    doc["attributes"] = [a for a in doc["attributes"] if a["name"] in keep]
    for attribute in doc["attributes"]:
        if attribute["name"] == "members":  # teams hold users only
            for sub in attribute.get("subAttributes", []):
                if sub["name"] == "$ref":
                    sub["referenceTypes"] = ["User"]
                if sub["name"] == "type":
                    sub["canonicalValues"] = ["User"]
    doc["schemas"] = [SCHEMA_URN]
    doc["meta"] = {"resourceType": "Schema", "location": f"{base_url}/Schemas/{doc['id']}"}
    return doc


@cache
def _schemas_template() -> tuple[tuple[Any, frozenset[str]], ...]:
    return (
        (User, _USER_ATTRIBUTES),
        (EnterpriseUser, _ENTERPRISE_ATTRIBUTES),
        (Group, _GROUP_ATTRIBUTES),
    )


def schemas(base_url: str) -> list[dict[str, Any]]:
    return [_schema(model, keep, base_url) for model, keep in _schemas_template()]


def resource_types(base_url: str) -> list[dict[str, Any]]:
    return [
        {
            "schemas": [RESOURCE_TYPE_URN],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "Bastion users",
            "schema": USER_URN,
            "schemaExtensions": [{"schema": ENTERPRISE_URN, "required": False}],
            "meta": {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/User"},
        },
        {
            "schemas": [RESOURCE_TYPE_URN],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Bastion teams",
            "schema": GROUP_URN,
            "schemaExtensions": [],
            "meta": {
                "resourceType": "ResourceType",
                "location": f"{base_url}/ResourceTypes/Group",
            },
        },
    ]


def service_provider_config(base_url: str, docs_url: str) -> dict[str, Any]:
    return {
        "schemas": [SPC_URN],
        "documentationUri": docs_url,
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_COUNT},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "SCIM token",
                "description": "A SCIM token from POST /v1/orgs/{org}/scim-tokens, sent as"
                " Authorization: Bearer bsp_…",
                "primary": True,
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base_url}/ServiceProviderConfig",
        },
    }
