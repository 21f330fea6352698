#!/usr/bin/env python3
"""The Python baseline of the flat-file decode benchmark (connectors/benches/flatfile_decode.rs).

A straightforward decoder of a fixed-width layout with the standard library only: `struct` cuts
each record into fields, `codecs` decodes text (ASCII or an EBCDIC code page), `int()` reads
zoned digits, `bytes.hex()` reads packed decimals. Every field becomes a Python value (text a
`str`, numbers the unscaled `int`, as the Rust decoder keeps `i128` + scale), and the record a
tuple, which is what a Python ETL script would hand on.

Usage: flatfile_decode.py LAYOUT.json FILE [LIMIT_BYTES]

LAYOUT.json (written by the benchmark from the Rust layout):
  {"encoding": "ascii" | "cp037" | "cp500" | "cp1047", "record_length": N,
   "fields": [{"name", "offset", "length", "type": "text"|"zoned"|"packed"|"binary",
               "scale", "signed"}]}
Zoned signs are overpunched in the last byte (IBM convention). Prints one JSON line: records,
bytes, seconds (wall), cpu_seconds (of this process), and a checksum (sum of the unscaled
numbers mod 2^64, and the number of text characters after trimming) that the benchmark
compares with its own.
"""

import codecs
import json
import struct
import sys
import time

PUNCH_POS = {ord(c): d for d, c in enumerate("{ABCDEFGHI")}
PUNCH_NEG = {ord(c): d for d, c in enumerate("}JKLMNOPQR")}
for _d in range(10):
    PUNCH_POS[ord("0") + _d] = _d
MASK = (1 << 64) - 1


def text_decoder(codec):
    decode = codecs.getdecoder(codec)

    def text(raw):
        return decode(raw)[0].rstrip(" \x00")

    return text


def zoned_decoder(codec, signed):
    decode = codecs.getdecoder(codec)
    ebcdic = codec != "ascii"

    def unsigned(raw):
        digits = decode(raw)[0]
        if not digits.isdigit():
            raise ValueError(f"not a zoned number: {raw!r}")
        return int(digits)

    def signed_ascii(raw):
        last = raw[-1]
        if last in PUNCH_POS:
            neg, d = False, PUNCH_POS[last]
        elif last in PUNCH_NEG:
            neg, d = True, PUNCH_NEG[last]
        else:
            raise ValueError(f"bad sign in {raw!r}")
        head = raw[:-1]
        if head and not head.isdigit():
            raise ValueError(f"not a zoned number: {raw!r}")
        v = int(head or b"0") * 10 + d
        return -v if neg else v

    def signed_ebcdic(raw):
        last = raw[-1]
        zone, d = last >> 4, last & 0x0F
        if d > 9 or zone not in (0xC, 0xD, 0xF):
            raise ValueError(f"bad sign in {raw!r}")
        head = decode(raw[:-1])[0]
        if head and not head.isdigit():
            raise ValueError(f"not a zoned number: {raw!r}")
        v = int(head or "0") * 10 + d
        return -v if zone == 0xD else v

    if not signed:
        return unsigned
    return signed_ebcdic if ebcdic else signed_ascii


def packed(raw):
    h = raw.hex()
    sign = h[-1]
    if sign not in "cdf":
        raise ValueError(f"bad packed sign in {raw!r}")
    v = int(h[:-1])
    return -v if sign == "d" else v


BINARY = {(2, True): "h", (2, False): "H", (4, True): "i", (4, False): "I", (8, True): "q", (8, False): "Q"}


def build(layout):
    codec = layout["encoding"]
    fmt = ">"
    pos = 0
    decoders = []
    kinds = []
    for f in sorted(layout["fields"], key=lambda f: f["offset"]):
        if f["offset"] > pos:
            fmt += f"{f['offset'] - pos}x"
        if f["type"] == "binary":
            fmt += BINARY[(f["length"], f["signed"])]
            decoders.append(None)
        else:
            fmt += f"{f['length']}s"
            if f["type"] == "text":
                decoders.append(text_decoder(codec))
            elif f["type"] == "zoned":
                decoders.append(zoned_decoder(codec, f["signed"]))
            else:
                decoders.append(packed)
        kinds.append(f["type"])
        pos = f["offset"] + f["length"]
    if pos < layout["record_length"]:
        fmt += f"{layout['record_length'] - pos}x"
    rec = struct.Struct(fmt)
    assert rec.size == layout["record_length"], (rec.size, layout["record_length"])
    return rec, decoders, kinds


def main():
    layout = json.load(open(sys.argv[1]))
    path = sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
    rec, decoders, kinds = build(layout)
    pairs = list(zip(decoders, kinds))
    size = rec.size
    chunk = size * 8192
    records = 0
    total = 0
    checksum = 0
    text_chars = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    with open(path, "rb") as f:
        while limit is None or total < limit:
            want = chunk if limit is None else min(chunk, (limit - total) // size * size)
            if want <= 0:
                break
            buf = f.read(want)
            if not buf:
                break
            usable = len(buf) - len(buf) % size
            for raw in rec.iter_unpack(buf[:usable]):
                values = tuple(d(v) if d else v for d, v in zip(decoders, raw))
                for v, (_, kind) in zip(values, pairs):
                    if kind == "text":
                        text_chars += len(v)
                    else:
                        checksum += v
                records += 1
            total += usable
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    print(json.dumps({
        "records": records,
        "bytes": total,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "checksum": checksum & MASK,
        "text_chars": text_chars,
    }))


if __name__ == "__main__":
    main()
