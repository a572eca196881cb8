import pytest
from helpers import rec


@pytest.fixture(scope="session", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread (see ``one_torch_thread``)."""


@pytest.fixture(scope="session")
def tiny():
    from shedkit.models import load_model

    return load_model("tiny-random")


@pytest.fixture(scope="session")
def rows():
    """Ten single-turn rows of varied lengths, one with a system turn, one multi-turn."""
    out = [
        rec(i, ("user", f"Question {i}: " + "why? " * (i % 4 + 1)), ("assistant", f"Answer {i} " + "because. " * (i % 3 + 1)))
        for i in range(8)
    ]
    out.append(rec(8, ("system", "Be brief."), ("user", "Say hi."), ("assistant", "Hi!")))
    out.append(rec(9, ("user", "One?"), ("assistant", "1."), ("user", "Two?"), ("assistant", "2, then 3.")))
    return out
