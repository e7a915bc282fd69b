"""Whatever the text, the loader answers with located PolicyErrors, never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryd.errors import InputError, PolicyError
from canaryd.policy.loader import load_policies_text

from .support import BASE, POLICIES

SEEDS = [BASE] + [p.read_text(encoding="utf-8") for p in sorted(POLICIES.glob("*.yaml"))]

_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(-200, 200), max_size=4).map(str),
    st.sampled_from(
        [
            "~",
            "null",
            "true",
            "''",
            "{}",
            "[]",
            "5",
            "5 minutes",
            "-5",
            "101",
            "0.7",
            "&a x",
            "*a",
            "!!binary zz",
            "!foo x",
            "{a: 1}",
            "[1, {weight: 2}]",
            "'* * *'",
            "1e999",
        ]
    ),
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(SEEDS)).splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "scalar", "duplicate", "truncate", "unicode"]))
        if op == "delete":  # drops a key (or a whole block's header)
            del lines[i]
        elif op == "scalar":  # replace the value of a 'key: value' line
            head, sep, _ = lines[i].partition(": ")
            if sep:
                lines[i] = f"{head}: {draw(_scalars)}\n"
            else:
                lines[i] = lines[i].rstrip("\n") + f" {draw(_scalars)}\n"
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "truncate":
            text = "".join(lines)
            cut = draw(st.integers(0, len(text)))
            lines = text[:cut].splitlines(keepends=True)
        else:
            text = lines[i]
            at = draw(st.integers(0, len(text)))
            lines[i] = text[:at] + draw(st.text(min_size=1, max_size=5)) + text[at:]
    return "".join(lines)


_inputs = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.sampled_from(list("abc:-[]{}!&*?|>'\"#%@`,\n\t 019.~")), max_size=120),
    mutated(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_inputs)
def test_loader_only_raises_located_policy_errors(text: str) -> None:
    try:
        loaded = load_policies_text(text, "fuzz.yaml")
    except PolicyError as exc:
        assert isinstance(exc, InputError)
        assert exc.problems
        for p in exc.problems:
            assert p.file == "fuzz.yaml"
            assert p.message.strip()
            assert p.severity == "error"
            assert p.line is None or p.line >= 1
            assert p.column is None or p.column >= 1
            str(p)  # formats without error
    else:
        assert loaded
        for lp in loaded:
            assert lp.file == "fuzz.yaml" and lp.line >= 1
