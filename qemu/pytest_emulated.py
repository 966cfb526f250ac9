"""pytest plugin for runs under qemu-user (qemu/test-user.sh loads it with -p).

Emulation makes every example 10 to 30 times slower, so hypothesis's per-example
deadline and its too-slow health checks would fail tests that are fine. This
profile drops the deadline, silences those checks and, unless a test sets its
own count, runs fewer examples (HYPOTHESIS_MAX_EXAMPLES, default 25).
"""
import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    settings = None

if settings is not None:
    settings.register_profile(
        "emulated", deadline=None,
        max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "25")),
        suppress_health_check=list(HealthCheck), derandomize=False)
    settings.load_profile("emulated")


def pytest_report_header(config):
    import platform
    return "emulated run: %s, MYCELIUM_CORE=%s" % (
        platform.machine(), os.environ.get("MYCELIUM_CORE", "(default)"))
