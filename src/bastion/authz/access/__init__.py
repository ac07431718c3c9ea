"""Sources, documents, their ACLs and metadata rules, and the questions asked of the
engine (check, check-batch, filter, list, search-filter, acl-tokens).

The public surface callers use as `access.<name>` (`from bastion.authz import access`);
the code lives by concern in `manage` (the rows administrators write), `questions`
(answers from the engine's index) and `rights` (`SourceRights`, for agents).
"""

from bastion.authz.access.manage import (
    AclSpec,
    acl_of,
    create_document,
    create_rule,
    create_source,
    delete_acl,
    delete_document,
    delete_rule,
    existing_source_ids,
    get_document,
    list_rules,
    list_sources,
    put_acl,
    update_document,
)
from bastion.authz.access.questions import (
    Asked,
    Question,
    Sessions,
    check,
    document_tokens,
    filter_ids,
    list_ids,
    parse_resource,
    require_stats,
    search_filter,
)
from bastion.authz.access.rights import SourceRights

__all__ = [
    "AclSpec",
    "Asked",
    "Question",
    "Sessions",
    "SourceRights",
    "acl_of",
    "check",
    "create_document",
    "create_rule",
    "create_source",
    "delete_acl",
    "delete_document",
    "delete_rule",
    "document_tokens",
    "existing_source_ids",
    "filter_ids",
    "get_document",
    "list_ids",
    "list_rules",
    "list_sources",
    "parse_resource",
    "put_acl",
    "require_stats",
    "search_filter",
    "update_document",
]
