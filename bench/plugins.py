"""What the plugin API costs: discovery, parsing a plugin's step, the watermark itself.

Install the example plugin somewhere of its own, then run this with it on the path:

    pip install --no-deps --no-build-isolation --target /tmp/wm examples/fileproc-watermark
    PYTHONPATH=/tmp/wm .venv/bin/python bench/plugins.py
"""

import time
import timeit

started = time.perf_counter()
from fileproc_wsgi import plugins  # noqa: E402
from fileproc_wsgi.instructions import parse  # noqa: E402

imported = time.perf_counter()
found = plugins.operations()
discovered = time.perf_counter()
assert "watermark" in found, "put an install of examples/fileproc-watermark on PYTHONPATH"
print(f"first discovery: {(discovered - imported) * 1000:.1f} ms")

N = 20000
BUILT_IN = "photos/a.jpg | fit 800x | sharpen"
PLUGIN = "photos/a.jpg | fit 800x | watermark logo.png opacity=0.5"
for label, text in (("built-in steps", BUILT_IN), ("with watermark", PLUGIN)):
    seconds = timeit.timeit(lambda text=text: parse(text), number=N) / N
    summed = timeit.timeit(lambda text=text: parse(text).checksum("v1"), number=N) / N
    print(f"parse, {label}: {seconds * 1e6:.1f} us; parse + checksum: {summed * 1e6:.1f} us")

from PIL import Image  # noqa: E402

image = Image.new("RGB", (800, 600), (0, 0, 255))
step = parse("a.jpg | watermark logo.png opacity=0.5").steps[0]
seconds = timeit.timeit(lambda: step.apply(image), number=200) / 200
print(f"watermark on 800x600 RGB: {seconds * 1000:.2f} ms")
