# Argument conversion of the compiled core: IDs as int64, times as finite doubles.
# The common cases of pasid/_args.py (the rules both backends share) checked inline;
# everything else goes through pasid/_args.py. Included by pasid/_core.pyx.

cdef extern from *:
    """
    /* The value of an int that fits one machine word of CPython's digits, read
       without a call: the common case of every ID argument. 0 when not compact. */
    static inline int pasid_compact_long(PyObject *o, long long *value) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
            *value = (long long)PyUnstable_Long_CompactValue((PyLongObject *)o);
            return 1;
        }
        return 0;
    #else
        Py_ssize_t size = Py_SIZE(o);
        if (size == 0) { *value = 0; return 1; }
        if (size == 1) { *value = (long long)((PyLongObject *)o)->ob_digit[0]; return 1; }
        if (size == -1) { *value = -(long long)((PyLongObject *)o)->ob_digit[0]; return 1; }
        return 0;
    #endif
    }
    """
    bint compact_long "pasid_compact_long"(object value, long long* result) noexcept


cdef inline int64_t as_int64(object value, str what) except? -1:
    """An int or numpy integer as int64, saturated; bool and others raise TypeError."""
    cdef long long result
    if type(value) is int and compact_long(value, &result):
        return result
    return as_int64_slow(value, what)


cdef int64_t as_int64_slow(object value, str what) except? -1:
    """Everything but a compact int: the shared rule (pasid._args.as_int), then saturated."""
    cdef int overflow = 0
    cdef long long result
    if type(value) is not int:
        value = _args.as_int(value, what)
    result = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow > 0:
        return INT64_MAX
    if overflow < 0:
        return INT64_MIN
    return result


# Times stay within +-MAX_TIME (pasid._args.MAX_TIME), so that a time plus a
# grace or a drain is still finite: release times never overflow to infinity.
cdef double MAX_TIME = _args.MAX_TIME


cdef double as_time(object value, str what) except? -1.0:
    """A time or duration as a double (pasid._args.as_time): a float or an int
    inline, anything else through the shared rule."""
    cdef double result
    cdef long long whole
    if type(value) is float:
        result = <double>value
    elif type(value) is int and compact_long(value, &whole):
        result = <double>whole
    else:
        return _args.as_time(value, what)
    check_time(result, what)
    return result


cdef int check_time(double value, str what) except -1:
    """ValueError (pasid._args.check_time's) unless finite and within +-1e300."""
    if not (-MAX_TIME <= value <= MAX_TIME):
        _args.check_time(value, what)
    return 0
