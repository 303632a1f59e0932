"""Run the frame fuzzer of tests/protocol/test_fuzz.py long: ``python bench/fuzz.py [examples per test]``.

With the default 20,000 examples per test, well over 100,000 frames go through the decoders and
the hub; the last line prints how many. Any unhandled exception fails the run.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    examples = sys.argv[1] if len(sys.argv) > 1 else "20000"
    env = {**os.environ, "NUDGE_FUZZ_EXAMPLES": examples}
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", str(ROOT / "tests" / "protocol" / "test_fuzz.py")], env=env, cwd=ROOT))
