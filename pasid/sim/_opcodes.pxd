# The operation codes of a trace (pasid/sim/_tracerules.py, OP_*), as C constants for
# the simulator's compiled modules; each checks them against the Python ones at import
# (_tracerules.check_op_codes).

cdef enum:
    ALLOC = 0
    GET = 1
    PUT = 2
    BIND = 3
    UNBIND = 4
    ACCESS = 5
    EXIT = 6
    ADVANCE = 7

# The VM trace's operation codes (pasid/sim/_vmrules.py, VM_*), checked the same way
# (_vmrules.check_vm_op_codes).
cdef enum:
    VM_ARRIVE = 0
    VM_END = 1
    VM_ACCESS = 2
    VM_UNBIND = 3
    VM_MIGRATE = 4
