"""The virtual command codec, pasid._vcmd, against the Linux driver's macros; its C twin's numbers.

The golden tables are written by hand from the driver's ``VCMD_*`` macros
(drivers/iommu/intel/pasid.h before and after commit 4d99efb229e6, quoted in
``DRIVER``), never computed by the code under test. The Hypothesis round trips
read the responses back with those macros, transliterated. The last tests read
pasid/_vcmd.pxd as text (nothing compiles it yet) and hold its constants to
pasid._vcmd's table, so the two cannot drift.
"""

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pasid._vcmd as vcmd
from pasid._vcmd import ALLOC, FREE, UNDEFINED, Status

PXD = Path(vcmd.__file__).with_name("_vcmd.pxd")

# The driver's macros, as Python: "3.1" is v5.12-v5.14 (the status codes of 444d66a23c1f),
# "3.3" is v5.15-v6.3 (4d99efb229e6). UNDEFINED_CMD is the spec's code; the driver has none.
DRIVER = {
    "3.1": {
        "VCMD_CMD_OPERAND": lambda e: e << 8,
        "VCMD_VRSP_IP": 0x1,
        "VCMD_VRSP_SC": lambda e: (e >> 1) & 0x3,
        "VCMD_VRSP_SC_SUCCESS": 0,
        "VCMD_VRSP_SC_NO_PASID_AVAIL": 2,
        "VCMD_VRSP_SC_INVALID_PASID": 2,
        "UNDEFINED_CMD": 1,
        "VCMD_VRSP_RESULT_PASID": lambda e: (e >> 8) & 0xFFFFF,
    },
    "3.3": {
        "VCMD_CMD_OPERAND": lambda e: e << 16,
        "VCMD_VRSP_IP": 0x1,
        "VCMD_VRSP_SC": lambda e: (e & 0xFF) >> 1,
        "VCMD_VRSP_SC_SUCCESS": 0,
        "VCMD_VRSP_SC_NO_PASID_AVAIL": 16,
        "VCMD_VRSP_SC_INVALID_PASID": 16,
        "UNDEFINED_CMD": 1,
        "VCMD_VRSP_RESULT_PASID": lambda e: (e >> 16) & 0xFFFFF,
    },
}
STATUS_MACRO = {
    Status.SUCCESS: "VCMD_VRSP_SC_SUCCESS",
    Status.NO_PASID: "VCMD_VRSP_SC_NO_PASID_AVAIL",
    Status.INVALID_PASID: "VCMD_VRSP_SC_INVALID_PASID",
    Status.UNDEFINED_COMMAND: "UNDEFINED_CMD",
}

