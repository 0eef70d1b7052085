# The public C-level API: the table of pasid/capi.pxd, filled here and exported as
# the capsule ``pasid._core._C_API`` (as ``datetime.datetime_CAPI``).
#
# Each entry is the class's ``c_*`` method of the same name itself (_allocator.pxi,
# _ida.pxi): the function its vtable holds, so a caller pays one indirect call as
# it did through the vtable. A thin function calling the method instead (a direct
# call gcc does not inline: c_alloc is too large) cost 8-13 ns more per W1 pair,
# measured from examples/cython_sim. The opaque handle is the object's own struct
# (pasid/capi.pxd names its tag), so the entry's type and the method's are the
# same C type; Cython does not know that, hence the cast below. Assigning each
# method to a variable of its own type first makes Cython check the method's
# signature against the entry's: a method changed without its entry is a compile
# error here, not a crash in a caller. Keep the order of pasid/capi.pxd: entries are
# appended, never moved (its version rule).

from cpython.pycapsule cimport PyCapsule_New
from pasid.capi cimport PASID_CAPI_VERSION, pasid_allocator_t, pasid_capi_t, pasid_ida_t


cdef pasid_allocator_t* _capi_allocator(object obj) except NULL:
    if type(obj) is not PasidAllocator:
        raise TypeError(f"pasid's C API needs a pasid._core.PasidAllocator, not "
                        f"{type(obj).__module__}.{type(obj).__qualname__}")
    return <pasid_allocator_t*><void*>obj


cdef pasid_ida_t* _capi_ida(object obj) except NULL:
    if type(obj) is not IDA:
        raise TypeError(f"pasid's C API needs a pasid._core.IDA, not "
                        f"{type(obj).__module__}.{type(obj).__qualname__}")
    return <pasid_ida_t*><void*>obj


# each entry's type as a method (checked) and as the table declares it (the cast)
ctypedef int64_t (*_alloc_m)(PasidAllocator, object, int64_t, int64_t) except -2
ctypedef int64_t (*_alloc_t)(pasid_allocator_t*, object, int64_t, int64_t) except -2
ctypedef int64_t (*_alloc_exact_m)(PasidAllocator, int64_t, object) except -2
ctypedef int64_t (*_alloc_exact_t)(pasid_allocator_t*, int64_t, object) except -2
ctypedef int64_t (*_alloc_many_m)(PasidAllocator, uint32_t*, int64_t, object) except -2
ctypedef int64_t (*_alloc_many_t)(pasid_allocator_t*, uint32_t*, int64_t, object) except -2
ctypedef int (*_free_many_m)(PasidAllocator, const uint32_t*, int64_t) except -1
ctypedef int (*_free_many_t)(pasid_allocator_t*, const uint32_t*, int64_t) except -1
ctypedef int (*_pasid_m)(PasidAllocator, int64_t) except -1            # get, put, state
ctypedef int (*_pasid_t)(pasid_allocator_t*, int64_t) except -1
ctypedef int (*_device_m)(PasidAllocator, int64_t, int) except -1      # bind, unbind
ctypedef int (*_device_t)(pasid_allocator_t*, int64_t, int) except -1
ctypedef list (*_exit_owner_m)(PasidAllocator, object)
ctypedef object (*_exit_owner_t)(pasid_allocator_t*, object)
ctypedef int64_t (*_advance_m)(PasidAllocator, double) except -1
ctypedef int64_t (*_advance_t)(pasid_allocator_t*, double) except -1
ctypedef double (*_time_m)(PasidAllocator) except? -1.0               # now, next_release_time
ctypedef double (*_time_t)(pasid_allocator_t*) except? -1.0
ctypedef int64_t (*_generation_m)(PasidAllocator, int64_t) except -1
ctypedef int64_t (*_generation_t)(pasid_allocator_t*, int64_t) except -1
ctypedef int64_t (*_count_m)(PasidAllocator, int) except -1
ctypedef int64_t (*_count_t)(pasid_allocator_t*, int) except -1
ctypedef int64_t (*_ida_alloc_m)(IDA, int64_t, int64_t) except -2
ctypedef int64_t (*_ida_alloc_t)(pasid_ida_t*, int64_t, int64_t) except -2
ctypedef int (*_ida_free_m)(IDA, int64_t) except -1
ctypedef int (*_ida_free_t)(pasid_ida_t*, int64_t) except -1
ctypedef bint (*_ida_exists_m)(IDA, int64_t) noexcept
ctypedef bint (*_ida_exists_t)(pasid_ida_t*, int64_t) noexcept


cdef pasid_capi_t _capi


cdef void _capi_fill() noexcept:
    cdef _alloc_m alloc = PasidAllocator.c_alloc
    cdef _alloc_exact_m alloc_exact = PasidAllocator.c_alloc_exact
    cdef _alloc_many_m alloc_many = PasidAllocator.c_alloc_many
    cdef _free_many_m free_many = PasidAllocator.c_free_many
    cdef _pasid_m get = PasidAllocator.c_get
    cdef _pasid_m put = PasidAllocator.c_put
    cdef _device_m bind = PasidAllocator.c_bind
    cdef _device_m unbind = PasidAllocator.c_unbind
    cdef _exit_owner_m exit_owner = PasidAllocator.c_exit_owner
    cdef _advance_m advance = PasidAllocator.c_advance
    cdef _time_m now = PasidAllocator.c_now
    cdef _time_m next_release_time = PasidAllocator.c_next_release_time
    cdef _pasid_m state = PasidAllocator.c_state
    cdef _generation_m generation = PasidAllocator.c_generation
    cdef _count_m count = PasidAllocator.c_count
    cdef _ida_alloc_m ida_alloc = IDA.c_alloc
    cdef _ida_free_m ida_free = IDA.c_free
    cdef _ida_exists_m ida_exists = IDA.c_exists

    _capi.version = PASID_CAPI_VERSION
    _capi.size = sizeof(pasid_capi_t)
    _capi.allocator = _capi_allocator
    _capi.ida = _capi_ida
    _capi.alloc = <_alloc_t>alloc
    _capi.alloc_exact = <_alloc_exact_t>alloc_exact
    _capi.alloc_many = <_alloc_many_t>alloc_many
    _capi.free_many = <_free_many_t>free_many
    _capi.get = <_pasid_t>get
    _capi.put = <_pasid_t>put
    _capi.bind = <_device_t>bind
    _capi.unbind = <_device_t>unbind
    _capi.exit_owner = <_exit_owner_t>exit_owner
    _capi.advance = <_advance_t>advance
    _capi.now = <_time_t>now
    _capi.next_release_time = <_time_t>next_release_time
    _capi.state = <_pasid_t>state
    _capi.generation = <_generation_t>generation
    _capi.count = <_count_t>count
    _capi.ida_alloc = <_ida_alloc_t>ida_alloc
    _capi.ida_free = <_ida_free_t>ida_free
    _capi.ida_exists = <_ida_exists_t>ida_exists


_capi_fill()
_C_API = PyCapsule_New(<void*>&_capi, "pasid._core._C_API", NULL)
