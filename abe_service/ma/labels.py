"""Authority-qualified attributes for the multi-authority scheme.

An attribute belongs to the authority named after its last `@`: `admin@hosp1`,
`role:doctor@hosp1`, `email:a@b.example@hosp2`, integer `age@hosp1=42` (key
labels `age@hosp1#>>j=...`). Authority ids are lower-case letters, digits, `_`
and `-` (1-64 characters): an attribute whose suffix is not such an id is not
qualified, and multi-authority policies and keys refuse it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from abe_service.policy import PolicyNode, parse
from abe_service.policy.language import Attr, Compare
from ehr_common.errors import PolicyError

AUTHORITY_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Most authorities one policy may name: each costs the encryptor a ledger lookup
#: (cached), a key check and a comb table (about 6 MB).
MAX_AUTHORITIES_PER_POLICY = 16


def check_authority_id(authority: str) -> str:
    if not isinstance(authority, str) or not AUTHORITY_RE.fullmatch(authority):
        raise PolicyError(
            f"invalid authority id {authority!r}: 1-64 lower-case letters, digits, '_' or '-'"
        )
    return authority


def authority_of_label(label: str) -> str | None:
    """The authority of a key label or policy attribute, or None if unqualified.
    Integer labels (`age@hosp1#>>3=5`) carry it in their name, before `#`."""
    head = label.split("#", 1)[0]
    _, at, authority = head.rpartition("@")
    return authority if at and AUTHORITY_RE.fullmatch(authority) else None


def _leaves(node: PolicyNode) -> Iterable[str]:
    if isinstance(node, Attr):
        yield node.label
    elif isinstance(node, Compare):
        yield node.name
    else:
        for c in node.children:
            yield from _leaves(c)


def policy_authorities(policy: str | PolicyNode) -> frozenset[str]:
    """The authorities a multi-authority policy needs keys of. PolicyError if any
    attribute is not qualified by an authority."""
    node = parse(policy) if isinstance(policy, str) else policy
    out = set()
    for leaf in _leaves(node):
        authority = authority_of_label(leaf)
        if authority is None:
            raise PolicyError(
                f"{leaf!r} is not qualified by an authority: a multi-authority policy writes "
                "`name@authority`, `name:value@authority` or `name@authority >= n`"
            )
        out.add(authority)
        if len(out) > MAX_AUTHORITIES_PER_POLICY:
            raise PolicyError(f"a policy may name at most {MAX_AUTHORITIES_PER_POLICY} authorities")
    return frozenset(out)
