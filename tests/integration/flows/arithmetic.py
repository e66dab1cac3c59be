"""A small flow for the harness test: deployed to a process pool and run by a real worker."""

from prefect import flow, task


@task
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@flow(name="harness-sum", persist_result=True)
def total(numbers: list[int]) -> int:
    """Sum numbers through tasks, so the run has task runs to look at."""
    result = 0
    for number in numbers:
        result = add(result, number)
    return result


@flow(name="harness-fail")
def fail(reason: str) -> None:
    """Fail with ``reason``, to check that failures reach the API with their message."""
    raise ValueError(reason)
