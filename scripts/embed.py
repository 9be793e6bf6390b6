#!/usr/bin/env python3
"""Writes a C source file that contains a file's bytes, so the binary can serve it.

Usage: embed.py INPUT OUTPUT SYMBOL
The output defines `const unsigned char SYMBOL[]` (NUL-terminated) and
`const size_t SYMBOL_len` (without the NUL).
"""
import sys

source, target, symbol = sys.argv[1:4]
with open(source, "rb") as f:
    data = f.read()

lines = []
for start in range(0, len(data), 16):
    chunk = data[start:start + 16]
    lines.append("    " + ", ".join(f"0x{byte:02x}" for byte in chunk) + ",")

with open(target, "w") as out:
    out.write(f"/* Generated from {source.split('/')[-1]} by scripts/embed.py; do not edit. */\n")
    out.write("#include <stddef.h>\n\n")
    out.write(f"extern const unsigned char {symbol}[];\n")
    out.write(f"extern const size_t {symbol}_len;\n\n")
    out.write(f"const unsigned char {symbol}[] = {{\n")
    out.write("\n".join(lines))
    out.write("\n    0x00,\n};\n")
    out.write(f"const size_t {symbol}_len = {len(data)};\n")
