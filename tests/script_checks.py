"""What the Python tests share: checks that are counted and reported rather than stopping at the
first, commands that must exit as expected, and the verdict at the end."""
import subprocess
import sys

failures = []


def check(condition, what):
    """Records `what` as failed unless `condition` holds; the test goes on."""
    if not condition:
        failures.append(what)
        print("FAILED: " + what)


def run(command, expect=0, timeout=1800):
    """Runs `command`; stops the test with its output unless it exits `expect`."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != expect:
        sys.exit(f"{' '.join(command)} exited {done.returncode}, expected {expect}\n{done.stdout}\n{done.stderr}")
    return done


def verdict():
    """The exit status: 1 when any check failed."""
    if failures:
        print(f"{len(failures)} checks failed")
        return 1
    print("all checks passed")
    return 0
