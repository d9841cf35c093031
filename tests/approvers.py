"""An approver for tests: answers a fixed yes or no and keeps every request it was asked."""

from __future__ import annotations

from bastion.guard import ApprovalRequest

__all__ = ["RecordingApprover"]


class RecordingApprover:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[ApprovalRequest] = []

    def approve(self, request: ApprovalRequest) -> bool:
        self.asked.append(request)
        return self.answer
