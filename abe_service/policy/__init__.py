"""The attribute-policy language and its compiler to monotone span programs.

See POLICY_LANGUAGE.md in this folder for the grammar and examples.
"""

from abe_service.policy.compiler import (
    CompiledPolicy,
    attributes,
    compile_policy,
    expand_attributes,
    normal_form,
    parse_attribute,
)
from abe_service.policy.language import And, Attr, Compare, Node, Or, Threshold, parse

__all__ = [
    "And",
    "Attr",
    "Compare",
    "CompiledPolicy",
    "Node",
    "Or",
    "Threshold",
    "attributes",
    "compile_policy",
    "expand_attributes",
    "normal_form",
    "parse",
    "parse_attribute",
]
