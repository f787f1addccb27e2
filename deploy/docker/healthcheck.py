"""Container health probe: exit 0 when GET /healthz (or the path given) answers 2xx within 2 s.

Used by the images' HEALTHCHECK; the slim images ship no curl or wget, so it is plain urllib.
"""

import os
import sys
import urllib.request

path = sys.argv[1] if len(sys.argv) > 1 else "/healthz"
url = f"http://127.0.0.1:{os.environ.get('APPRANK_PORT', '8000')}{path}"
try:
    with urllib.request.urlopen(url, timeout=2) as response:
        sys.exit(0 if 200 <= response.status < 300 else 1)
except OSError:
    sys.exit(1)
