import logging

from loraloop.logs import RedactQuery


def test_access_log_hides_query_strings() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/signup?invite=secret-code", "1.1", 200),
        None,
    )
    assert RedactQuery().filter(record)
    message = record.getMessage()
    assert "secret-code" not in message
    assert "/signup?[redacted]" in message


def test_paths_without_query_are_untouched() -> None:
    args = ("127.0.0.1:5000", "GET", "/healthz", "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "%s %s %s %s %d", args, None
    )
    RedactQuery().filter(record)
    assert record.args == args
