"""The structure of a MATLAB v5 (.mat, versions 5 to 7.2) file, checked before SciPy reads it.

``scipy.io.loadmat`` reads the element tags in compiled code that trusts them: a corrupt data
type code, a byte count that runs past its element or a complex flag without an imaginary
part ends the process with a segmentation fault instead of an exception (found by
``tests/test_corrupt_inputs.py`` flipping single bytes). :func:`check_v5` walks every element
as the format describes it (MATLAB's "MAT-File Format", level 5) and raises
:class:`ValueError` naming the byte offset of the first inconsistency, so only well-formed
files reach SciPy. Version 4 files and v7.3 (HDF5) files are not v5 and pass through
unchecked (the caller reads v7.3 with h5py).
"""

from __future__ import annotations

import math
import struct
import zlib

HEADER = 128
# data types: itemsize (0: variable width or a container)
MI_SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8,
            14: 0, 15: 0, 16: 0, 17: 0, 18: 0}
MI_INT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 1, 5, 6, 14, 15
NUMERIC_MI = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13}
TEXT_MI = {1, 2, 3, 4, 16, 17, 18}
INDEX_MI = {5, 6, 12, 13}
# array classes
CELL, STRUCT, OBJECT, CHAR, SPARSE = 1, 2, 3, 4, 5
NUMERIC_CLASSES = set(range(6, 16))
COMPLEX_FLAG = 0x08
MAX_DEPTH = 64  # cells of cells: a loop of nested containers is corruption, not data


