# The VT-d virtual command codec as C, for the compiled GuestSpace to cimport:
#
#     from pasid._vcmd cimport vcmd_command, vcmd_operand, vcmd_respond, VCMD_ENCODING_33
#
# pasid/_vcmd.py is the codec's home: its docstring has the two register layouts, the
# Linux driver's macros they come from and the choices made (an undefined command's code,
# what a malformed word is). These are the same numbers and the same rules; the functions
# are inline, so nothing is imported at run time. tests/test_vcmd_codec.py reads the
# constants of this file and compares them with pasid._vcmd's table.
#
# The functions never fail (noexcept nogil). ``encoding`` is a layout's index,
# VCMD_ENCODING_31 or VCMD_ENCODING_33 (pasid._vcmd.LAYOUTS[name].index), which the caller
# got from a checked name (pasid._vcmd.check_encoding); any other index reads as "3.1".
# A command word outside 0 .. 2**64 - 1 cannot reach them: the caller answers it as an
# undefined command, as pasid._vcmd.decode does.

from libc.stdint cimport int64_t, uint64_t

# commands (pasid._vcmd.ALLOC, FREE, UNDEFINED) and the fields both layouts share
cdef enum:
    VCMD_ALLOC = 1
    VCMD_FREE = 2
    VCMD_UNDEFINED = -1
    VCMD_COMMAND_MASK = 0xFF
    VCMD_IN_PROGRESS = 0x1
    VCMD_PASID_BITS = 20

# the statuses (pasid._vcmd.Status): names, not register codes
cdef enum:
    VCMD_SUCCESS = 0
    VCMD_NO_PASID = 1
    VCMD_INVALID_PASID = 2
    VCMD_UNDEFINED_COMMAND = 3

# the layouts (pasid._vcmd.LAYOUTS): "3.1" (Linux v5.7-v5.14), "3.3" (v5.15-v6.3)
cdef enum:
    VCMD_ENCODING_31 = 0
    VCMD_31_OPERAND_SHIFT = 8
    VCMD_31_STATUS_SHIFT = 1
    VCMD_31_STATUS_MASK = 0x3
    VCMD_31_RESULT_SHIFT = 8
    VCMD_31_CODE_SUCCESS = 0
    VCMD_31_CODE_NO_PASID = 2
    VCMD_31_CODE_INVALID_PASID = 2
    VCMD_31_CODE_UNDEFINED_COMMAND = 1

cdef enum:
    VCMD_ENCODING_33 = 1
    VCMD_33_OPERAND_SHIFT = 16
    VCMD_33_STATUS_SHIFT = 1
    VCMD_33_STATUS_MASK = 0x7F
    VCMD_33_RESULT_SHIFT = 16
    VCMD_33_CODE_SUCCESS = 0
    VCMD_33_CODE_NO_PASID = 16
    VCMD_33_CODE_INVALID_PASID = 16
    VCMD_33_CODE_UNDEFINED_COMMAND = 1


cdef inline int64_t vcmd_operand_shift(int64_t encoding) noexcept nogil:
    """Where a FREE's PASID sits in a command word (VCMD_CMD_OPERAND)."""
    return VCMD_33_OPERAND_SHIFT if encoding == VCMD_ENCODING_33 else VCMD_31_OPERAND_SHIFT


cdef inline int64_t vcmd_command(uint64_t word, int64_t encoding) noexcept nogil:
    """VCMD_ALLOC for ALLOC alone, VCMD_FREE for FREE and a PASID in the operand field,
    VCMD_UNDEFINED for any other word (another command, a set reserved bit). O(1)."""
    cdef uint64_t pasid_mask = ((<uint64_t>1) << VCMD_PASID_BITS) - 1
    cdef uint64_t operand_mask = pasid_mask << vcmd_operand_shift(encoding)
    if word == <uint64_t>VCMD_ALLOC:
        return VCMD_ALLOC
    if (word & VCMD_COMMAND_MASK) == <uint64_t>VCMD_FREE and (
            word & ~(operand_mask | <uint64_t>VCMD_COMMAND_MASK)) == 0:
        return VCMD_FREE
    return VCMD_UNDEFINED


