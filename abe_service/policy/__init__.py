"""The attribute-policy language and its compiler to monotone span programs.

See POLICY_LANGUAGE.md in this folder for the grammar, examples and limits.
"""

from abe_service.policy.compiler import (
    MAX_ROWS,
    CompiledPolicy,
    KeyAttribute,
    attributes,
    compile_policy,
    expand_attributes,
    normal_form,
    parse_attribute,
)
from abe_service.policy.language import (
    INT_BITS,
    INT_MAX,
    MAX_ATTRIBUTE_CHARS,
    MAX_DEPTH,
    MAX_LEAVES,
    MAX_POLICY_CHARS,
    And,
    Attr,
    Compare,
    Node,
    Or,
    PolicyNode,
    Threshold,
    parse,
)

__all__ = [
    "INT_BITS",
    "INT_MAX",
    "MAX_ATTRIBUTE_CHARS",
    "MAX_DEPTH",
    "MAX_LEAVES",
    "MAX_POLICY_CHARS",
    "MAX_ROWS",
    "And",
    "Attr",
    "Compare",
    "CompiledPolicy",
    "KeyAttribute",
    "Node",
    "Or",
    "PolicyNode",
    "Threshold",
    "attributes",
    "compile_policy",
    "expand_attributes",
    "normal_form",
    "parse",
    "parse_attribute",
]
