"""Hostile input: whatever text arrives, the policy package answers with a value or a
typed PolicyError (never IndexError, ValueError, AssertionError, RecursionError),
and key labels from user attributes can never impersonate integer labels."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abe_service.policy import (
    MAX_ATTRIBUTE_CHARS,
    MAX_POLICY_CHARS,
    attributes,
    compile_policy,
    expand_attributes,
    normal_form,
    parse_attribute,
)
from ehr_common.errors import InvalidArgument, PolicyError

# Pieces that reach every tokenizer branch, including non-ASCII look-alikes
# (Arabic-Indic and superscript digits, accented and full-width letters).
TOKENS = [
    "a", "role:doctor", "dept:", ":", "age", "and", "AND", "or", "Or", "of", "not", "(", ")",
    ",", ">=", ">", "<=", "<", "==", "=", "!=", "!", "<>", "0", "1", "2", "18", "007",
    "4294967295", "4294967296", "9" * 40, "٣", "²", "é", "\uff41", "#", "$", "&&", "||", "\t",
    "\n", "\x00", " ", "of(", "p-17", "x@y/z", "-", ".", "_",
]  # fmt: skip


def _assert_well_typed(text: str) -> None:
    try:
        compiled = compile_policy(text)
    except PolicyError as exc:
        assert isinstance(exc, InvalidArgument)
        if exc.position is not None:
            assert exc.text == text
            assert 0 <= exc.position <= len(text)
        return
    # accepted: the normal form is stable and compiles to the same span program
    nf = compiled.normal_form
    assert normal_form(nf) == nf
    again = compile_policy(nf)
    assert again.matrix == compiled.matrix and again.row_labels == compiled.row_labels
    assert attributes(nf) == attributes(text)
    assert all("\n" not in label and " " not in label for label in compiled.row_labels)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=14), st.sampled_from([" ", ""]))
def test_token_soup_gives_a_policy_or_a_policy_error(tokens: list[str], sep: str) -> None:
    _assert_well_typed(sep.join(tokens))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_gives_a_policy_or_a_policy_error(text: str) -> None:
    _assert_well_typed(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.lists(st.sampled_from(TOKENS), max_size=4).map("".join)))
def test_key_attributes_give_labels_or_a_policy_error(text: str) -> None:
    try:
        labels = expand_attributes([text])
    except PolicyError as exc:
        assert isinstance(exc, InvalidArgument)
        return
    parsed = parse_attribute(text)
    name, value = parsed.name, parsed.value
    if isinstance(value, int):
        # integer labels live under `name#`, which no user attribute can spell
        assert labels and all(label.startswith(f"{name}#") for label in labels)
    else:
        (label,) = labels
        assert "#" not in label
        # the same string written in a policy compiles to exactly that row label
        assert compile_policy(label).row_labels == (label,)


def test_lookalike_digits_and_letters_are_refused_not_crashed() -> None:
    for text in ("age >= ٣", "age >= ²", "é", "role:doctor\uff58", "\uff41", "2 of (a, b, ٣)"):
        try:
            compile_policy(text)
        except PolicyError:
            continue
        raise AssertionError(f"{text!r} was accepted")
    for attr in ("age=٣", "age=²", "é", "\uff52ole"):
        try:
            expand_attributes([attr])
        except PolicyError:
            continue
        raise AssertionError(f"{attr!r} was accepted")


def test_huge_integers_are_refused_without_converting_them() -> None:
    # more digits than Python's int() accepts by default (4300)
    for text in ("age >= " + "9" * 5000, "9" * 5000 + " of (a, b)"):
        try:
            compile_policy(text)
        except PolicyError as exc:
            assert "bits" in str(exc) or "longer than" in str(exc)
            continue
        raise AssertionError("accepted")
    try:
        expand_attributes(["age=" + "9" * 5000])
    except PolicyError:
        pass
    else:
        raise AssertionError("accepted")


def test_an_accepted_policy_always_has_a_normal_form_that_parses_again() -> None:
    """Envelopes store the normal form and decryption parses it again: a policy
    accepted at encryption whose normal form is refused would lock the record."""
    names = [f"n{i:03d}" + "x" * 26 for i in range(256)]
    dense = "1 of (" + ",".join(names) + ")"  # the normal form spells it " or "
    assert len(dense) <= MAX_POLICY_CHARS
    try:
        compiled = compile_policy(dense)
    except PolicyError as exc:
        assert "normal form is longer" in str(exc)
    else:
        assert compile_policy(compiled.normal_form).matrix == compiled.matrix


def test_policy_attributes_no_key_could_hold_are_refused() -> None:
    """Keys refuse attributes over MAX_ATTRIBUTE_CHARS; so do policies (with a position)."""
    for text in ("a" * 257, "role:" + "d" * 260, "x" * 250 + " >= 3"):
        try:
            compile_policy(f"b or {text}")
        except PolicyError as exc:
            assert exc.position == 5 and "longer than" in str(exc)
            continue
        raise AssertionError(f"{text[:20]}... was accepted")
    longest = "a" * MAX_ATTRIBUTE_CHARS
    assert compile_policy(longest).row_labels == tuple(expand_attributes([longest]))
    integer_name = "x" * (MAX_ATTRIBUTE_CHARS - 11)  # room for `=4294967295`
    compiled = compile_policy(f"{integer_name} >= 7")
    assert compiled.satisfied_by(expand_attributes([f"{integer_name}=4294967295"]))
