#!/usr/bin/env python3
# mkimg.py - writes a photo-like binary PPM (P6) of W x H pixels to stdout,
# for cjpeg to turn into a test JPEG of any shape (a 5640x3172 wallpaper, a
# portrait) without PIL: smooth gradients, a few bands and mild noise from
# SEED, made from 97 distinct rows so even 18 MP takes a second.
# usage: python3 tests/http/mkimg.py W H [SEED] | cjpeg -quality 90 > out.jpg
import random
import sys

w, h = int(sys.argv[1]), int(sys.argv[2])
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
rnd = random.Random(seed)
hue = [rnd.randrange(256) for _ in range(3)]
rows = []
for k in range(97):
    row = bytearray(w * 3)
    for x in range(w):
        t = x * 255 // max(1, w - 1)
        n = rnd.randrange(24)
        row[3 * x] = (hue[0] + t // 2 + n + k) & 255
        row[3 * x + 1] = (hue[1] + (x // 97) * 9 + n) & 255
        row[3 * x + 2] = (hue[2] + 255 - t + (k * 3)) & 255
    rows.append(bytes(row))
out = sys.stdout.buffer
out.write(b"P6\n%d %d\n255\n" % (w, h))
for y in range(h):
    out.write(rows[(y * 7 + y // 50) % 97])
