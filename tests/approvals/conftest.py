from tests.approvals.support import env, mailbox_port

__all__ = ["env", "mailbox_port"]