cdef inline int64_t vcmd_operand(uint64_t word, int64_t encoding) noexcept nogil:
    """The PASID a FREE word carries; 0 for any other word. O(1)."""
    if vcmd_command(word, encoding) != VCMD_FREE:
        return 0
    return <int64_t>(word >> vcmd_operand_shift(encoding))


cdef inline int64_t vcmd_status_code(int64_t status, int64_t encoding) noexcept nogil:
    """The register's code for a status (VCMD_SUCCESS ...); -1 for no status."""
    if encoding == VCMD_ENCODING_33:
        if status == VCMD_SUCCESS:
            return VCMD_33_CODE_SUCCESS
        if status == VCMD_NO_PASID:
            return VCMD_33_CODE_NO_PASID
        if status == VCMD_INVALID_PASID:
            return VCMD_33_CODE_INVALID_PASID
        if status == VCMD_UNDEFINED_COMMAND:
            return VCMD_33_CODE_UNDEFINED_COMMAND
        return -1
    if status == VCMD_SUCCESS:
        return VCMD_31_CODE_SUCCESS
    if status == VCMD_NO_PASID:
        return VCMD_31_CODE_NO_PASID
    if status == VCMD_INVALID_PASID:
        return VCMD_31_CODE_INVALID_PASID
    if status == VCMD_UNDEFINED_COMMAND:
        return VCMD_31_CODE_UNDEFINED_COMMAND
    return -1


cdef inline uint64_t vcmd_respond(int64_t status, int64_t pasid, int64_t encoding) noexcept nogil:
    """The response word: the status's code, in-progress 0, and for VCMD_SUCCESS ``pasid``
    (the PASID an ALLOC took, 0 for a FREE) in the result field. The caller checked the
    status and that ``pasid`` is in 0 .. 2**20 - 1 (pasid._vcmd.respond raises there);
    an unknown status answers as an undefined command, a PASID keeps its low 20 bits. O(1)."""
    cdef int64_t code = vcmd_status_code(status, encoding)
    cdef uint64_t result = <uint64_t>pasid & (((<uint64_t>1) << VCMD_PASID_BITS) - 1)
    if code < 0:
        code = vcmd_status_code(VCMD_UNDEFINED_COMMAND, encoding)
    if encoding == VCMD_ENCODING_33:
        return ((<uint64_t>code) << VCMD_33_STATUS_SHIFT) | (
            result << VCMD_33_RESULT_SHIFT if status == VCMD_SUCCESS else 0)
    return ((<uint64_t>code) << VCMD_31_STATUS_SHIFT) | (
        result << VCMD_31_RESULT_SHIFT if status == VCMD_SUCCESS else 0)


cdef inline int64_t vcmd_response_in_progress(uint64_t word) noexcept nogil:
    """VCMD_VRSP_IP of a response word: 1 while the command runs (never, here), else 0."""
    return <int64_t>(word & VCMD_IN_PROGRESS)


cdef inline int64_t vcmd_response_status(uint64_t word, int64_t encoding) noexcept nogil:
    """VCMD_VRSP_SC of a response word: the register's status code."""
    if encoding == VCMD_ENCODING_33:
        return <int64_t>((word >> VCMD_33_STATUS_SHIFT) & VCMD_33_STATUS_MASK)
    return <int64_t>((word >> VCMD_31_STATUS_SHIFT) & VCMD_31_STATUS_MASK)


cdef inline int64_t vcmd_response_pasid(uint64_t word, int64_t encoding) noexcept nogil:
    """VCMD_VRSP_RESULT_PASID of a completed, successful response; 0 for any other."""
    cdef uint64_t pasid_mask = ((<uint64_t>1) << VCMD_PASID_BITS) - 1
    if vcmd_response_in_progress(word) or (
            vcmd_response_status(word, encoding) != vcmd_status_code(VCMD_SUCCESS, encoding)):
        return 0
    if encoding == VCMD_ENCODING_33:
        return <int64_t>((word >> VCMD_33_RESULT_SHIFT) & pasid_mask)
    return <int64_t>((word >> VCMD_31_RESULT_SHIFT) & pasid_mask)
