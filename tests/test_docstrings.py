"""The two backends document their public methods and properties in the same words.

``pasid._core`` and ``pasid.pure`` implement one contract, so ``help()`` reads
the same on either: :func:`differing_docstrings` lists the public members of
``PasidAllocator``, ``IDA`` and ``GuestSpace`` whose docstrings (as ``inspect.getdoc`` cleans
them) differ between the backends, or that one backend lacks.
"""

import inspect

import pytest

from backends import NO_EXTENSION

CLASSES = ("PasidAllocator", "IDA", "GuestSpace")


def differing_docstrings():
    """``Class.member`` for each public method or property documented differently."""
    import pasid._core
    import pasid.pure

    differ = []
    for name in CLASSES:
        pair = (getattr(pasid._core, name), getattr(pasid.pure, name))
        members = {member for cls in pair for member in dir(cls) if not member.startswith("_")}
        for member in sorted(members):
            docs = [inspect.getdoc(getattr(cls, member)) if hasattr(cls, member) else None
                    for cls in pair]
            if docs[0] != docs[1]:
                differ.append(f"{name}.{member}")
    return differ


@pytest.mark.skipif(NO_EXTENSION, reason="PASID_NO_EXTENSION=1: no compiled core to compare")
def test_the_backends_document_each_member_alike():
    # one home: the pure twins' docstrings, which the compiled classes take at import
    assert differing_docstrings() == []


def test_every_public_member_states_its_cost():
    # a method's or property's docstring says what it costs (O(...))
    import pasid.pure

    missing = [f"{name}.{member}" for name in CLASSES
               for member in dir(getattr(pasid.pure, name)) if not member.startswith("_")
               if "O(" not in (inspect.getdoc(getattr(getattr(pasid.pure, name), member)) or "")]
    assert missing == []
