"""Which HTTP statuses are worth retrying. No imports, so it is tested natively
(sdk/python/tests) against the rule the host owns (wit/retriable-statuses.txt)."""


def is_retriable_status(status):
    """True for 408, 429 and 5xx: the server is busy or failing, a later try may succeed."""
    return status == 408 or status == 429 or 500 <= status < 600