# (encoding, command word) -> (command, operand)
DECODED = [
    # ALLOC: what vcmd_alloc_pasid writes, VCMD_CMD_ALLOC alone
    ("3.1", 0x1, (ALLOC, 0)),
    ("3.3", 0x1, (ALLOC, 0)),
    # FREE: VCMD_CMD_OPERAND(pasid) | VCMD_CMD_FREE
    ("3.1", 0x102, (FREE, 1)),
    ("3.1", 0x1234502, (FREE, 0x12345)),
    ("3.1", 0xFFFFF02, (FREE, 0xFFFFF)),
    ("3.1", 0x2, (FREE, 0)),              # well formed: the model answers "invalid PASID"
    ("3.3", 0x10002, (FREE, 1)),
    ("3.3", 0x123450002, (FREE, 0x12345)),
    ("3.3", 0xFFFFF0002, (FREE, 0xFFFFF)),
    ("3.3", 0x2, (FREE, 0)),
    # undefined commands
    ("3.1", 0x0, (UNDEFINED, 0)),
    ("3.3", 0x0, (UNDEFINED, 0)),
    ("3.1", 0x3, (UNDEFINED, 0)),
    ("3.3", 0x3, (UNDEFINED, 0)),
    ("3.1", 0xFF, (UNDEFINED, 0)),
    ("3.3", 0xFF, (UNDEFINED, 0)),
    ("3.1", 0x1234503, (UNDEFINED, 0)),   # command 3 with an operand
    # ALLOC carries no operand: any bit above the command field is a reserved bit
    ("3.1", 0x101, (UNDEFINED, 0)),
    ("3.3", 0x10001, (UNDEFINED, 0)),
    ("3.3", 0x8000000000000001, (UNDEFINED, 0)),
    # bits set above the operand field (3.1: bits 63:28; 3.3: bits 63:36)
    ("3.1", 0x10000002, (UNDEFINED, 0)),
    ("3.1", 0x8000000000000102, (UNDEFINED, 0)),
    ("3.3", 0x1000000002, (UNDEFINED, 0)),
    ("3.3", 0x8000000000010002, (UNDEFINED, 0)),
    # 3.3's bits 15:8 are reserved: a rev 3.1 FREE sent to a rev 3.3 register
    ("3.3", 0x102, (UNDEFINED, 0)),
    ("3.3", 0x1234502, (UNDEFINED, 0)),
    # a rev 3.3 FREE of 0x12345 sent to a rev 3.1 register: bit 32 is above its operand
    ("3.1", 0x123450002, (UNDEFINED, 0)),
    ("3.1", 0x10002, (FREE, 0x100)),      # a rev 3.3 FREE of 1 reads as a rev 3.1 FREE of 256
    # words no 64-bit register holds
    ("3.1", -1, (UNDEFINED, 0)),
    ("3.3", -2, (UNDEFINED, 0)),
    ("3.3", -(2**63), (UNDEFINED, 0)),
    ("3.1", 2**64, (UNDEFINED, 0)),
    ("3.3", 2**64 + 1, (UNDEFINED, 0)),   # ALLOC in the low bits does not save it
    ("3.1", 2**64 + 0x102, (UNDEFINED, 0)),
    ("3.1", 2**64 - 1, (UNDEFINED, 0)),
]

# (encoding, status, pasid) -> response word
RESPONSES = [
    ("3.1", Status.SUCCESS, 1, 0x100),
    ("3.1", Status.SUCCESS, 0x12345, 0x1234500),
    ("3.1", Status.SUCCESS, 0xFFFFF, 0xFFFFF00),
    ("3.1", Status.SUCCESS, 0, 0x0),              # a FREE's success: no result
    ("3.1", Status.NO_PASID, 0, 0x4),             # SC 2 in bits 2:1
    ("3.1", Status.INVALID_PASID, 0x12345, 0x4),  # the PASID goes only with success
    ("3.1", Status.UNDEFINED_COMMAND, 0, 0x2),    # SC 1
    ("3.3", Status.SUCCESS, 1, 0x10000),
    ("3.3", Status.SUCCESS, 0x12345, 0x123450000),
    ("3.3", Status.SUCCESS, 0xFFFFF, 0xFFFFF0000),
    ("3.3", Status.SUCCESS, 0, 0x0),
    ("3.3", Status.NO_PASID, 0, 0x20),            # SC 16 in bits 7:1
    ("3.3", Status.INVALID_PASID, 0xFFFFF, 0x20),
    ("3.3", Status.UNDEFINED_COMMAND, 0, 0x2),
]

# (encoding, response word) -> (in progress, status code, pasid), as the driver reads
PARSED = [
    ("3.1", 0x1234500, (0, 0, 0x12345)),
    ("3.1", 0x4, (0, 2, 0)),
    ("3.1", 0x2, (0, 1, 0)),
    ("3.1", 0x1234501, (1, 0, 0)),                # in progress: nothing to take yet
    ("3.1", 0xFE, (0, 3, 0)),                     # SC is two bits; 7:3 reserved
    ("3.3", 0xFFFFF0000, (0, 0, 0xFFFFF)),
    ("3.3", 0x20, (0, 16, 0)),
    ("3.3", 0x2, (0, 1, 0)),
    ("3.3", 0xFE, (0, 127, 0)),
    ("3.3", 0xFFFFFFFFFFFF0000, (0, 0, 0xFFFFF)),  # RESULT_PASID keeps 20 bits
    ("3.3", 0x1234500, (0, 0, 0x123)),            # a rev 3.1 answer misread by a 3.3 driver
]


