"""Time-bound multi-authority keys: validity as integer attributes, and the
condition a storage service ANDs into each new record's policy.

Every key an authority issues carries `valid_from@<authority>=<day>` and
`valid_until@<authority>=<day>` (days since 1970-01-01 UTC, integer attributes:
abe_service/policy/integers.py). A record written on day D gets, for each
authority a, the condition `valid_until@a >= D` on the part of its policy that
a's attributes satisfy, so a key whose validity ended before D cannot open it.
Renewal issues only the two time attributes again, for the same GID.

The condition is attached to the largest subtrees whose attributes all belong
to one authority: `(role:doctor@hosp1 and dept:icu@hosp1) or role:nurse@hosp2`
becomes `(role:doctor@hosp1 and dept:icu@hosp1 and valid_until@hosp1 >= D) or
(role:nurse@hosp2 and valid_until@hosp2 >= D)`. An `and` over the whole policy
would be wrong for `or` across authorities (it would demand keys of both).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from abe_service.ma.labels import authority_of_label
from abe_service.policy.language import (
    And,
    Attr,
    Compare,
    Or,
    PolicyNode,
    Threshold,
    normalize,
    parse,
    render,
)
from ehr_common.errors import InvalidArgument

VALID_FROM = "valid_from"
VALID_UNTIL = "valid_until"
EPOCH = date(1970, 1, 1)


def day_number(when: date | datetime) -> int:
    """Days since 1970-01-01 (UTC for datetimes)."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise InvalidArgument("a time must be timezone-aware")
        when = when.astimezone(UTC).date()
    return (when - EPOCH).days


def validity_attributes(authority: str, valid_from: int, valid_until: int) -> list[str]:
    if not 0 <= valid_from <= valid_until:
        raise InvalidArgument(
            "a validity period needs 0 <= valid_from <= valid_until (day numbers)"
        )
    return [f"{VALID_FROM}@{authority}={valid_from}", f"{VALID_UNTIL}@{authority}={valid_until}"]


def is_validity_attribute(attribute: str) -> bool:
    name = attribute.split("=", 1)[0].split("#", 1)[0].rsplit("@", 1)[0]
    return name in (VALID_FROM, VALID_UNTIL)


def _authority(node: PolicyNode) -> str | None:
    """The one authority all of node's attributes belong to, or None if several."""
    if isinstance(node, Attr):
        return authority_of_label(node.label)
    if isinstance(node, Compare):
        return authority_of_label(node.name)
    found = {_authority(c) for c in node.children}
    return found.pop() if len(found) == 1 else None


def _attach(node: PolicyNode, day: int) -> PolicyNode:
    authority = _authority(node)
    if authority is not None:
        cond = Compare(f"{VALID_UNTIL}@{authority}", ">=", day)
        kids = node.children if isinstance(node, And) else (node,)
        return And((*kids, cond))
    if isinstance(node, Attr | Compare):  # unqualified: refused later by the encryptor
        return node
    kids = tuple(_attach(c, day) for c in node.children)
    if isinstance(node, Threshold):
        return Threshold(node.k, kids)
    return And(kids) if isinstance(node, And) else Or(kids)


def with_validity(policy: str, day: int) -> str:
    """`policy` with `valid_until@a >= day` attached for each authority a (see above)."""
    if not 0 <= day < 1 << 32:
        raise InvalidArgument("a day number is 0 .. 2^32-1")
    return render(_attach(parse(policy), day))


def _is_condition(node: PolicyNode) -> bool:
    """`valid_until >= D` or `valid_until@a >= D`: what with_validity (or a router's
    FAME validity) attaches."""
    return (
        isinstance(node, Compare)
        and node.op == ">="
        and node.name.rsplit("@", 1)[0] == VALID_UNTIL
        and (node.name == VALID_UNTIL or authority_of_label(node.name) is not None)
    )


def _strip(node: PolicyNode, days: set[int]) -> PolicyNode | None:
    """`node` without the validity conditions under its `and` gates (their days go
    into `days`); None if nothing else is left."""
    if isinstance(node, Attr | Compare):
        return node
    kids: list[PolicyNode] = []
    for c in node.children:
        if isinstance(node, And) and _is_condition(c):
            assert isinstance(c, Compare)
            days.add(c.value)
            continue
        sub = _strip(c, days)
        if sub is None:
            return None
        kids.append(sub)
    if not kids:
        return None
    if isinstance(node, Threshold):
        return Threshold(node.k, tuple(kids))
    if len(kids) == 1:
        return kids[0]
    return And(tuple(kids)) if isinstance(node, And) else Or(tuple(kids))


def validity_day(policy: str, *, multi_authority: bool) -> int | None:
    """The day D if `policy` is exactly what the storage service makes of some policy
    on day D (with_validity for multi-authority policies; `... and valid_until >= D`
    for FAME's), else None. Used to refuse envelopes built elsewhere that would
    skip the condition, or attach it where an expired key is not stopped."""
    days: set[int] = set()
    stripped = _strip(parse(policy), days)
    if stripped is None or len(days) != 1:
        return None
    day = days.pop()
    if multi_authority:
        expected = _attach(stripped, day)
    else:
        expected = And((stripped, Compare(VALID_UNTIL, ">=", day)))
    if render(normalize(expected)) != render(normalize(parse(policy))):
        return None
    return day