def is_v5(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first 128 bytes) is a v5 MAT-file."""
    if len(head) < HEADER or head[126:128] not in (b"IM", b"MI"):
        return False
    endian = "<" if head[126:128] == b"IM" else ">"
    return struct.unpack(endian + "H", head[124:126])[0] == 0x0100


def check_v5(data: bytes) -> None:
    """Raise ValueError when the v5 MAT-file ``data`` is not well formed."""
    endian = "<" if data[126:128] == b"IM" else ">"
    _Walker(endian).top(data)


class _Walker:
    def __init__(self, endian: str) -> None:
        self.u4 = struct.Struct(endian + "I")
        self.endian = endian

    def tag(self, buf: bytes, pos: int, end: int, where: int) -> tuple[int, int, int, int]:
        """(data type, byte count, data start, data end) of the element at ``pos``; the
        next element of a matrix starts at the data end padded to 8 bytes."""
        if pos + 8 > end:
            raise ValueError(f"byte {where + pos}: an element tag runs past the end of its "
                             "container")
        first = self.u4.unpack_from(buf, pos)[0]
        if first >> 16:  # small data element: type, count and up to 4 bytes in 8
            mdtype, nbytes, start = first & 0xFFFF, first >> 16, pos + 4
            if nbytes > 4:
                raise ValueError(f"byte {where + pos}: a small element of {nbytes} bytes "
                                 "(at most 4)")
        else:
            mdtype, nbytes, start = first, self.u4.unpack_from(buf, pos + 4)[0], pos + 8
            if start + nbytes > end:
                raise ValueError(f"byte {where + pos}: an element of {nbytes} bytes runs "
                                 f"past the end of its container ({end - start} bytes left)")
        if mdtype not in MI_SIZES:
            raise ValueError(f"byte {where + pos}: unknown data type {mdtype}")
        return mdtype, nbytes, start, start + nbytes

    def part(self, buf: bytes, pos: int, end: int, where: int, types: set[int],
             what: str) -> tuple[int, int, int, int]:
        """The sub-element at ``pos``, of one of ``types``: (type, byte count, data start,
        next sub-element)."""
        mdtype, nbytes, start, stop = self.tag(buf, pos, end, where)
        if mdtype not in types:
            raise ValueError(f"byte {where + pos}: {what} of data type {mdtype}")
        # elements inside a matrix are padded to 8 bytes from their own start
        return mdtype, nbytes, start, pos + 8 if start == pos + 4 else stop + -nbytes % 8

    def top(self, data: bytes) -> None:
        pos = HEADER
        while len(data) - pos >= 8:  # fewer trailing bytes than a tag: padding
            mdtype, _, start, stop = self.tag(data, pos, len(data), 0)
            if mdtype == MI_COMPRESSED:
                try:
                    inner = zlib.decompress(data[start:stop])
                except zlib.error as exc:
                    raise ValueError(f"byte {pos}: compressed variable: {exc}") from exc
                self.matrix_element(inner, 0, len(inner), where=start, depth=0)
            elif mdtype == MI_MATRIX:
                self.matrix_element(data, pos, stop, where=0, depth=0)
            else:
                raise ValueError(f"byte {pos}: a variable of data type {mdtype}; expected "
                                 "a matrix")
            pos = stop  # top-level elements are not padded

    def matrix_element(self, buf: bytes, pos: int, end: int, where: int, depth: int) -> int:
        """Check the miMATRIX element at ``pos``; the position after it."""
        if depth > MAX_DEPTH:
            raise ValueError(f"byte {where + pos}: containers nested over {MAX_DEPTH} deep")
        _, nbytes, start, nxt = self.part(buf, pos, end, where, {MI_MATRIX}, "a matrix")
        if nbytes:  # an empty matrix element is an empty array
            self.matrix(buf, start, start + nbytes, where, depth)
        return nxt

    def matrix(self, buf: bytes, pos: int, end: int, where: int, depth: int) -> None:
        at = pos
        _, nbytes, start, pos = self.part(buf, pos, end, where, {MI_UINT32}, "array flags")
        if nbytes != 8:
            raise ValueError(f"byte {where + at}: array flags of {nbytes} bytes (expected 8)")
        flags_class = self.u4.unpack_from(buf, start)[0]
        cls, is_complex = flags_class & 0xFF, bool(flags_class >> 8 & COMPLEX_FLAG)
        at = pos
        _, nbytes, start, pos = self.part(buf, pos, end, where, {MI_INT32}, "dimensions")
        if nbytes < 8 or nbytes % 4:
            raise ValueError(f"byte {where + at}: {nbytes} bytes of dimensions (two or more "
                             "int32)")
        dims = struct.unpack_from(f"{self.endian}{nbytes // 4}i", buf, start)
        if min(dims) < 0:
            raise ValueError(f"byte {where + at}: negative dimensions {list(dims)}")
        count = math.prod(dims)
        pos = self.part(buf, pos, end, where, {MI_INT8}, "the array name")[3]
        if cls in NUMERIC_CLASSES:
            for _ in range(2 if is_complex else 1):  # real part, imaginary part
                at = pos
                mdtype, nbytes, _, pos = self.part(buf, pos, end, where, NUMERIC_MI,
                                                   "numeric data")
                if nbytes != count * MI_SIZES[mdtype]:
                    raise ValueError(f"byte {where + at}: {nbytes} bytes of data for {count} "
                                     f"values of {MI_SIZES[mdtype]} bytes")
        elif cls == CHAR:
            self.part(buf, pos, end, where, TEXT_MI, "text")
        elif cls == CELL:
            for _ in range(count):
                pos = self.matrix_element(buf, pos, end, where, depth + 1)
        elif cls in (STRUCT, OBJECT):
            if cls == OBJECT:
                pos = self.part(buf, pos, end, where, {MI_INT8}, "the class name")[3]
            at = pos
            _, nbytes, start, pos = self.part(buf, pos, end, where, {MI_INT32},
                                              "the field name length")
            length = struct.unpack_from(self.endian + "i", buf, start)[0] if nbytes == 4 else 0
            at = pos
            _, nbytes, _, pos = self.part(buf, pos, end, where, {MI_INT8}, "field names")
            if length <= 0 or nbytes % length:
                raise ValueError(f"byte {where + at}: {nbytes} bytes of field names of "
                                 f"length {length}")
            for _ in range(count * (nbytes // length)):
                pos = self.matrix_element(buf, pos, end, where, depth + 1)
        elif cls == SPARSE:
            for what in ("row indices", "column indices"):
                pos = self.part(buf, pos, end, where, INDEX_MI, what)[3]
            for _ in range(2 if is_complex else 1):
                pos = self.part(buf, pos, end, where, NUMERIC_MI, "sparse values")[3]
        else:
            raise ValueError(f"byte {where + at}: array class {cls} (fmri2img reads numeric, "
                             "char, cell, struct and sparse arrays)")