@pytest.mark.parametrize(("encoding", "word", "expected"), DECODED,
                         ids=[f"{e}-{w:#x}" for e, w, _ in DECODED])
def test_decode_golden(encoding, word, expected):
    assert vcmd.decode(word, encoding) == expected


@pytest.mark.parametrize(("encoding", "status", "pasid", "word"), RESPONSES,
                         ids=[f"{e}-{s.name}-{p:#x}" for e, s, p, _ in RESPONSES])
def test_respond_golden(encoding, status, pasid, word):
    assert vcmd.respond(status, pasid, encoding) == word
    assert vcmd.respond(int(status), pasid, encoding) == word


@pytest.mark.parametrize(("encoding", "word", "expected"), PARSED,
                         ids=[f"{e}-{w:#x}" for e, w, _ in PARSED])
def test_parse_response_golden(encoding, word, expected):
    assert vcmd.parse_response(word, encoding) == expected


@pytest.mark.parametrize("encoding", vcmd.ENCODINGS)
def test_the_table_is_the_drivers(encoding):
    layout, macros = vcmd.LAYOUTS[encoding], DRIVER[encoding]
    assert layout.operand_mask == macros["VCMD_CMD_OPERAND"](0xFFFFF)
    for status, macro in STATUS_MACRO.items():
        assert layout.codes[status] == macros[macro], (status, macro)
    assert vcmd.IN_PROGRESS == macros["VCMD_VRSP_IP"]


@given(encoding=st.sampled_from(vcmd.ENCODINGS), status=st.sampled_from(Status),
       pasid=st.integers(0, 2**20 - 1))
def test_a_response_reads_back_with_the_drivers_macros(encoding, status, pasid):
    word = vcmd.respond(status, pasid, encoding)
    macros = DRIVER[encoding]
    assert 0 <= word < 2**64
    assert word & macros["VCMD_VRSP_IP"] == 0
    assert macros["VCMD_VRSP_SC"](word) == macros[STATUS_MACRO[status]]
    success = status == Status.SUCCESS
    assert macros["VCMD_VRSP_RESULT_PASID"](word) == (pasid if success else 0)
    assert vcmd.parse_response(word, encoding) == (
        0, macros[STATUS_MACRO[status]], pasid if success else 0)


@given(encoding=st.sampled_from(vcmd.ENCODINGS), pasid=st.integers(0, 2**20 - 1))
def test_the_drivers_free_decodes_to_its_pasid(encoding, pasid):
    word = DRIVER[encoding]["VCMD_CMD_OPERAND"](pasid) | FREE
    assert vcmd.decode(word, encoding) == (FREE, pasid)


@given(encoding=st.sampled_from(vcmd.ENCODINGS),
       word=st.integers(-(2**70), 2**70) | st.integers(0, 2**64 - 1))
def test_decode_answers_every_integer(encoding, word):
    command, operand = vcmd.decode(word, encoding)
    assert command in (ALLOC, FREE, UNDEFINED)
    if command == FREE:
        assert DRIVER[encoding]["VCMD_CMD_OPERAND"](operand) | FREE == word
    else:
        assert operand == 0
        assert command == UNDEFINED or word == ALLOC


@pytest.mark.parametrize("bad", ["3.2", "3.10", "3.3 ", "", "rev3.3", "3"])
def test_check_encoding_names_the_two(bad):
    with pytest.raises(ValueError, match=r"'3\.1' or '3\.3'") as raised:
        vcmd.check_encoding(bad)
    assert repr(bad) in str(raised.value)
    for call in (lambda: vcmd.decode(1, bad), lambda: vcmd.respond(0, 0, bad),
                 lambda: vcmd.parse_response(0, bad)):
        with pytest.raises(ValueError, match=r"'3\.1' or '3\.3'"):
            call()


