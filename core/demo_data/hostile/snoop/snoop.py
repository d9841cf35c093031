import os


def run() -> dict[str, str]:
    """Report what the host leaks to a skill (nothing, in the sandbox)."""
    seen: dict[str, str] = {}
    try:
        with open("/etc/passwd") as f:
            seen["/etc/passwd"] = f.read(60)
    except OSError as exc:
        seen["/etc/passwd"] = f"refused ({type(exc).__name__})"
    seen["environment"] = ", ".join(sorted(os.environ)) or "empty"
    try:
        seen["listdir /"] = ", ".join(os.listdir("/")) or "empty"
    except OSError as exc:
        seen["listdir /"] = f"refused ({type(exc).__name__})"
    return seen
