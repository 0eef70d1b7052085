# Argument conversion of the compiled core: IDs as int64, times as finite doubles.
# The twin of pasid/pure/_args.py; included by pasid/_core.pyx.

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
    cdef int overflow = 0
    cdef long long result
    if type(value) is not int:
        if isinstance(value, bool):
            raise TypeError(f"{what} must be an integer, not bool")
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{what} must be an integer, not {type(value).__name__}") from None
    result = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow > 0:
        return INT64_MAX
    if overflow < 0:
        return INT64_MIN
    return result


cdef double as_time(object value, str what) except? -1.0:
    """A time or duration as a double: ints, floats and numpy numbers; not bool, finite."""
    cdef double result
    if type(value) is float:
        result = <double>value
    elif type(value) is int:
        result = float(value)
    elif isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    else:
        result = float(value)
    if not isfinite(result):
        raise ValueError(f"{what} must be finite, got {result}")
    return result