@pytest.mark.parametrize("bad", [None, 3.3, 3, b"3.3", ["3.3"]])
def test_check_encoding_wants_a_str(bad):
    with pytest.raises(TypeError, match=f"encoding must be a str .*not {type(bad).__name__}"):
        vcmd.check_encoding(bad)


@pytest.mark.parametrize("encoding", vcmd.ENCODINGS)
def test_check_encoding_gives_the_name_back(encoding):
    assert vcmd.check_encoding(encoding) == encoding


@pytest.mark.parametrize("word", ["1", 1.0, None, True, False])
def test_decode_wants_an_integer(word):
    with pytest.raises(TypeError, match="command word must be an integer"):
        vcmd.decode(word, "3.3")


def test_respond_refuses_what_the_model_should_not_write():
    with pytest.raises(ValueError):
        vcmd.respond(4, 0, "3.3")                   # no such status
    with pytest.raises(ValueError, match="PASID must be in"):
        vcmd.respond(Status.SUCCESS, 2**20, "3.3")
    with pytest.raises(ValueError, match="PASID must be in"):
        vcmd.respond(Status.NO_PASID, -1, "3.1")
    with pytest.raises(TypeError):
        vcmd.respond(True, 0, "3.1")
    with pytest.raises(TypeError):
        vcmd.respond(Status.SUCCESS, 1.0, "3.1")


def test_parse_response_refuses_a_word_no_register_holds():
    for word in (-1, 2**64):
        with pytest.raises(ValueError, match="response word must be in"):
            vcmd.parse_response(word, "3.3")
    with pytest.raises(TypeError):
        vcmd.parse_response("0x20", "3.3")


# pasid/_vcmd.pxd: the C twin's constants, read as text

def pxd_constants():
    """``NAME: value`` of every ``NAME = value`` line in the .pxd's ``cdef enum`` blocks."""
    constants, in_enum = {}, False
    for line in PXD.read_text(encoding="utf-8").splitlines():
        if line.startswith("cdef enum"):
            in_enum = True
        elif in_enum and re.match(r"\s+\w+ = ", line):
            name, value = re.match(r"\s+(\w+) = (-?(?:0x[0-9A-Fa-f]+|\d+))\s*(?:#.*)?$",
                                   line).groups()
            assert name not in constants, f"{name} twice in {PXD.name}"
            constants[name] = int(value, 0)
        elif line.strip() and not line.startswith(" "):
            in_enum = False
    return constants


def expected_constants():
    """What the .pxd's constants must be, from pasid._vcmd."""
    expected = {"VCMD_ALLOC": ALLOC, "VCMD_FREE": FREE, "VCMD_UNDEFINED": UNDEFINED,
                "VCMD_COMMAND_MASK": vcmd.COMMAND_MASK, "VCMD_IN_PROGRESS": vcmd.IN_PROGRESS,
                "VCMD_PASID_BITS": vcmd.PASID_BITS}
    expected.update({f"VCMD_{status.name}": status.value for status in Status})
    for name, layout in vcmd.LAYOUTS.items():
        tag = name.replace(".", "")
        expected[f"VCMD_ENCODING_{tag}"] = layout.index
        for field in ("operand_shift", "status_shift", "status_mask", "result_shift"):
            expected[f"VCMD_{tag}_{field.upper()}"] = getattr(layout, field)
        expected.update({f"VCMD_{tag}_CODE_{status.name}": code
                         for status, code in layout.codes.items()})
    return expected


def test_the_pxd_constants_are_the_tables():
    assert pxd_constants() == expected_constants()


def test_the_pxd_is_read_whole():
    # every constant the reader found is one of its enum lines: none skipped by the pattern
    text = PXD.read_text(encoding="utf-8")
    assert len(pxd_constants()) == len(re.findall(r"^    VCMD_\w+ = ", text, re.M))
    assert "from libc.stdint cimport int64_t, uint64_t" in text


def test_the_layout_indexes_are_distinct():
    assert sorted(layout.index for layout in vcmd.LAYOUTS.values()) == [0, 1]
    assert vcmd.ENCODINGS == ("3.1", "3.3")
